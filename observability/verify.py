"""Prove dashboards and rules against a real Prometheus: every query returns data, and the data is sane.

Grafana is not needed: ``panel_queries`` lists every target of every panel in the dashboard JSON,
``expand`` substitutes the template variables as Grafana would, and each query runs through the HTTP API
over a run's time range (range queries; instant ones at the end, with ``$__range`` = the run's length).
Sanity checks hold whatever the load: p99 >= p90 >= p50 (``quantile_order``), ratios in [0, 1], no
negative rates; ``observability.dashboards.compare`` checks the client's TTFT against the engine's.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from loadgen import metric_names as client
from observability import rules
from observability.dashboards import promql
from observability.prometheus import JOB_HAPROXY

RATIO_UNITS = {"percentunit"}
EPSILON = 1e-9
# Panels of a part a stack may not run (metric-name prefix -> the Prometheus job that scrapes it): such a
# panel without data is "not applicable" only when that job had no target in the window (nothing ran to
# measure); when the job was scraped, no data is a failure like any other.
OPTIONAL_PARTS = {"haproxy_": JOB_HAPROXY}


class Client(Protocol):
    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]: ...
    def query_range(self, promql: str, start: float, end: float, step: float) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    ref: str
    expr: str
    instant: bool
    unit: str

    @property
    def where(self) -> str:
        return f"{self.dashboard} / {self.panel} / {self.ref}"


@dataclass(frozen=True)
class Window:
    """A run's time range, the range-query step, and the template variables' values."""

    start: float
    end: float
    variables: Mapping[str, str] = field(default_factory=dict)
    step: float = 2.0
    scrape_interval_s: float = 1.0

    @property
    def range(self) -> str:
        return f"{math.ceil(self.end - self.start)}s"

    def values(self) -> dict[str, str]:
        """Grafana's built-in variables for this range (``$__rate_interval`` as Grafana computes it:
        max(interval + scrape interval, 4 x scrape interval)), then the template variables."""
        rate_interval = max(self.step + self.scrape_interval_s, 4 * self.scrape_interval_s)
        return {
            "__range": self.range,
            "__interval": f"{self.step:g}s",
            "__rate_interval": f"{math.ceil(rate_interval)}s",
            **self.variables,
        }


def run_span(prometheus: Client, window: Window, run_regex: str, margin_s: float = 2.0) -> Window:
    """The part of ``window`` in which the runs ``run_regex`` matches have client series."""
    step = max(1.0, (window.end - window.start) / 5000)
    result = prometheus.query_range(
        f'count({client.REQUESTS.name}_total{{run_id=~"{run_regex}"}})', window.start, window.end, step
    )
    times = [float(t) for series in result for t, _ in series["values"]]
    if not times:
        raise ValueError(
            f"no client series of run {run_regex!r} between {window.start:.0f} and {window.end:.0f}"
        )
    return replace(
        window, start=max(window.start, min(times) - margin_s), end=min(window.end, max(times) + margin_s)
    )


@dataclass
class Outcome:
    name: str
    expr: str
    series: int
    values: list[float]
    problem: str | None = None
    not_applicable: str | None = None  # why an empty optional panel is no failure (OPTIONAL_PARTS)


def panel_queries(documents: Mapping[str, dict[str, Any]]) -> list[PanelQuery]:
    found = []
    for uid, document in documents.items():
        for panel in _panels(document):
            unit = str(panel.get("fieldConfig", {}).get("defaults", {}).get("unit", ""))
            for target in panel.get("targets", []):
                found.append(
                    PanelQuery(
                        uid,
                        panel["title"],
                        target["refId"],
                        target["expr"],
                        bool(target.get("instant")),
                        unit,
                    )
                )
    return found


def variable_queries(documents: Mapping[str, dict[str, Any]]) -> dict[str, str]:
    """name -> ``label_values(...)`` query, the same in every dashboard (else ValueError)."""
    queries: dict[str, str] = {}
    for document in documents.values():
        for variable in document.get("templating", {}).get("list", []):
            if variable.get("type") != "query":
                continue
            if queries.setdefault(variable["name"], variable["query"]) != variable["query"]:
                raise ValueError(f"variable {variable['name']} differs between dashboards")
    return queries


def _panels(document: dict[str, Any]) -> Iterable[dict[str, Any]]:
    for panel in document.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def _finite(result: list[dict[str, Any]]) -> list[float]:
    values = []
    for series in result:
        samples = series.get("values") or [series.get("value")]
        values += [float(v) for _, v in samples if math.isfinite(float(v))]
    return values


def run_query(prometheus: Client, expr: str, instant: bool, window: Window) -> list[dict[str, Any]]:
    """As Grafana runs a target: instant ones at the end of the range, the others over it."""
    if instant:
        return prometheus.query(expr, at=window.end)
    return prometheus.query_range(expr, window.start, window.end, window.step)


def check_panels(
    prometheus: Client, documents: Mapping[str, dict[str, Any]], window: Window
) -> list[Outcome]:
    """Run every panel query over the window; an outcome's ``problem`` says what is wrong, if anything."""
    values = window.values()
    outcomes = []
    for query in panel_queries(documents):
        expr = promql.expand(query.expr, values)
        result = run_query(prometheus, expr, query.instant, window)
        numbers = _finite(result)
        outcome = Outcome(query.where, expr, len(result), numbers)
        if not numbers and (job := _absent_part(prometheus, expr, window)):
            outcome.not_applicable = f"no {job} target was scraped in the window (the stack runs no {job})"
        elif not numbers:
            outcome.problem = "no data"
        elif min(numbers) < -EPSILON:
            outcome.problem = f"negative value {min(numbers)}"
        elif query.unit in RATIO_UNITS and max(numbers) > 1 + EPSILON:
            outcome.problem = f"ratio above 1: {max(numbers)}"
        outcomes.append(outcome)
    return outcomes


def _absent_part(prometheus: Client, expr: str, window: Window) -> str | None:
    """The job of the optional part ``expr`` reads, when that job had no target in the window."""
    for prefix, job in OPTIONAL_PARTS.items():
        if prefix in expr and not prometheus.query_range(
            f'up{{job="{job}"}}', window.start, window.end, window.step
        ):
            return job
    return None


def check_rules(prometheus: Client, window: Window) -> list[Outcome]:
    """Every recording rule has data in the window; ratios stay within [0, 1]."""
    outcomes = []
    for name in sorted(rules.recorded_names()):
        numbers = _finite(prometheus.query_range(name, window.start, window.end, window.step))
        outcome = Outcome(name, name, len(numbers), numbers)
        if not numbers:
            outcome.problem = "no data"
        elif name.endswith(":ratio") and not all(-EPSILON <= v <= 1 + EPSILON for v in numbers):
            outcome.problem = f"ratio outside [0, 1]: {min(numbers)}..{max(numbers)}"
        outcomes.append(outcome)
    return outcomes


def _by_labels(result: list[dict[str, Any]]) -> dict[tuple[tuple[str, str], ...], dict[float, float]]:
    table = {}
    for series in result:
        labels = tuple(sorted((k, v) for k, v in series["metric"].items() if k != "__name__"))
        table[labels] = {float(t): float(v) for t, v in series["values"] if math.isfinite(float(v))}
    return table


def quantile_order(prometheus: Client, window: Window) -> list[str]:
    """p50 <= p90 <= p99 at every instant, per series, for every latency rule on both sides."""
    problems = []
    metrics: list[tuple[str, Any]] = [
        (s.name, lambda op, s=s: rules.client_record(s, op)) for s in rules.CLIENT_LATENCIES
    ]
    metrics += [(m.name, lambda op, m=m: rules.server_record(m, op)) for m in rules.SERVER_LATENCIES]
    for name, record in metrics:
        tables = [
            _by_labels(
                prometheus.query_range(
                    record(promql.quantile_suffix(q)), window.start, window.end, window.step
                )
            )
            for q in rules.QUANTILES
        ]
        for labels in tables[0]:
            for low_table, high_table in itertools.pairwise(tables):
                lower, higher = low_table.get(labels, {}), high_table.get(labels, {})
                for t, value in lower.items():
                    if t in higher and higher[t] < value - EPSILON:
                        problems.append(
                            f"{name} {dict(labels)} at {t}: higher quantile {higher[t]} < {value}"
                        )
    return problems


def failures(outcomes: Iterable[Outcome]) -> list[str]:
    return [f"{o.name}: {o.problem} [{o.expr}]" for o in outcomes if o.problem]
