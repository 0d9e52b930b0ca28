"""The server metrics m3bench reads, named once: vLLM's engine metrics and Ray Serve's, as Ray exports them.

vLLM inside a Ray Serve LLM replica records through ``ray.util.metrics`` (vllm/v1/metrics/ray_wrappers.py):
``vllm:x`` becomes ``vllm_x`` and Ray's exporter adds the ``ray_`` prefix, so Prometheus sees
``ray_vllm_x``; counters get ``_total``, histograms ``_bucket``/``_sum``/``_count``. Every vLLM series
carries ``model_name`` (the served model id), ``engine``, ``ReplicaId`` and Ray's ``WorkerId``. Ray Serve's
own metrics (``ray_serve_*``) carry ``application``, ``deployment`` and ``replica``; an LLM deployment is
named ``LLMServer:<model id>`` (ray.llm ``build_llm_deployment``; ``/`` becomes ``--`` and ``.`` ``_``).

Names are checked against a live Ray Serve LLM stack by tests/integration/test_observability*.py. Client
metric names live in ``loadgen.metric_names``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MODEL_LABEL = "model_name"  # vLLM's label for the served model id
REPLICA_LABEL = "ReplicaId"  # added by vLLM's Ray wrappers
DEPLOYMENT_PREFIX = "LLMServer:"  # ray.llm names each model's deployment LLMServer:<model id>


@dataclass(frozen=True)
class ServerMetric:
    name: str  # as Prometheus stores it, without _bucket/_sum/_count for histograms
    kind: Literal["histogram", "counter", "gauge"]
    help: str
    unit: str = ""

    def bucket(self) -> str:
        return f"{self.name}_bucket"


def _vllm(
    name: str, kind: Literal["histogram", "counter", "gauge"], help_text: str, unit: str = ""
) -> ServerMetric:
    suffix = "_total" if kind == "counter" else ""
    return ServerMetric(f"ray_vllm_{name}{suffix}", kind, help_text, unit)


# vLLM engine: latency histograms (seconds)
TTFT = _vllm(
    "time_to_first_token_seconds", "histogram", "Engine TTFT: first token out - request arrival.", "s"
)
ITL = _vllm("inter_token_latency_seconds", "histogram", "Engine gap between consecutive output tokens.", "s")
TPOT = _vllm(
    "request_time_per_output_token_seconds", "histogram", "Engine decode time / (output tokens - 1).", "s"
)
E2E = _vllm(
    "e2e_request_latency_seconds", "histogram", "Engine end-to-end latency of finished requests.", "s"
)
QUEUE_TIME = _vllm("request_queue_time_seconds", "histogram", "Time a request waited before scheduling.", "s")

# vLLM engine: scheduler and cache state
RUNNING = _vllm("num_requests_running", "gauge", "Requests in model execution batches.")
WAITING = _vllm("num_requests_waiting", "gauge", "Requests waiting to be scheduled.")
KV_CACHE_USAGE = _vllm("kv_cache_usage_perc", "gauge", "KV-cache usage, 1 = full.", "percentunit")
PREEMPTIONS = _vllm("num_preemptions", "counter", "Requests preempted by the engine (KV cache pressure).")
PREFIX_CACHE_QUERIES = _vllm("prefix_cache_queries", "counter", "Prefix-cache queries, in tokens.")
PREFIX_CACHE_HITS = _vllm("prefix_cache_hits", "counter", "Prefix-cache hits, in tokens.")
MM_CACHE_QUERIES = _vllm(
    "mm_cache_queries", "counter", "Multimodal (processed image) cache queries, in items."
)
MM_CACHE_HITS = _vllm("mm_cache_hits", "counter", "Multimodal cache hits, in items.")

# vLLM engine: throughput
REQUEST_SUCCESS = _vllm("request_success", "counter", "Requests the engine finished (label finished_reason).")
PROMPT_TOKENS = _vllm("prompt_tokens", "counter", "Prefill tokens processed.")
GENERATION_TOKENS = _vllm("generation_tokens", "counter", "Output tokens generated.")

# Ray Serve
SERVE_REPLICA_HEALTHY = ServerMetric(
    "ray_serve_deployment_replica_healthy", "gauge", "1 per healthy replica of a deployment."
)
SERVE_QUEUED = ServerMetric(
    "ray_serve_deployment_queued_queries", "gauge", "Requests queued in a router, not yet sent to a replica."
)
SERVE_PROCESSING = ServerMetric(
    "ray_serve_replica_processing_queries", "gauge", "Requests a replica is processing now."
)
SERVE_LATENCY_MS = ServerMetric(
    "ray_serve_deployment_processing_latency_ms", "histogram", "Replica processing latency (ms).", "ms"
)
SERVE_REQUESTS = ServerMetric(
    "ray_serve_deployment_request_counter_total", "counter", "Requests a replica processed."
)
SERVE_ERRORS = ServerMetric(
    "ray_serve_deployment_error_counter_total", "counter", "Requests that raised in a replica."
)

# HAProxy's Prometheus exporter (Ray Serve's HAProxy mode; Prometheus job "haproxy")
HAPROXY_SESSIONS = ServerMetric(
    "haproxy_frontend_current_sessions",
    "gauge",
    "Connections HAProxy holds open, per frontend (label proxy).",
)
HAPROXY_MAX_CONNECTIONS = ServerMetric(
    "haproxy_process_max_connections", "gauge", "HAProxy's connection limit (RAY_SERVE_HAPROXY_MAXCONN)."
)
HAPROXY_BACKEND_REQUESTS = ServerMetric(
    "haproxy_backend_http_requests_total", "counter", "HTTP requests HAProxy sent to a backend (a Serve app)."
)
HAPROXY_QUEUE = ServerMetric(
    "haproxy_backend_current_queue", "gauge", "Requests waiting in HAProxy for a free replica slot."
)
HAPROXY_IDLE = ServerMetric(
    "haproxy_process_idle_time_percent",
    "gauge",
    "Share of the last second HAProxy's threads waited.",
    "percent",
)

ALL: tuple[ServerMetric, ...] = (
    TTFT,
    ITL,
    TPOT,
    E2E,
    QUEUE_TIME,
    RUNNING,
    WAITING,
    KV_CACHE_USAGE,
    PREEMPTIONS,
    PREFIX_CACHE_QUERIES,
    PREFIX_CACHE_HITS,
    MM_CACHE_QUERIES,
    MM_CACHE_HITS,
    REQUEST_SUCCESS,
    PROMPT_TOKENS,
    GENERATION_TOKENS,
    SERVE_REPLICA_HEALTHY,
    SERVE_QUEUED,
    SERVE_PROCESSING,
    SERVE_LATENCY_MS,
    SERVE_REQUESTS,
    SERVE_ERRORS,
    HAPROXY_SESSIONS,
    HAPROXY_MAX_CONNECTIONS,
    HAPROXY_BACKEND_REQUESTS,
    HAPROXY_QUEUE,
    HAPROXY_IDLE,
)
