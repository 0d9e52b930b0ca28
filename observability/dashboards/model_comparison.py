"""Model comparison dashboard: graded accuracy against tail latency per model and language, and the token
throughput each replica delivers (what capacity planning divides by)."""

from __future__ import annotations

from grafana_foundation_sdk.builders import bargauge, table, xychart
from grafana_foundation_sdk.builders import common as sdk_common
from grafana_foundation_sdk.builders import dashboard as sdk
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.xychart import SeriesMapping

from loadgen import metric_names as client
from observability import rules
from observability.dashboards import server_metric_names as server
from observability.dashboards.common import (
    PER_REPLICA_LEGEND,
    RATE_INTERVAL,
    Q,
    client_series,
    client_vs_server,
    new_dashboard,
    run_model,
    run_model_language,
    server_series,
    timeseries,
    with_targets,
)
from observability.dashboards.promql import rate_sum, server_filter

UID = "m3bench-model-comparison"
BY_LANGUAGE = "run_id, model, language"
REQUESTS = f"{client.REQUESTS.name}_total"
MERGE = model.DataTransformerConfig(id_val="merge", options={})


def _over_range_quantile(q: float, spec: client.MetricSpec) -> str:
    """Quantile over each run up to the end of the range. Each generator process's counters start at 0
    with its run, so the last value is the run's total; ``increase()`` would drop what the first scrape
    already found."""
    return (
        f"histogram_quantile({q:g}, sum by ({BY_LANGUAGE}, le) "
        f"(last_over_time({spec.name}_bucket{run_model_language()}[$__range])))"
    )


def comparison_queries() -> list[Q]:
    """A: accuracy, B: p99 E2E, C: p99 TTFT, D: requests; one row per run, model and language."""
    return [
        # max by: the same labels as B-D and no __name__ (last_over_time keeps it), so "merge" joins rows
        Q(
            f"max by ({BY_LANGUAGE}) "
            f"(last_over_time({rules.ACCURACY_BY_LANGUAGE}{run_model_language()}[$__range]))",
            instant=True,
        ),
        Q(_over_range_quantile(0.99, client.E2E), instant=True),
        Q(_over_range_quantile(0.99, client.TTFT), instant=True),
        Q(
            f"sum by ({BY_LANGUAGE}) (last_over_time({REQUESTS}{run_model_language()}[$__range]))",
            instant=True,
        ),
    ]


QUANTIZATION_FROM_MODEL = ".*-(bf16|awq|gptq)(-g[0-9]+)?$"


def accuracy_by_quantization() -> Q:
    """pass / graded per quantization scheme (and group size), read off the model ids' suffix; a model
    whose id names none (a real checkpoint) falls in an empty group."""

    def by_scheme(verdicts: str) -> str:
        series = f'{client.GRADED.name}_total{{run_id=~"$run",model=~"$model",{verdicts}}}'
        counts = f"last_over_time({series}[$__range])"
        relabelled = f'label_replace({counts}, "quantization", "$1$2", "model", "{QUANTIZATION_FROM_MODEL}")'
        return f"sum by (quantization) ({relabelled})"

    graded = by_scheme(f'verdict=~"{rules.GRADED_VERDICTS}"')
    passed = by_scheme('verdict="pass"')
    return Q(f"({passed} or 0 * {graded}) / ({graded} > 0)", "{{quantization}}", instant=True)


def _accuracy_bars(title: str, description: str) -> bargauge.Panel:
    return (
        bargauge.Panel()
        .title(title)
        .description(description)
        .unit("percentunit")
        .min(0)
        .max(1)
        .span(8)
        .height(8)
        .reduce_options(sdk_common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )


def build() -> sdk.Dashboard:
    board = new_dashboard(
        UID,
        "m3bench / Model comparison",
        "Accuracy (pass / graded) against p99 latency per model and language; tokens/s per replica.",
    )
    board = board.with_row(sdk.Row("Accuracy vs latency"))
    scatter = (
        xychart.Panel()
        .title("Accuracy vs p99 E2E latency (per model and language)")
        .description(
            "One point per model and language, each run up to the end of the range: x = p99 E2E latency (s), "
            "y = accuracy = pass / graded (graded = pass + fail + error + timeout)."
        )
        .span(12)
        .height(10)
        .series_mapping(SeriesMapping.MANUAL)
        .series([xychart.ScatterSeriesConfig().x("Value #B").y("Value #A").name("model / language")])
        .legend(sdk_common.VizLegendOptions().show_legend(True))
        .with_transformation(MERGE)
    )
    board = board.with_panel(with_targets(scatter, comparison_queries()[:2]))
    grid = (
        table.Panel()
        .title("Per model and language")
        .description(
            "A: accuracy, B: p99 E2E (s), C: p99 TTFT (s), D: requests; each run up to the range's end."
        )
        .show_header(True)
        .span(12)
        .height(10)
        .with_transformation(MERGE)
    )
    board = board.with_panel(with_targets(grid, comparison_queries()))
    bars = _accuracy_bars(
        "Accuracy per model", "pass / graded over all languages, at the end of the selected range."
    )
    board = board.with_panel(
        with_targets(
            bars,
            [
                Q(
                    f"max by (run_id, model) (last_over_time({rules.ACCURACY}{run_model()}[$__range]))",
                    "{{model}}",
                    instant=True,
                )
            ],
        )
    )
    quantized = _accuracy_bars(
        "Accuracy per quantization",
        "pass / graded over the selected models, grouped by the quantization their name ends in "
        "(-bf16, -awq, -gptq, with -g<N> for a group size other than 128), at the end of the range.",
    )
    board = board.with_panel(with_targets(quantized, [accuracy_by_quantization()]))
    board = board.with_panel(
        timeseries(
            "p99 latency per model: client vs server",
            "p99 TTFT and E2E as the generator saw them and as the engine recorded them.",
            "s",
            [
                query
                for name, spec, metric in (
                    ("TTFT", client.TTFT, server.TTFT),
                    ("E2E", client.E2E, server.E2E),
                )
                for query in client_vs_server(client_series(spec, "p99"), server_series(metric, "p99"), name)
            ],
            width=16,
        )
    )
    board = board.with_row(sdk.Row("Throughput per replica"))
    board = board.with_panel(
        timeseries(
            "Output tokens/s per replica",
            "Server: tokens each vLLM engine generated (one line per replica). Client: usage tokens the "
            "generator received / number of replicas of the model.",
            "short",
            [
                Q(
                    rate_sum(
                        server.GENERATION_TOKENS.name,
                        (server.MODEL_LABEL, server.REPLICA_LABEL),
                        RATE_INTERVAL,
                        server_filter(),
                    ),
                    PER_REPLICA_LEGEND,
                ),
                Q(f"{rules.OUTPUT_TOKENS_PER_REPLICA}{run_model()}", "client / replica {{model}}"),
            ],
            width=12,
        )
    )
    return board.with_panel(
        timeseries(
            "Goodput fraction per model",
            "ok requests meeting every SLO / ok requests (lower bound from histograms).",
            "percentunit",
            [Q(f"{rules.GOODPUT_RATIO}{run_model()}", "{{model}}")],
            width=12,
        )
    )
