"""Typed stage and run summaries (what ``loadgen.summary`` computes and summary.json holds).

On disk a summary stays JSON (``model_dump_json(by_alias=True)``), with ``schema_version``; readers
(the CLI, the demo, the report) load it with ``RunSummary.model_validate_json`` or take the object
``summarize`` returns. ``extra="forbid"``: a field this version does not know is an error, not ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from loadgen.profile import Slo

SUMMARY_SCHEMA_VERSION = 2  # 1: untyped dicts, born-in-window throughput; 2: typed, arrival-time throughput
Party = Literal["client", "server", "machine"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Distribution(_Model):
    """n, mean, min, percentiles (``loadgen.stats.quantile``) and max of one quantity; None when n = 0."""

    n: int = 0
    mean: float | None = None
    min: float | None = None
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    p99_9: float | None = Field(default=None, alias="p99.9")
    max: float | None = None

    def at(self, name: str) -> float | None:
        """A figure by its on-disk name: ``at("p99")``, ``at("p99.9")``, ``at("mean")``."""
        value: float | None = self.model_dump(by_alias=True)[name]
        return value


class Counts(_Model):
    by_phase: dict[str, int]
    measure_by_status: dict[str, int]

    @property
    def measured(self) -> int:
        return sum(self.measure_by_status.values())

    @property
    def ok(self) -> int:
        return self.measure_by_status.get("ok", 0)


class Window(_Model):
    start_unix_s: float
    end_unix_s: float
    window_s: float
    basis: str = Field(description="What the window is (see formulas.window_s).")


class Latency(_Model):
    ttft: Distribution
    itl: Distribution
    tpot: Distribution
    e2e: Distribution
    ttft_from_scheduled: Distribution
    e2e_from_scheduled: Distribution
    schedule_lag: Distribution


class Throughput(_Model):
    requests_per_s: float | None
    output_tokens_per_s: float | None
    goodput_requests_per_s: float | None
    goodput_fraction: float | None
    achieved_send_rate_per_s: float | None
    completed_in_window: int = Field(description="ok requests (any phase) that ended inside the window")
    tokens_in_window: float = Field(description="output tokens that arrived inside the window")
    output_tokens: int = Field(description="usage completion_tokens of ok measure-phase requests")
    born_output_tokens_per_s: float | None = Field(
        description="schema-1 figure, kept for comparison: output_tokens / (last measure end - first send)"
    )
    request_equivalent_per_s: float | None = Field(
        default=None,
        description="output_tokens_per_s / usage completion_tokens per ok measure-phase request: the request "
        "rate the token flow carries, what the capacity planner uses (formulas.request_equivalent_per_s)",
    )
    slo: Slo
    missing_usage: int


class AccuracyCell(_Model):
    passed: int = Field(alias="pass")
    fail: int
    error: int
    timeout: int
    ungraded: int
    graded: int
    accuracy: float | None


AccuracyTable = dict[str, dict[str, AccuracyCell]]  # model -> language -> cell


class Timing(_Model):
    kernel_timestamps_fraction: float | None
    read_delay_s: Distribution
    coalesced_reads: int
    ttft_upper_bound_fraction: float | None
    first_read_server_coalesced_fraction: float | None
    tokens_per_chunk: float | None
    tokens_per_write: float | None
    itl_basis: str


class Finding(_Model):
    """One judgement on a stage: who caused it (party), what was seen (evidence), whether it voids it."""

    rule: str
    party: Party
    invalid: bool
    evidence: str


class WorkerHealth(_Model):
    worker: str
    cpu_fraction: float | None
    runqueue_wait_fraction: float | None = None
    loop_lag_p99_s: float | None
    loop_lag_max_s: float | None


class Validity(_Model):
    valid: bool
    invalid_reasons: list[str] = Field(description="'party: evidence' of every invalid finding")
    findings: list[Finding]
    workers: list[WorkerHealth]


class TimeBucket(_Model):
    """One ``bucket_s`` slice of a trace stage (``loadgen.traffic``; formulas.over_time)."""

    start_s: float = Field(description="Bucket start, seconds from the stage start")
    offered: int = Field(description="arrivals scheduled in the bucket (the trace's rows)")
    sent: int = Field(description="requests actually sent in the bucket")
    offered_rate_per_s: float
    achieved_rate_per_s: float
    ok: int
    errors: int
    ttft_p50_s: float | None
    ttft_p99_s: float | None
    e2e_p50_s: float | None
    e2e_p99_s: float | None
    schedule_lag_p99_s: float | None
    slo_attainment: float | None = Field(description="requests scheduled here meeting every SLO / scheduled")


class OverTime(_Model):
    bucket_s: float
    anchor: str = Field(description="what t = 0 is: the stage's announced start, or its first scheduled send")
    buckets: list[TimeBucket]


class TurnSummary(_Model):
    """A session stage's measure-phase requests of one model and turn index (0 = the first question)."""

    model: str
    turn: int
    requests: int
    ok: int
    ttft: Distribution
    e2e: Distribution
    prompt_tokens_mean: float | None


class StageSummary(_Model):
    schema_version: int = SUMMARY_SCHEMA_VERSION
    stage: str
    stage_index: int
    mode: Literal["closed", "open"]
    target: float
    counts: Counts
    window: Window
    latency_s: Latency
    throughput: Throughput
    accuracy: AccuracyTable
    timing: Timing
    generator: Validity
    over_time: OverTime | None = None  # trace stages: offered vs achieved rate, latency, SLOs per bucket
    turns: list[TurnSummary] | None = None  # session stages: TTFT and E2E by turn index


class RunInfo(_Model):
    run_id: str
    endpoint: str
    models: list[str]
    profile: str
    warnings: list[str]
    exit_codes: dict[str, int | None]
    outcome: dict[str, Any] | None = None  # loadgen.outcome.Outcome: exit status, last line, causes
    backoff: dict[str, Any] | None = None  # Profile.backoff as run, and the waits each stage took


class RunSummary(_Model):
    schema_version: int = SUMMARY_SCHEMA_VERSION
    run_id: str | None
    records: int
    by_status: dict[str, int]
    stages: list[StageSummary]
    accuracy: AccuracyTable
    formulas: dict[str, str]
    run: RunInfo | None = None

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2)
