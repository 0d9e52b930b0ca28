"""The client metrics, named once: Prometheus names, help text (with formulas), labels and buckets.

Dashboards and recording rules import this module rather than repeating names. Base units, the
``m3bench_`` prefix, bounded labels only (never a task or request id).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

COMMON_LABELS: tuple[str, ...] = ("model", "language", "stage", "phase", "run_id")

LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
    3.0,
    5.0,
    7.5,
    10.0,
    15.0,
    20.0,
    30.0,
    60.0,
    120.0,
)
TOKEN_GAP_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    1.0,
    2.0,
)
E2E_BUCKETS = (
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.0,
    3.0,
    5.0,
    7.5,
    10.0,
    15.0,
    20.0,
    30.0,
    45.0,
    60.0,
    90.0,
    120.0,
    180.0,
    300.0,
    600.0,
)
LAG_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass(frozen=True)
class MetricSpec:
    name: str  # without the _total / _bucket suffixes Prometheus adds
    kind: Literal["histogram", "counter", "gauge"]
    help: str
    labels: tuple[str, ...]
    buckets: tuple[float, ...] = ()


TTFT = MetricSpec(
    "m3bench_ttft_seconds",
    "histogram",
    "Time to first token: arrival of the first content token - send "
    "(kernel socket timestamp when available).",
    COMMON_LABELS,
    LATENCY_BUCKETS,
)
ITL = MetricSpec(
    "m3bench_itl_seconds",
    "histogram",
    "Inter-token latency: gap between consecutive content chunks (a chunk may carry several tokens when "
    "the server batches its stream).",
    COMMON_LABELS,
    TOKEN_GAP_BUCKETS,
)
TPOT = MetricSpec(
    "m3bench_tpot_seconds",
    "histogram",
    "Time per output token: (E2E - TTFT) / (output_tokens - 1), output_tokens from the server's usage.",
    COMMON_LABELS,
    TOKEN_GAP_BUCKETS,
)
E2E = MetricSpec(
    "m3bench_e2e_seconds",
    "histogram",
    "End-to-end latency of completed requests: arrival of the last byte - send.",
    COMMON_LABELS,
    E2E_BUCKETS,
)
SCHEDULE_LAG = MetricSpec(
    "m3bench_schedule_lag_seconds",
    "histogram",
    "Open loop: actual send - scheduled send time (absolute schedule); large values mean the generator "
    "or the connection pool could not keep up.",
    COMMON_LABELS,
    LAG_BUCKETS,
)
REQUESTS = MetricSpec(
    "m3bench_requests",
    "counter",
    "Requests finished, by status (ok|http_error|timeout|disconnect|bad_stream); "
    "errors are counted, never dropped.",
    (*COMMON_LABELS, "status"),
)
OUTPUT_TOKENS = MetricSpec(
    "m3bench_output_tokens",
    "counter",
    "Output tokens reported by the server's usage (completion_tokens); "
    "rate() of it is output token throughput.",
    COMMON_LABELS,
)
PROMPT_TOKENS = MetricSpec(
    "m3bench_prompt_tokens",
    "counter",
    "Prompt tokens reported by the server's usage (prompt_tokens).",
    COMMON_LABELS,
)
GRADED = MetricSpec(
    "m3bench_graded",
    "counter",
    "Answers graded live, by verdict (pass|fail|error|timeout|ungraded); accuracy = pass / graded.",
    (*COMMON_LABELS, "verdict"),
)
TARGET_RATE = MetricSpec(
    "m3bench_target_rate",
    "gauge",
    "Open loop: this process's share of the stage's target request rate (requests/s); sum() over processes "
    "is the target. Closed loop: 0.",
    ("stage", "run_id"),
)
INFLIGHT = MetricSpec(
    "m3bench_inflight_requests",
    "gauge",
    "Requests sent and not yet finished, in this process.",
    ("model", "run_id"),
)
LOOP_LAG = MetricSpec(
    "m3bench_loadgen_loop_lag_seconds",
    "histogram",
    "Generator health: how late a 5 ms timer fires on this process's event loop (busy generator => large).",
    ("run_id",),
    LAG_BUCKETS,
)
READ_DELAY = MetricSpec(
    "m3bench_loadgen_read_delay_seconds",
    "histogram",
    "Generator health: user-space read time - kernel arrival time of the first token.",
    ("run_id",),
    LAG_BUCKETS,
)
CONCURRENCY = MetricSpec(
    "m3bench_target_concurrency",
    "gauge",
    "Closed loop: the stage's target number of concurrent streams (set by the master process).",
    ("stage", "run_id"),
)

ALL: tuple[MetricSpec, ...] = (
    TTFT,
    ITL,
    TPOT,
    E2E,
    SCHEDULE_LAG,
    REQUESTS,
    OUTPUT_TOKENS,
    PROMPT_TOKENS,
    GRADED,
    TARGET_RATE,
    INFLIGHT,
    LOOP_LAG,
    READ_DELAY,
    CONCURRENCY,
)
JOB_NAME = "m3bench_loadgen"
