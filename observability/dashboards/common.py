"""Shared pieces of the three dashboards: datasource, template variables, panel and query helpers.

Every panel reads the Prometheus datasource chosen by ``$datasource``; ``$run``, ``$model`` and
``$language`` filter client series (and ``$model`` the server series, through vLLM's ``model_name``).
Instant panels aggregate over ``$__range``, so they describe whatever run the time picker selects, also
after the run ended and its series went stale.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from grafana_foundation_sdk.builders import common as sdk_common
from grafana_foundation_sdk.builders import dashboard as sdk
from grafana_foundation_sdk.builders import prometheus
from grafana_foundation_sdk.builders import timeseries as ts
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.common import (
    LegendDisplayMode,
    LegendPlacement,
    SortOrder,
    TooltipDisplayMode,
    VisibilityMode,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from loadgen import metric_names as client
from observability import rules
from observability.dashboards import server_metric_names as server
from observability.dashboards.promql import rate_sum

DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
TAGS = ["m3bench", "generated"]
ALL = ".*"
RATE_INTERVAL = "$__rate_interval"
# Legends of server series: one line per model, or per model and engine replica
MODEL_LEGEND = f"{{{{{server.MODEL_LABEL}}}}}"
PER_REPLICA_LEGEND = f"{MODEL_LEGEND} {{{{{server.REPLICA_LABEL}}}}}"


@dataclass(frozen=True)
class Q:
    """One panel query: PromQL, legend, and whether Grafana evaluates it once (instant, as a table)."""

    expr: str
    legend: str = ""
    instant: bool = False


def _target(query: Q, ref: str) -> prometheus.Dataquery:
    target = prometheus.Dataquery().expr(query.expr).ref_id(ref).datasource(DATASOURCE)
    if query.legend:
        target = target.legend_format(query.legend)
    return target.instant().format(PromQueryFormat.TABLE) if query.instant else target.range()


def summed_by(label: str, series: str, what: str = "", *, rate: bool = False) -> Q:
    """``series`` (its per-second rate when ``rate``) summed per value of ``label``: one line per value,
    its legend ``what`` and the value."""
    expr = rate_sum(series, (label,), RATE_INTERVAL) if rate else f"sum by ({label}) ({series})"
    return Q(expr, f"{what} {{{{{label}}}}}".lstrip())


def client_vs_server(client_expr: str, server_expr: str, name: str = "") -> list[Q]:
    """One quantity as the generator and as the engines measured it, side by side: a line each per model."""
    what = f" {name}" if name else ""
    return [Q(client_expr, f"client{what} {{{{model}}}}"), Q(server_expr, f"server{what} {{{{model}}}}")]


def refs(count: int) -> list[str]:
    return [chr(ord("A") + i) for i in range(count)]


def with_targets(panel: Any, queries: Sequence[Q]) -> Any:
    for ref, query in zip(refs(len(queries)), queries, strict=True):
        panel = panel.with_target(_target(query, ref))
    return panel.datasource(DATASOURCE)


def timeseries(
    title: str, description: str, unit: str, queries: Sequence[Q], *, width: int = 8, height: int = 8
) -> ts.Panel:
    """A time-series panel, by default a third of Grafana's 24-column grid wide (three to a line)."""
    panel = (
        ts.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .span(width)
        .height(height)
        .line_width(2)
        .fill_opacity(5)
        .show_points(VisibilityMode.NEVER)
        .legend(
            sdk_common.VizLegendOptions()
            .display_mode(LegendDisplayMode.LIST)
            .placement(LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        .tooltip(sdk_common.VizTooltipOptions().mode(TooltipDisplayMode.MULTI).sort(SortOrder.DESCENDING))
    )
    return with_targets(panel, queries)  # type: ignore[no-any-return]


def variables() -> list[Any]:
    """$datasource, $run, $model, $language: each later variable narrows by the earlier ones."""
    requests = f"{client.REQUESTS.name}_total"
    return [
        sdk.DatasourceVariable("datasource").label("Prometheus").type("prometheus"),
        _query_variable("run", "Run", f"label_values({requests}, run_id)", multi=False),
        _query_variable("model", "Model", f'label_values({requests}{{run_id=~"$run"}}, model)'),
        _query_variable(
            "language", "Language", f'label_values({requests}{{run_id=~"$run",model=~"$model"}}, language)'
        ),
    ]


def _query_variable(name: str, label: str, query: str, multi: bool = True) -> sdk.QueryVariable:
    return (
        sdk.QueryVariable(name)
        .label(label)
        .query(query)
        .datasource(DATASOURCE)
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .multi(multi)
        .include_all(True)
        .all_value(ALL)
    )


def with_row(board: sdk.Dashboard, title: str, panels: Sequence[Any]) -> sdk.Dashboard:
    """A row and the panels under it, in layout order."""
    board = board.with_row(sdk.Row(title))
    for panel in panels:
        board = board.with_panel(panel)
    return board


def new_dashboard(uid: str, title: str, description: str) -> sdk.Dashboard:
    board = (
        sdk.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .editable()
        .refresh("5s")
        .time("now-15m", "now")
        .timezone("browser")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
    )
    for variable in variables():
        board = board.with_variable(variable)
    return board


def number_panels(document: dict[str, Any]) -> dict[str, Any]:
    """Unique panel ids in layout order (Grafana keys panel state and links by id)."""
    next_id = 1
    for panel in document.get("panels", []):
        panel["id"] = next_id
        next_id += 1
        for inner in panel.get("panels", []):
            inner["id"] = next_id
            next_id += 1
    return document


def encode(board: sdk.Dashboard) -> dict[str, Any]:
    document: dict[str, Any] = model_to_json(board.build())
    return number_panels(document)


def model_to_json(resource: Any) -> dict[str, Any]:
    encoded: dict[str, Any] = json.loads(JSONEncoder(sort_keys=True).encode(resource))
    return encoded


def run_model(extra: str = "") -> str:
    """Matchers for recording-rule series aggregated by run and model (plus ``extra`` matchers)."""
    base = 'run_id=~"$run",model=~"$model"'
    return "{" + base + (f",{extra}" if extra else "") + "}"


def run_model_language() -> str:
    return '{run_id=~"$run",model=~"$model",language=~"$language"}'


def by_model() -> str:
    return '{model=~"$model"}'


def run_only() -> str:
    return '{run_id=~"$run"}'


def client_series(spec: client.MetricSpec, operation: str, level: tuple[str, ...] = rules.RUN_MODEL) -> str:
    """A client recording-rule series (``p99``, ``mean``, ...) at ``level``, filtered by the variables of
    that level's labels (run, model)."""
    where = {rules.RUN_MODEL: run_model(), ("run_id",): run_only()}[level]
    return f"{rules.client_record(spec, operation, level)}{where}"


def server_series(metric: server.ServerMetric, operation: str) -> str:
    """A server recording-rule series per model (``p50``, ``p99``, ...), filtered by ``$model``."""
    return f"{rules.server_record(metric, operation)}{by_model()}"
