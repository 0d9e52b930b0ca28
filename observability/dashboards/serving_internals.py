"""Serving internals dashboard: inside each vLLM engine (scheduler queues, KV cache, preemptions, prefix and
multimodal caches, engine latency) and around it in Ray Serve (replicas, router queue, processing)."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as sdk

from observability import rules
from observability.dashboards import server_metric_names as server
from observability.dashboards.common import Q, new_dashboard, timeseries

UID = "m3bench-serving-internals"
VLLM = f'{{{server.MODEL_LABEL}=~"$model"}}'
PER_REPLICA = f"{server.MODEL_LABEL}, {server.REPLICA_LABEL}"
PER_REPLICA_LEGEND = f"{{{{{server.MODEL_LABEL}}}}} {{{{{server.REPLICA_LABEL}}}}}"


def _rate(metric: server.ServerMetric, by: str) -> str:
    return f"sum by ({by}) (rate({metric.name}{VLLM}[$__rate_interval]))"


def _hit_ratio(hits: server.ServerMetric, queries: server.ServerMetric) -> str:
    by = server.MODEL_LABEL
    return f"{_rate(hits, by)} / ({_rate(queries, by)} > 0)"


def build() -> sdk.Dashboard:
    board = new_dashboard(
        UID,
        "m3bench / Serving internals",
        "vLLM engine state (queues, KV cache, preemptions, caches) and Ray Serve replicas, queues, latency.",
    )
    board = board.with_row(sdk.Row("vLLM engines"))
    board = board.with_panel(
        timeseries(
            "Running and waiting requests",
            f"Running: {server.RUNNING.help} Waiting: {server.WAITING.help} One line per replica.",
            "short",
            [
                Q(f"sum by ({PER_REPLICA}) ({server.RUNNING.name}{VLLM})", f"running {PER_REPLICA_LEGEND}"),
                Q(f"sum by ({PER_REPLICA}) ({server.WAITING.name}{VLLM})", f"waiting {PER_REPLICA_LEGEND}"),
            ],
            width=8,
        )
    )
    board = board.with_panel(
        timeseries(
            "KV-cache usage",
            f"{server.KV_CACHE_USAGE.help} Sustained values near 1 lead to preemptions.",
            "percentunit",
            [Q(f"max by ({PER_REPLICA}) ({server.KV_CACHE_USAGE.name}{VLLM})", PER_REPLICA_LEGEND)],
            width=8,
        )
    )
    board = board.with_panel(
        timeseries(
            "Preemptions/s",
            f"{server.PREEMPTIONS.help} 0 until an engine first preempts (Ray exports counters after that).",
            "short",
            [
                # Ray exports a counter only after its first increment: 0 until the first preemption
                Q(
                    f"{_rate(server.PREEMPTIONS, server.MODEL_LABEL)} or "
                    f"0 * sum by ({server.MODEL_LABEL}) ({server.RUNNING.name}{VLLM})",
                    f"{{{{{server.MODEL_LABEL}}}}}",
                )
            ],
            width=8,
        )
    )
    board = board.with_panel(
        timeseries(
            "Prefix and multimodal cache hit ratio",
            "Prefix cache: hit tokens / queried. Multimodal cache: processed images reused/looked up.",
            "percentunit",
            [
                Q(
                    _hit_ratio(server.PREFIX_CACHE_HITS, server.PREFIX_CACHE_QUERIES),
                    f"prefix {{{{{server.MODEL_LABEL}}}}}",
                ),
                Q(
                    _hit_ratio(server.MM_CACHE_HITS, server.MM_CACHE_QUERIES),
                    f"multimodal {{{{{server.MODEL_LABEL}}}}}",
                ),
            ],
            width=8,
        )
    )
    board = board.with_panel(
        timeseries(
            "Engine latency p50 / p99",
            "TTFT and E2E as each vLLM engine recorded them (arrival at the engine to first / last token).",
            "s",
            [
                Q(f'{rules.server_record(server.TTFT, "p50")}{{model=~"$model"}}', "TTFT p50 {{model}}"),
                Q(f'{rules.server_record(server.TTFT, "p99")}{{model=~"$model"}}', "TTFT p99 {{model}}"),
                Q(f'{rules.server_record(server.E2E, "p50")}{{model=~"$model"}}', "E2E p50 {{model}}"),
                Q(f'{rules.server_record(server.E2E, "p99")}{{model=~"$model"}}', "E2E p99 {{model}}"),
            ],
            width=8,
        )
    )
    board = board.with_panel(
        timeseries(
            "Engine queue time p99",
            server.QUEUE_TIME.help,
            "s",
            [
                Q(
                    f"histogram_quantile(0.99, sum by ({server.MODEL_LABEL}, le) "
                    f"(rate({server.QUEUE_TIME.bucket()}{VLLM}[$__rate_interval])))",
                    f"{{{{{server.MODEL_LABEL}}}}}",
                )
            ],
            width=8,
        )
    )
    board = board.with_row(sdk.Row("Ray Serve"))
    board = board.with_panel(
        timeseries(
            "Healthy replicas per deployment",
            server.SERVE_REPLICA_HEALTHY.help,
            "short",
            [Q(f"sum by (application, deployment) ({server.SERVE_REPLICA_HEALTHY.name})", "{{deployment}}")],
            width=8,
        )
    )
    board = board.with_panel(
        timeseries(
            "Router queue and replica processing",
            f"Queued: {server.SERVE_QUEUED.help} Processing: {server.SERVE_PROCESSING.help}",
            "short",
            [
                Q(f"sum by (deployment) ({server.SERVE_QUEUED.name})", "queued {{deployment}}"),
                Q(f"sum by (deployment) ({server.SERVE_PROCESSING.name})", "processing {{deployment}}"),
            ],
            width=8,
        )
    )
    board = board.with_panel(
        timeseries(
            "Replica processing latency p50 / p99",
            f"{server.SERVE_LATENCY_MS.help} For a streaming LLM call: the whole stream.",
            "ms",
            [
                Q(
                    f"histogram_quantile({q}, sum by (deployment, le) "
                    f"(rate({server.SERVE_LATENCY_MS.bucket()}[$__rate_interval])))",
                    f"p{round(q * 100)} {{{{deployment}}}}",
                )
                for q in (0.5, 0.99)
            ],
            width=8,
        )
    )
    board = board.with_panel(
        timeseries(
            "Serve requests/s per deployment",
            server.SERVE_REQUESTS.help,
            "reqps",
            [
                Q(
                    f"sum by (deployment) (rate({server.SERVE_REQUESTS.name}[$__rate_interval]))",
                    "{{deployment}}",
                )
            ],
            width=12,
        )
    )
    board = board.with_panel(
        timeseries(
            "Serve error ratio per model",
            "Requests that raised in an LLM replica / requests it processed.",
            "percentunit",
            [Q(f'{rules.SERVER_ERROR_RATIO}{{model=~"$model"}}', "{{model}}")],
            width=12,
        )
    )
    return _haproxy_row(board)


def _haproxy_row(board: sdk.Dashboard) -> sdk.Dashboard:
    """HAProxy's own exporter in Ray Serve's HAProxy mode (empty panels on the Python proxy)."""
    board = board.with_row(sdk.Row("HAProxy (ingress: haproxy)"))
    board = board.with_panel(
        timeseries(
            "HAProxy connections",
            f"{server.HAPROXY_SESSIONS.help} Limit: {server.HAPROXY_MAX_CONNECTIONS.help}",
            "short",
            [
                Q(f"sum by (proxy) ({server.HAPROXY_SESSIONS.name})", "sessions {{proxy}}"),
                Q(f"max({server.HAPROXY_MAX_CONNECTIONS.name})", "maxconn"),
            ],
            width=8,
        )
    )
    board = board.with_panel(
        timeseries(
            "HAProxy requests/s and queue per backend",
            f"Requests: {server.HAPROXY_BACKEND_REQUESTS.help} Queue: {server.HAPROXY_QUEUE.help}",
            "short",
            [
                Q(
                    f"sum by (proxy) (rate({server.HAPROXY_BACKEND_REQUESTS.name}[$__rate_interval]))",
                    "req/s {{proxy}}",
                ),
                Q(f"sum by (proxy) ({server.HAPROXY_QUEUE.name})", "queued {{proxy}}"),
            ],
            width=8,
        )
    )
    return board.with_panel(
        timeseries(
            "HAProxy busy share",
            f"100 - idle: {server.HAPROXY_IDLE.help} Near 100 % HAProxy itself limits the ingress.",
            "percent",
            [Q(f"100 - avg({server.HAPROXY_IDLE.name})", "busy")],
            width=8,
        )
    )
