"""Load test dashboard: what the generator offered and achieved, client-side latency, throughput, errors,
and the generator's own health (schedule lag, event-loop lag, CPU): a run whose generator was the
bottleneck shows it here."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as sdk
from grafana_foundation_sdk.builders import timeseries as ts

from loadgen import metric_names as client
from observability import rules
from observability.dashboards import server_metric_names as server
from observability.dashboards.common import (
    RATE_INTERVAL,
    Q,
    by_model,
    client_series,
    client_vs_server,
    new_dashboard,
    run_model,
    run_only,
    server_series,
    summed_by,
    timeseries,
    with_row,
)
from observability.dashboards.promql import LOADGEN_JOB

UID = "m3bench-load-test"
PER_RUN = ("run_id",)
OFFERED = f"sum({client.TARGET_RATE.name}{run_only()})"


def _p50_p99(spec: client.MetricSpec, title: str, what: str) -> ts.Panel:
    return timeseries(
        f"{title} p50 / p99 per model",
        f"Client-side {what}: {spec.help} Quantiles from histogram buckets over the rule window.",
        "s",
        [Q(client_series(spec, q), f"{q} {{{{model}}}}") for q in ("p50", "p99")],
    )


def build() -> sdk.Dashboard:
    board = new_dashboard(
        UID,
        "m3bench / Load test",
        "Offered vs achieved load, client-side latency per model, throughput, errors and generator health.",
    )
    board = with_row(board, "Offered load", _offered_load())
    board = with_row(
        board,
        "Latency (client side)",
        [
            _p50_p99(client.TTFT, "TTFT", "time to first token"),
            _p50_p99(client.ITL, "ITL", "inter-token latency"),
            _p50_p99(client.E2E, "E2E", "end-to-end latency"),
            _p50_p99(client.TPOT, "TPOT", "time per output token"),
            timeseries(
                "TTFT p50: client vs server",
                "The same requests timed twice: by the generator (send -> first token arrival) and by the "
                "vLLM engine (arrival -> first token out). The gap is network, HTTP proxy, routing and "
                "queueing outside the engine.",
                "s",
                client_vs_server(client_series(client.TTFT, "p50"), server_series(server.TTFT, "p50")),
                width=16,
            ),
        ],
    )
    return with_row(board, "Throughput and errors", _throughput_and_errors())


def _offered_load() -> list[ts.Panel]:
    return [
        timeseries(
            "Target vs achieved request rate",
            "Target: sum over generator processes of m3bench_target_rate (open loop). Achieved: requests "
            "finished per second (any status), per model.",
            "reqps",
            [
                Q(OFFERED, "target"),
                summed_by("model", f"{rules.REQUESTS_RATE}{run_model()}", "achieved"),
            ],
        ),
        timeseries(
            "In-flight requests",
            "Requests sent and not finished, per model; closed loop: the target number of streams.",
            "short",
            [
                summed_by("model", f"{client.INFLIGHT.name}{run_model()}"),
                Q(f"sum({client.CONCURRENCY.name}{run_only()})", "target concurrency"),
            ],
        ),
        timeseries(
            "Schedule lag p50 / p99 (open loop)",
            f"{client.SCHEDULE_LAG.help} Above a few ms the generator, not the server, set the pace.",
            "s",
            [Q(client_series(client.SCHEDULE_LAG, q, PER_RUN), q) for q in ("p50", "p99")],
        ),
        timeseries(
            "Open loop / trace replay: offered vs achieved arrivals",
            "Offered: sum over generator processes of m3bench_target_rate; in a trace stage each process "
            "sets it once a second to its share of the trace's rows in the last 10 s (the trace's offered "
            "rate over time). Achieved: open-loop requests per second, counted by their schedule-lag "
            "observation when they end (every open-loop request has one). The summary's over_time buckets "
            "hold the exact per-bucket counts from the records.",
            "reqps",
            [
                Q(OFFERED, "offered"),
                Q(f"sum(rate({client.SCHEDULE_LAG.name}_count{run_only()}[{RATE_INTERVAL}]))", "achieved"),
            ],
            width=24,
        ),
    ]


def _throughput_and_errors() -> list[ts.Panel]:
    return [
        timeseries(
            "Throughput and goodput",
            "Finished requests/s and goodput (ok requests meeting every SLO, lower bound from histograms).",
            "reqps",
            [
                Q(f"{rules.REQUESTS_RATE}{run_model()}", "requests {{model}}"),
                Q(f"{rules.GOODPUT_RATE}{run_model()}", "goodput {{model}}"),
            ],
        ),
        timeseries(
            "Output tokens/s: client vs server",
            "Client: usage.completion_tokens of finished requests; server: tokens the engines generated.",
            "short",
            client_vs_server(
                f"{rules.OUTPUT_TOKENS_RATE}{run_model()}", f"{rules.SERVER_OUTPUT_TOKENS_RATE}{by_model()}"
            ),
        ),
        timeseries(
            "Requests by status",
            f"{client.REQUESTS.help} Finished requests/s per status.",
            "reqps",
            [summed_by("status", f"{rules.REQUESTS_BY_STATUS_RATE}{run_model()}")],
        ),
        timeseries(
            "Error ratio",
            "Requests with a status other than ok / all finished requests, per model.",
            "percentunit",
            [Q(f"{rules.ERROR_RATIO}{run_model()}", "{{model}}")],
        ),
        timeseries(
            "Load generator CPU",
            "CPU seconds per second of each generator process (master and workers); near 1 = saturated.",
            "short",
            [
                summed_by(
                    "instance", f'process_cpu_seconds_total{{job="{LOADGEN_JOB}",run_id=~"$run"}}', rate=True
                )
            ],
        ),
        timeseries(
            "Generator event-loop lag p99",
            f"{client.LOOP_LAG.help} Above 20 ms the run's latencies are suspect.",
            "s",
            [Q(client_series(client.LOOP_LAG, "p99", PER_RUN), "p99")],
        ),
    ]
