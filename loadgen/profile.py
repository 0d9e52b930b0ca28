"""Load profiles and run configuration: declared once, validated with clear messages (extra="forbid").

A profile says *how* to load (mode, arrivals, stages or a sweep, sampling, request options, grading,
SLOs, generator layout); a ``RunConfig`` adds *what* to load (endpoint, task set, models) and where the
results go. Profiles come from a YAML file, a built-in name (``loadgen/profiles/<name>.yaml``) or an
inline YAML/JSON string.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from loadgen.search_spec import SearchSpec

PROFILES_DIR = Path(__file__).parent / "profiles"


class LoadgenError(Exception):
    """A problem the user can fix; the CLI prints it as one line."""


class ProfileError(LoadgenError):
    pass


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Arrival(_Model):
    """Open-loop inter-arrival times. gamma: shape = burstiness, mean 1/rate (burstiness 1 = Poisson)."""

    kind: Literal["constant", "poisson", "gamma"] = "poisson"
    burstiness: float = Field(default=1.0, gt=0, description="Gamma shape; < 1 is burstier than Poisson.")


class StageTimes(_Model):
    ramp_s: float = Field(
        default=0.0, ge=0, description="Linear ramp from the previous stage, inside warmup."
    )
    warmup_s: float = Field(default=0.0, ge=0)
    measure_s: float | None = Field(default=None, gt=0)
    measure_requests: int | None = Field(default=None, gt=0, description="Measured requests (all workers).")
    cooldown_s: float = Field(default=0.0, ge=0)
    drain_measured: bool = Field(
        default=False,
        description="Closed loop: after the measure window (and cooldown_s), the stage's streams keep "
        "sending (cooldown phase) until every measure-phase request has ended, at most request.timeout_s; "
        "only then does the next stage start. Without it the requests still in flight when the window "
        "closes finish under the next stage's load (its new streams' prefills), which then shows in this "
        "level's latency tail (docs/loadgen.md, 'Stage boundaries').",
    )

    @model_validator(mode="after")
    def _bounded(self) -> StageTimes:
        if self.ramp_s > self.warmup_s:
            raise ValueError(f"ramp_s ({self.ramp_s}) must fit inside warmup_s ({self.warmup_s})")
        return self


class TraceSpec(_Model):
    """Open loop: one arrival per trace row at its offset from the stage start (loadgen/traces).

    The row's task is the one whose estimated prompt length (UTF-8 bytes / ``bytes_per_token`` +
    ``image_tokens`` per image) is closest to the row's input length; its output length is sent as
    ``max_tokens`` and enforced by ``output_length``: ``ignore_eos`` (vLLM), ``min_tokens`` (= max_tokens),
    or ``max_tokens`` (a cap only: the task's stop strings kept). The stage's measure phase runs from
    ``warmup_s`` to the trace's end; ``measure_s``/``measure_requests`` cut it shorter."""

    path: Path
    format: Literal["auto", "mooncake", "azure", "burstgpt", "m3bench"] = "auto"
    start_s: float = Field(default=0.0, ge=0, description="Window start, seconds into the trace.")
    duration_s: float | None = Field(default=None, gt=0, description="Window length (trace seconds).")
    speedup: float | None = Field(default=None, gt=0, description="Divide every offset by this.")
    rate: float | None = Field(default=None, gt=0, description="Rescale to this mean rate (keeps bursts).")
    bytes_per_token: float = Field(default=3.5, gt=0)
    image_tokens: int = Field(default=0, ge=0, description="Prompt tokens one image counts for.")
    output_length: Literal["ignore_eos", "min_tokens", "max_tokens"] = "ignore_eos"
    bucket_s: float = Field(default=10.0, gt=0, description="Summary: width of the over-time buckets.")

    @model_validator(mode="after")
    def _readable(self) -> TraceSpec:
        if self.speedup is not None and self.rate is not None:
            raise ValueError("a trace sets speedup or rate, not both")
        self.path = self.path.expanduser().resolve()
        if not self.path.is_file():
            raise ValueError(f"trace {self.path} does not exist")
        return self


class ThinkTime(_Model):
    """A user's pause between a reply's end and the next question: constant, exponential or log-normal
    (``mean_s`` is the mean in every case; ``sigma`` is the log-normal's shape)."""

    kind: Literal["constant", "exponential", "lognormal"] = "exponential"
    mean_s: float = Field(default=2.0, ge=0)
    sigma: float = Field(default=0.5, gt=0)


class SessionSpec(_Model):
    """Open loop: each arrival starts a conversation about a task's image (turn 0, graded), then
    ``follow_ups_min``..``follow_ups_max`` follow-up questions (uniform), each sent a think time after the
    previous reply ended, with every earlier turn (image, question, answer) in the history
    (``loadgen/sessions.py``). ``rate`` is new sessions per second."""

    follow_ups_min: int = Field(default=1, ge=0)
    follow_ups_max: int = Field(default=3, ge=0)
    think_time: ThinkTime = Field(default_factory=ThinkTime)
    follow_up_max_tokens: int = Field(default=32, gt=0)
    questions: list[str] | None = Field(
        default=None, min_length=1, description="Follow-up questions (default: loadgen.sessions.QUESTIONS)."
    )

    @model_validator(mode="after")
    def _range(self) -> SessionSpec:
        if self.follow_ups_max < self.follow_ups_min:
            raise ValueError("follow_ups_max must be >= follow_ups_min")
        return self


class Stage(StageTimes):
    name: str | None = None
    concurrency: int | None = Field(default=None, ge=1, description="Closed loop: concurrent streams.")
    rate: float | None = Field(default=None, gt=0, description="Open loop: requests per second.")
    trace: TraceSpec | None = Field(default=None, description="Open loop: replay a trace's arrivals.")
    sessions: SessionSpec | None = Field(default=None, description="Open loop: arrivals start conversations.")

    @model_validator(mode="after")
    def _one_target(self) -> Stage:
        if sum(value is not None for value in (self.concurrency, self.rate, self.trace)) != 1:
            raise ValueError(
                "a stage sets exactly one of concurrency (closed loop), rate or trace (open loop)"
            )
        if self.sessions is not None and self.rate is None:
            raise ValueError("a session stage sets rate (new conversations per second)")
        if self.trace is not None:
            if self.ramp_s > 0:
                raise ValueError("a trace stage has no ramp (the trace's own arrivals are the load)")
            return self
        if self.measure_s is None and self.measure_requests is None:
            raise ValueError("a stage is bounded by measure_s, measure_requests or both")
        return self


class Sweep(StageTimes):
    """Shorthand for one stage per value, all with the same times."""

    concurrencies: list[int] | None = Field(default=None, min_length=1)
    rates: list[float] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_axis(self) -> Sweep:
        if (self.concurrencies is None) == (self.rates is None):
            raise ValueError("a sweep sets exactly one of concurrencies or rates")
        if self.measure_s is None and self.measure_requests is None:
            raise ValueError("a sweep is bounded by measure_s, measure_requests or both")
        return self


class Sampling(_Model):
    by: Literal["language", "task", "cycle"] = Field(
        default="language",
        description=(
            "language: pick a language uniformly, then a task; task: any task; cycle: every (model, task) "
            "pair once per lap, in an order shuffled by the profile's seed, each stage from the lap's start."
        ),
    )
    languages: list[str] | None = Field(default=None, description="Only these natural languages (BCP-47).")
    groups: list[str] | None = Field(default=None, description="Only these metadata.group values.")
    model_weights: dict[str, float] | None = Field(default=None, description="Relative share per model.")

    @model_validator(mode="after")
    def _cycle_has_no_weights(self) -> Sampling:
        if self.by == "cycle" and self.model_weights is not None:
            raise ValueError("model_weights do not apply to by: cycle (every model is asked every task)")
        return self


class RequestOptions(_Model):
    api: Literal["chat", "completions"] = "chat"
    max_tokens: int | None = Field(default=None, gt=0, description="Overrides each task's gen.max_tokens.")
    max_tokens_min: int | None = Field(
        default=None,
        gt=0,
        description="With max_tokens: each request's limit drawn uniformly from [max_tokens_min, max_tokens] "
        "(the request's own seeded draw). Closed-loop streams that all ask one fixed length (ignore_eos) "
        "finish in the same decode step and are sent again together: they stay in lockstep, and every "
        "TTFT is the whole convoy's prefill.",
    )
    temperature: float | None = Field(default=0.0, ge=0)
    system_prompt: str | None = None
    timeout_s: float = Field(default=300.0, gt=0)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    extra_body: dict[str, Any] = Field(default_factory=dict, description="Merged into every request body.")
    api_key_env: str | None = Field(default="OPENAI_API_KEY", description="Env var holding a bearer token.")

    @model_validator(mode="after")
    def _spread(self) -> RequestOptions:
        low, high = self.max_tokens_min, self.max_tokens
        if low is not None and (high is None or low > high):
            raise ValueError("max_tokens_min needs max_tokens, and at most it")
        return self


def output_limit(max_tokens: int, max_tokens_min: int | None) -> str:
    """A request's output limit as text: ``32-64`` when each request draws its own, else ``64``."""
    return f"{max_tokens_min}-{max_tokens}" if max_tokens_min else str(max_tokens)


class GradingOptions(_Model):
    enabled: bool = True
    processes: int = Field(default=1, ge=1, description="Grader processes per generator process.")
    function: str = Field(default="benchmark.grading:grade", description="module:function(task, answer).")


class Slo(_Model):
    ttft_s: float | None = Field(default=None, gt=0)
    tpot_s: float | None = Field(default=None, gt=0)
    e2e_s: float | None = Field(default=None, gt=0)


class Generator(_Model):
    workers: int = Field(
        default=0, ge=0, description="Local worker processes; 0 runs one process, no master."
    )
    remote_workers: int = Field(
        default=0, ge=0, description="Workers started elsewhere that the master waits for."
    )
    master_bind_host: str = "127.0.0.1"
    master_port: int = Field(default=0, ge=0, le=65535, description="0 picks a free port.")
    cpus: list[int] | None = Field(default=None, description="Pin generator processes to these CPUs.")
    priority: Literal["default", "high", "realtime"] = Field(
        default="default", description="high: nice -10; realtime: SCHED_FIFO 5 (needs privileges)."
    )
    max_inflight: int = Field(
        default=10_000, ge=1, description="Open loop: per-process cap on open requests."
    )
    web_ui: bool = False
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=8089, ge=0, le=65535)
    web_autoquit_s: int = Field(default=60, ge=0)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=0, ge=0, le=65535, description="0: a free port per process.")
    file_sd_path: Path | None = Field(default=None, description="Also write the file_sd target list here.")
    export_itl: bool = Field(default=True, description="Observe every ITL gap in Prometheus (costs CPU).")
    max_loop_lag_s: float = Field(default=0.02, gt=0, description="p99 loop lag above this: run invalid.")
    max_read_delay_s: float = Field(default=0.02, gt=0, description="p99 read delay above this: run invalid.")
    max_schedule_lag_s: float = Field(default=0.01, gt=0, description="p99 schedule lag above this: invalid.")
    max_ttft_upper_bound_fraction: float = Field(
        default=0.01, ge=0, le=1, description="Share of TTFTs that are only upper bounds above this: invalid."
    )
    max_cpu_fraction: float = Field(default=0.9, gt=0, le=1, description="Generator CPU use above: invalid.")


class Backoff(_Model):
    """Closed loop: a stream that gets an immediate 5xx waits before its next send (a dead replica
    answers 500 in milliseconds; re-sending at once hammers it). Doubles per consecutive immediate 5xx
    of the same stream up to ``max_s``; a reply that is not an immediate 5xx resets it. Every wait is
    counted in the summary (``run.backoff``)."""

    enabled: bool = True
    immediate_s: float = Field(default=1.0, gt=0, description="A 5xx back within this is immediate.")
    initial_s: float = Field(default=0.1, gt=0, description="First wait after an immediate 5xx.")
    max_s: float = Field(default=2.0, gt=0, description="Longest wait.")


class Profile(_Model):
    name: str = "custom"
    mode: Literal["closed", "open", "search"]
    arrival: Arrival = Field(default_factory=Arrival)
    stages: list[Stage] = Field(default_factory=list)
    sweep: Sweep | None = None
    sampling: Sampling = Field(default_factory=Sampling)
    request: RequestOptions = Field(default_factory=RequestOptions)
    grading: GradingOptions = Field(default_factory=GradingOptions)
    slo: Slo = Field(default_factory=Slo)
    generator: Generator = Field(default_factory=Generator)
    seed: int = 0
    backoff: Backoff = Field(default_factory=Backoff)
    max_error_fraction: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="A stage whose measured requests failed more often than this makes the run exit 3.",
    )
    search: SearchSpec | None = Field(
        default=None, description="mode: search: the SLO search (loadgen/search.py); no stages or sweep."
    )

    @model_validator(mode="after")
    def _stages(self) -> Profile:
        if self.mode == "search" or self.search is not None:
            if self.mode != "search" or self.search is None or self.stages or self.sweep is not None:
                raise ValueError("mode: search goes with a search section and no stages or sweep")
            return self
        if bool(self.stages) == (self.sweep is not None):
            raise ValueError("a profile has either stages or a sweep")
        for index, stage in enumerate(self.resolved_stages()):
            if self.mode == "closed" and stage.concurrency is None:
                raise ValueError(f"stage {index}: closed-loop stages set concurrency, not rate")
            if self.mode == "open" and stage.rate is None and stage.trace is None:
                raise ValueError(f"stage {index}: open-loop stages set rate or trace, not concurrency")
            if self.mode == "open" and stage.drain_measured:
                raise ValueError(f"stage {index}: drain_measured applies to closed-loop stages only")
        names = [stage.name for stage in self.resolved_stages()]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")
        return self

    def resolved_stages(self) -> list[Stage]:
        """Explicit stages, or one per sweep value; every stage gets a name (a search has none: it makes
        one open-loop profile per probe)."""
        if self.mode == "search":
            return []
        if self.sweep is None:
            stages = list(self.stages)
        else:
            times = self.sweep.model_dump(include=set(StageTimes.model_fields))
            if self.sweep.concurrencies is not None:
                stages = [Stage(concurrency=c, **times) for c in self.sweep.concurrencies]
            else:
                stages = [Stage(rate=r, **times) for r in self.sweep.rates or []]
        named = []
        for index, stage in enumerate(stages):
            if stage.name is None:
                label = (
                    f"c{stage.concurrency}"
                    if stage.concurrency is not None
                    else f"r{stage.rate:g}"
                    if stage.rate is not None
                    else "trace"
                )
                named.append(stage.model_copy(update={"name": f"s{index}-{label}"}))
            else:
                named.append(stage)
        return named


class RunConfig(_Model):
    endpoint: str
    tasks: Path
    models: list[str] = Field(min_length=1)
    profile: Profile
    out_dir: Path = Path("results/load")
    run_id: str | None = None
    preflight: bool = True

    @model_validator(mode="after")
    def _weights(self) -> RunConfig:
        weights = self.profile.sampling.model_weights
        if weights is not None and set(weights) - set(self.models):
            unknown = sorted(set(weights) - set(self.models))
            raise ValueError(f"model_weights names models not in --models: {', '.join(unknown)}")
        return self


def validation_line(exc: ValidationError, whole: str) -> str:
    """A pydantic error as one line: the first error's location (``whole`` where it concerns the whole
    object; none where ``whole`` is empty) and message, and how many more errors there are."""
    error = exc.errors()[0]
    location = ".".join(str(part) for part in error["loc"]) or whole
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{location}: {message}{more}" if location else f"{message}{more}"


def load_profile(spec: str | Path, overrides: dict[str, Any] | None = None) -> Profile:
    """A profile from a file path, a built-in name or inline YAML/JSON; ``overrides`` merge on top."""
    text = str(spec)
    path = Path(text)
    builtin = PROFILES_DIR / f"{text}.yaml"
    if (
        path.suffix in (".yaml", ".yml", ".json")
        and not path.is_file()
        and "\n" not in text
        and "{" not in text
    ):
        raise ProfileError(f"profile file {text} does not exist")
    if path.is_file():
        where, source = str(path), path.read_text(encoding="utf-8")
    elif builtin.is_file():
        where, source = f"'{text}'", builtin.read_text(encoding="utf-8")
    else:
        where, source = "(inline)", text
    try:
        data = yaml.safe_load(source)
    except yaml.YAMLError as exc:
        raise ProfileError(f"profile {where} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        known = ", ".join(sorted(p.stem for p in PROFILES_DIR.glob("*.yaml")))
        raise ProfileError(f"profile {where} is neither a file, a built-in ({known}) nor a YAML mapping")
    for key, value in (overrides or {}).items():
        target = data
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    try:
        profile = Profile.model_validate(data)
    except ValidationError as exc:
        raise ProfileError(f"invalid profile {where}: {validation_line(exc, 'profile')}") from None
    if any(stage.trace is not None for stage in profile.resolved_stages()):
        from loadgen.schedule import build_plans  # reads every trace stage's trace: a bad one fails here

        try:
            build_plans(profile)
        except LoadgenError as exc:
            raise ProfileError(f"invalid profile {where}: {exc}") from None
    return profile
