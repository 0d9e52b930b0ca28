"""Serving internals dashboard: inside each vLLM engine (scheduler queues, KV cache, preemptions, prefix and
multimodal caches, engine latency) and around it in Ray Serve (replicas, router queue, processing)."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as sdk
from grafana_foundation_sdk.builders import timeseries as ts

from observability import rules
from observability.dashboards import server_metric_names as server
from observability.dashboards.common import (
    MODEL_LEGEND,
    PER_REPLICA_LEGEND,
    RATE_INTERVAL,
    Q,
    by_model,
    new_dashboard,
    server_series,
    summed_by,
    timeseries,
    with_row,
)
from observability.dashboards.promql import histogram_quantile, quantile_suffix, rate_sum, server_filter

UID = "m3bench-serving-internals"
VLLM = server_filter()
PER_REPLICA = f"{server.MODEL_LABEL}, {server.REPLICA_LABEL}"


def _rate(metric: server.ServerMetric) -> str:
    return rate_sum(metric.name, (server.MODEL_LABEL,), RATE_INTERVAL, VLLM)


def _per_replica(aggregation: str, metric: server.ServerMetric) -> str:
    return f"{aggregation} by ({PER_REPLICA}) ({metric.name}{VLLM})"


def _counted(metric: server.ServerMetric) -> str:
    """What a counter counted inside the window: its last minus its first sample there, per series."""
    series = f"{metric.name}{VLLM}[{RATE_INTERVAL}]"
    return f"sum by ({server.MODEL_LABEL}) (max_over_time({series}) - min_over_time({series}))"


def _hit_ratio(hits: server.ServerMetric, queries: server.ServerMetric) -> str:
    """hits / queries over the window, from the samples alone. Not rate() / rate(): rate extrapolates each
    series to the window's edges by its own first value and sample spacing, and the hits series starts
    later than the queries series (Ray exports a counter after its first increment), so the two are
    stretched differently. With a true ratio near 1 (a task set asked again and again) that read 1.34 in
    the observability test of 2026-12-05. A counter reset inside the window (the metrics agent restarted)
    overstates its side for that window."""
    return f"{_counted(hits)} / ({_counted(queries)} > 0)"


def build() -> sdk.Dashboard:
    board = new_dashboard(
        UID,
        "m3bench / Serving internals",
        "vLLM engine state (queues, KV cache, preemptions, caches) and Ray Serve replicas, queues, latency.",
    )
    board = with_row(board, "vLLM engines", _engines())
    board = with_row(board, "Ray Serve", _ray_serve())
    return with_row(board, "HAProxy (ingress: haproxy)", _haproxy())


def _engines() -> list[ts.Panel]:
    return [
        timeseries(
            "Running and waiting requests",
            f"Running: {server.RUNNING.help} Waiting: {server.WAITING.help} One line per replica.",
            "short",
            [
                Q(_per_replica("sum", server.RUNNING), f"running {PER_REPLICA_LEGEND}"),
                Q(_per_replica("sum", server.WAITING), f"waiting {PER_REPLICA_LEGEND}"),
            ],
        ),
        timeseries(
            "KV-cache usage",
            f"{server.KV_CACHE_USAGE.help} Sustained values near 1 lead to preemptions.",
            "percentunit",
            [Q(_per_replica("max", server.KV_CACHE_USAGE), PER_REPLICA_LEGEND)],
        ),
        timeseries(
            "Preemptions/s",
            f"{server.PREEMPTIONS.help} 0 until an engine first preempts (Ray exports counters after that).",
            "short",
            [
                # Ray exports a counter only after its first increment: 0 until the first preemption
                Q(
                    f"{_rate(server.PREEMPTIONS)} or "
                    f"0 * sum by ({server.MODEL_LABEL}) ({server.RUNNING.name}{VLLM})",
                    MODEL_LEGEND,
                )
            ],
        ),
        timeseries(
            "Prefix and multimodal cache hit ratio",
            "Prefix cache: hit tokens / queried. Multimodal cache: processed images reused/looked up.",
            "percentunit",
            [
                Q(
                    _hit_ratio(server.PREFIX_CACHE_HITS, server.PREFIX_CACHE_QUERIES),
                    f"prefix {MODEL_LEGEND}",
                ),
                Q(_hit_ratio(server.MM_CACHE_HITS, server.MM_CACHE_QUERIES), f"multimodal {MODEL_LEGEND}"),
            ],
        ),
        timeseries(
            "Engine latency p50 / p99",
            "TTFT and E2E as each vLLM engine recorded them (arrival at the engine to first / last token).",
            "s",
            [
                Q(server_series(metric, q), f"{name} {q} {{{{model}}}}")
                for name, metric in (("TTFT", server.TTFT), ("E2E", server.E2E))
                for q in ("p50", "p99")
            ],
        ),
        timeseries(
            "Engine queue time p99",
            server.QUEUE_TIME.help,
            "s",
            [
                Q(
                    histogram_quantile(
                        0.99, server.QUEUE_TIME.bucket(), (server.MODEL_LABEL,), RATE_INTERVAL, VLLM
                    ),
                    MODEL_LEGEND,
                )
            ],
        ),
    ]


def _ray_serve() -> list[ts.Panel]:
    return [
        timeseries(
            "Healthy replicas per deployment",
            server.SERVE_REPLICA_HEALTHY.help,
            "short",
            [Q(f"sum by (application, deployment) ({server.SERVE_REPLICA_HEALTHY.name})", "{{deployment}}")],
        ),
        timeseries(
            "Router queue and replica processing",
            f"Queued: {server.SERVE_QUEUED.help} Processing: {server.SERVE_PROCESSING.help}",
            "short",
            [
                summed_by("deployment", server.SERVE_QUEUED.name, "queued"),
                summed_by("deployment", server.SERVE_PROCESSING.name, "processing"),
            ],
        ),
        timeseries(
            "Replica processing latency p50 / p99",
            f"{server.SERVE_LATENCY_MS.help} For a streaming LLM call: the whole stream.",
            "ms",
            [
                Q(
                    histogram_quantile(q, server.SERVE_LATENCY_MS.bucket(), ("deployment",), RATE_INTERVAL),
                    f"{quantile_suffix(q)} {{{{deployment}}}}",
                )
                for q in (0.5, 0.99)
            ],
        ),
        timeseries(
            "Serve requests/s per deployment",
            server.SERVE_REQUESTS.help,
            "reqps",
            [summed_by("deployment", server.SERVE_REQUESTS.name, rate=True)],
            width=12,
        ),
        timeseries(
            "Serve error ratio per model",
            "Requests that raised in an LLM replica / requests it processed.",
            "percentunit",
            [Q(f"{rules.SERVER_ERROR_RATIO}{by_model()}", "{{model}}")],
            width=12,
        ),
    ]


def _haproxy() -> list[ts.Panel]:
    """HAProxy's own exporter in Ray Serve's HAProxy mode (empty panels on the Python proxy)."""
    return [
        timeseries(
            "HAProxy connections",
            f"{server.HAPROXY_SESSIONS.help} Limit: {server.HAPROXY_MAX_CONNECTIONS.help}",
            "short",
            [
                summed_by("proxy", server.HAPROXY_SESSIONS.name, "sessions"),
                Q(f"max({server.HAPROXY_MAX_CONNECTIONS.name})", "maxconn"),
            ],
        ),
        timeseries(
            "HAProxy requests/s and queue per backend",
            f"Requests: {server.HAPROXY_BACKEND_REQUESTS.help} Queue: {server.HAPROXY_QUEUE.help}",
            "short",
            [
                summed_by("proxy", server.HAPROXY_BACKEND_REQUESTS.name, "req/s", rate=True),
                summed_by("proxy", server.HAPROXY_QUEUE.name, "queued"),
            ],
        ),
        timeseries(
            "HAProxy busy share",
            f"100 - idle: {server.HAPROXY_IDLE.help} Near 100 % HAProxy itself limits the ingress.",
            "percent",
            [Q(f"100 - avg({server.HAPROXY_IDLE.name})", "busy")],
        ),
    ]
