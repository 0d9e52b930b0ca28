"""Prometheus recording and alerting rules, generated from the metric names (never typed twice).

Recording rule names follow ``level:metric:operation``: client rules aggregate by ``run_id, model``
(``run_model:...``), or also by ``language``; server rules by ``model`` (vLLM's ``model_name`` relabelled
to ``model`` so client and server series join ``on(model)``). The rate window is a parameter: 1m for a
15 s production scrape (deploy/prometheus/), a few seconds for the 1 s scrape of a short local run.

Goodput is the fraction of ok requests meeting every SLO. Histograms cannot say whether one request met
*all* SLOs, so the rule records the Bonferroni lower bound ok - sum of each SLO's violations (exact when
one SLO binds); the run summary (loadgen/summary.py) has the exact per-request figure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from loadgen import metric_names as client
from loadgen.profile import Slo
from observability.dashboards import promql
from observability.dashboards import server_metric_names as server

RUN_MODEL = ("run_id", "model")
RUN_MODEL_LANGUAGE = ("run_id", "model", "language")
QUANTILES = (0.5, 0.9, 0.99)
CLIENT_LATENCIES = (client.TTFT, client.ITL, client.TPOT, client.E2E)
SERVER_LATENCIES = (server.TTFT, server.ITL, server.TPOT, server.E2E)
# Client and server measure the same quantities; pairs compared on dashboards and in tests.
SIDE_BY_SIDE = {
    client.TTFT.name: server.TTFT,
    client.ITL.name: server.ITL,
    client.TPOT.name: server.TPOT,
    client.E2E.name: server.E2E,
}
GRADED_VERDICTS = "pass|fail|error|timeout"  # graded = everything but "ungraded" (loadgen/summary.py)
RECORDING_FILE = "m3bench-recording.rules.yml"
ALERTS_FILE = "m3bench-alerts.rules.yml"


@dataclass(frozen=True)
class RuleSettings:
    window: str = "1m"
    slo: Slo = field(default_factory=lambda: Slo(ttft_s=2.0, tpot_s=0.2))
    objective: float = 0.99  # SLO target fraction; the error budget is 1 - objective


def client_record(spec: client.MetricSpec, operation: str, level: tuple[str, ...] = RUN_MODEL) -> str:
    return f"{'_'.join(_level_name(label) for label in level)}:{spec.name}:{operation}"


def server_record(metric: server.ServerMetric, operation: str) -> str:
    return f"model:{metric.name.removesuffix('_total')}:{operation}"


def _level_name(label: str) -> str:
    return "run" if label == "run_id" else label


# Names of the rules that are not one-per-metric (dashboards and tests import these).
REQUESTS_RATE = client_record(client.REQUESTS, "rate")
REQUESTS_BY_STATUS_RATE = f"run_model_status:{client.REQUESTS.name}:rate"
ERROR_RATIO = f"run_model:{client.REQUESTS.name}_errors:ratio"
OUTPUT_TOKENS_RATE = client_record(client.OUTPUT_TOKENS, "rate")
PROMPT_TOKENS_RATE = client_record(client.PROMPT_TOKENS, "rate")
GOODPUT_RATE = "run_model:m3bench_goodput:rate"
GOODPUT_RATIO = "run_model:m3bench_goodput:ratio"
ACCURACY = "run_model:m3bench_accuracy:ratio"
ACCURACY_BY_LANGUAGE = "run_model_language:m3bench_accuracy:ratio"
GENERATOR_CPU = "run:m3bench_loadgen_cpu_seconds:rate"
SERVER_REQUESTS_RATE = server_record(server.REQUEST_SUCCESS, "rate")
SERVER_OUTPUT_TOKENS_RATE = server_record(server.GENERATION_TOKENS, "rate")
SERVER_PROMPT_TOKENS_RATE = server_record(server.PROMPT_TOKENS, "rate")
SERVER_REPLICAS = "model:ray_vllm_replicas:count"
SERVER_ERROR_RATIO = "model:ray_serve_errors:ratio"
OUTPUT_TOKENS_PER_REPLICA = "run_model:m3bench_output_tokens_per_replica:rate"
TTFT_OVERHEAD = "run_model:m3bench_ttft_minus_server_seconds:mean"


def _client_quantiles(
    spec: client.MetricSpec, level: tuple[str, ...], window: str, quantiles: tuple[float, ...] = QUANTILES
) -> list[dict[str, str]]:
    """One rule per quantile of a client histogram, aggregated to ``level``."""
    bucket = f"{spec.name}_bucket"
    return [
        {
            "record": client_record(spec, promql.quantile_suffix(q), level),
            "expr": promql.histogram_quantile(q, bucket, level, window),
        }
        for q in quantiles
    ]


def _mean(series: str, by: tuple[str, ...], window: str) -> str:
    count = promql.rate_sum(f"{series}_count", by, window)
    return f"{promql.rate_sum(f'{series}_sum', by, window)} / ({count} > 0)"


def client_rules(settings: RuleSettings) -> list[dict[str, str]]:
    w = settings.window
    rules: list[dict[str, str]] = []
    for spec in CLIENT_LATENCIES:
        rules += _client_quantiles(spec, RUN_MODEL, w)
        rules.append({"record": client_record(spec, "mean"), "expr": _mean(spec.name, RUN_MODEL, w)})
    # p50/p99 at other levels: accuracy vs latency per model *and* language; the generator's own lags per run
    for specs, level in (
        ((client.TTFT, client.E2E), RUN_MODEL_LANGUAGE),
        ((client.SCHEDULE_LAG, client.LOOP_LAG), ("run_id",)),
    ):
        for spec in specs:
            rules += _client_quantiles(spec, level, w, (0.5, 0.99))
    requests = f"{client.REQUESTS.name}_total"
    all_requests = promql.rate_sum(requests, RUN_MODEL, w)
    failed = promql.rate_sum(requests, RUN_MODEL, w, '{status!="ok"}')
    ok = promql.rate_sum(requests, RUN_MODEL, w, '{status="ok"}')
    rules += [
        {"record": REQUESTS_RATE, "expr": all_requests},
        {"record": REQUESTS_BY_STATUS_RATE, "expr": promql.rate_sum(requests, (*RUN_MODEL, "status"), w)},
        # "or 0 * all": a clean run has no error series, and its error ratio is 0, not absent
        {"record": ERROR_RATIO, "expr": f"({failed} or 0 * {all_requests}) / ({all_requests} > 0)"},
        {
            "record": OUTPUT_TOKENS_RATE,
            "expr": promql.rate_sum(f"{client.OUTPUT_TOKENS.name}_total", RUN_MODEL, w),
        },
        {
            "record": PROMPT_TOKENS_RATE,
            "expr": promql.rate_sum(f"{client.PROMPT_TOKENS.name}_total", RUN_MODEL, w),
        },
        {"record": GOODPUT_RATE, "expr": _goodput(settings, ok)},
        {"record": GOODPUT_RATIO, "expr": f"{GOODPUT_RATE} / ({ok} > 0)"},
        {"record": ACCURACY, "expr": _accuracy(RUN_MODEL)},
        {"record": ACCURACY_BY_LANGUAGE, "expr": _accuracy(RUN_MODEL_LANGUAGE)},
        {
            "record": GENERATOR_CPU,
            "expr": promql.rate_sum(
                "process_cpu_seconds_total", ("run_id",), w, f'{{job="{client.JOB_NAME}"}}'
            ),
        },
    ]
    return rules


def _violations(spec: client.MetricSpec, threshold: float, window: str) -> str:
    bound = promql.le_value(promql.bucket_at_or_below(spec.buckets, threshold))
    total = promql.rate_sum(f"{spec.name}_count", RUN_MODEL, window)
    within = promql.rate_sum(f"{spec.name}_bucket", RUN_MODEL, window, f'{{le="{bound}"}}')
    return f"({total} - {within})"


def _goodput(settings: RuleSettings, ok: str) -> str:
    slo = settings.slo
    parts = [
        _violations(spec, threshold, settings.window)
        for spec, threshold in ((client.TTFT, slo.ttft_s), (client.TPOT, slo.tpot_s), (client.E2E, slo.e2e_s))
        if threshold is not None
    ]
    if not parts:
        return ok
    # a model with no TPOT samples yet (one-token answers) has no violations series: count it as 0
    violations = " + ".join(f"({part} or 0 * {ok})" for part in parts)
    return f"clamp_min({ok} - ({violations}), 0)"


def _accuracy(by: tuple[str, ...]) -> str:
    """pass / graded, cumulative over the run (counters start at 0 with each run's processes)."""
    labels = ", ".join(by)
    graded = f'sum by ({labels}) ({client.GRADED.name}_total{{verdict=~"{GRADED_VERDICTS}"}})'
    passed = f'sum by ({labels}) ({client.GRADED.name}_total{{verdict="pass"}})'
    return f"({passed} or 0 * {graded}) / ({graded} > 0)"


def _relabel(expr: str, source: str, regex: str) -> str:
    """Copy the model id from ``source`` (vLLM's model_name, or a Serve deployment name) into ``model``."""
    return f'label_replace({expr}, "model", "$1", "{source}", "{regex}")'


def _model_from_deployment(expr: str) -> str:
    return _relabel(expr, "deployment", f"{server.DEPLOYMENT_PREFIX}(.*)")


def _by_model(series: str, window: str | None, where: str = "", extra: tuple[str, ...] = ()) -> str:
    """vLLM series summed by model (relabelled from model_name), optionally rated."""
    inner = f"rate({series}{where}[{window}])" if window else f"{series}{where}"
    relabelled = _relabel(inner, server.MODEL_LABEL, "(.*)")
    return f"sum by ({', '.join(('model', *extra))}) ({relabelled})"


def server_rules(settings: RuleSettings) -> list[dict[str, str]]:
    w = settings.window
    rules: list[dict[str, str]] = []
    for metric in SERVER_LATENCIES:
        for q in QUANTILES:
            buckets = _by_model(metric.bucket(), w, extra=("le",))
            rules.append(
                {
                    "record": server_record(metric, promql.quantile_suffix(q)),
                    "expr": f"histogram_quantile({q:g}, {buckets})",
                }
            )
        mean = f"{_by_model(metric.name + '_sum', w)} / ({_by_model(metric.name + '_count', w)} > 0)"
        rules.append({"record": server_record(metric, "mean"), "expr": mean})
    deployments = f'{{deployment=~"{server.DEPLOYMENT_PREFIX}.*"}}'
    served = _model_from_deployment(f"rate({server.SERVE_REQUESTS.name}{deployments}[{w}])")
    failed = _model_from_deployment(f"rate({server.SERVE_ERRORS.name}{deployments}[{w}])")
    replicas = _relabel(server.KV_CACHE_USAGE.name, server.MODEL_LABEL, "(.*)")
    rules += [
        {"record": SERVER_REQUESTS_RATE, "expr": _by_model(server.REQUEST_SUCCESS.name, w)},
        {"record": SERVER_OUTPUT_TOKENS_RATE, "expr": _by_model(server.GENERATION_TOKENS.name, w)},
        {"record": SERVER_PROMPT_TOKENS_RATE, "expr": _by_model(server.PROMPT_TOKENS.name, w)},
        {
            "record": SERVER_REPLICAS,
            "expr": f"count by (model) ({replicas})",
        },
        {
            "record": SERVER_ERROR_RATIO,
            "expr": f"(sum by (model) ({failed}) or 0 * sum by (model) ({served}))"
            f" / (sum by (model) ({served}) > 0)",
        },
    ]
    return rules


def joint_rules(settings: RuleSettings) -> list[dict[str, str]]:
    """Client series joined to server series on ``model``."""
    return [
        {
            "record": OUTPUT_TOKENS_PER_REPLICA,
            "expr": f"{OUTPUT_TOKENS_RATE} / on(model) group_left() {SERVER_REPLICAS}",
        },
        {
            "record": TTFT_OVERHEAD,
            "expr": f"{client_record(client.TTFT, 'mean')}"
            f" - on(model) group_left() {server_record(server.TTFT, 'mean')}",
        },
    ]


def alert_rules(settings: RuleSettings) -> list[dict[str, Any]]:
    """Example SLO burn-rate alerts (multiwindow, after the SRE workbook) and a generator-health alert."""
    budget = 1 - settings.objective
    requests = f"{client.REQUESTS.name}_total"

    def error_ratio(window: str) -> str:
        failed = promql.rate_sum(requests, ("model",), window, '{status!="ok"}')
        return f"({failed} / {promql.rate_sum(requests, ('model',), window)})"

    alerts: list[dict[str, Any]] = [
        _alert(
            "M3benchErrorBudgetFastBurn",
            f"{error_ratio('5m')} > {14.4 * budget:g} and {error_ratio('1h')} > {14.4 * budget:g}",
            "2m",
            "page",
            f"{{{{ $labels.model }}}} burns its error budget ({budget:g} of requests) 14.4x too fast",
        ),
        _alert(
            "M3benchErrorBudgetSlowBurn",
            f"{error_ratio('30m')} > {6 * budget:g} and {error_ratio('6h')} > {6 * budget:g}",
            "15m",
            "ticket",
            f"{{{{ $labels.model }}}} burns its error budget ({budget:g} of requests) 6x too fast",
        ),
    ]
    if settings.slo.ttft_s is not None:
        bound = promql.bucket_at_or_below(client.TTFT.buckets, settings.slo.ttft_s)

        def slow_ratio(window: str) -> str:
            total = promql.rate_sum(f"{client.TTFT.name}_count", ("model",), window)
            within = promql.rate_sum(
                f"{client.TTFT.name}_bucket", ("model",), window, f'{{le="{promql.le_value(bound)}"}}'
            )
            return f"(1 - {within} / {total})"

        alerts.append(
            _alert(
                "M3benchTTFTSloFastBurn",
                f"{slow_ratio('5m')} > {14.4 * budget:g} and {slow_ratio('1h')} > {14.4 * budget:g}",
                "2m",
                "page",
                f"{{{{ $labels.model }}}}: over {14.4 * budget:.1%} of requests miss TTFT <= {bound:g} s",
            )
        )
    loop_lag_p99 = client_record(client.LOOP_LAG, "p99", ("run_id",))
    alerts.append(
        _alert(
            "M3benchGeneratorSaturated",
            f"{loop_lag_p99} > 0.02",
            "1m",
            "ticket",
            "generator of run {{ $labels.run_id }} is late (p99 loop lag > 20 ms): its latencies are suspect",
        )
    )
    return alerts


def _alert(name: str, expr: str, for_: str, severity: str, summary: str) -> dict[str, Any]:
    return {
        "alert": name,
        "expr": expr,
        "for": for_,
        "labels": {"severity": severity},
        "annotations": {"summary": summary},
    }


def recording_groups(settings: RuleSettings) -> dict[str, Any]:
    return {
        "groups": [
            {"name": "m3bench-client", "rules": client_rules(settings)},
            {"name": "m3bench-server", "rules": server_rules(settings)},
            {"name": "m3bench-client-vs-server", "rules": joint_rules(settings)},
        ]
    }


def alert_groups(settings: RuleSettings) -> dict[str, Any]:
    return {"groups": [{"name": "m3bench-slo-alerts", "rules": alert_rules(settings)}]}


def recorded_names(settings: RuleSettings | None = None) -> set[str]:
    groups = recording_groups(settings or RuleSettings())["groups"]
    return {rule["record"] for group in groups for rule in group["rules"]}


def render(document: dict[str, Any]) -> str:
    header = (
        "# Generated by `m3bench dashboards rules` from observability/rules.py: "
        "edit the code, not this file.\n"
    )
    return header + yaml.safe_dump(document, sort_keys=False, width=1000)


def write_rule_files(directory: Path, settings: RuleSettings | None = None) -> list[Path]:
    settings = settings or RuleSettings()
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, document in (
        (RECORDING_FILE, recording_groups(settings)),
        (ALERTS_FILE, alert_groups(settings)),
    ):
        path = directory / name
        path.write_text(render(document), encoding="utf-8")
        written.append(path)
    return written
