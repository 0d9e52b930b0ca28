"""What `m3bench demo` runs: models, load levels and sizes, validated once (pydantic)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from serving.embedded.spec import FAMILIES, VARIANTS, ModelFamily, Variant, model_name

EMBEDDED = [model_name(f, v) for f in FAMILIES.values() for v in VARIANTS.values()]
# serving.embedded.train.TRAIN_PROBLEMS (not imported: it pulls in torch; a unit test keeps them equal)
TRAINED_PROBLEMS = 4


def scale_id(model: str) -> str:
    """The served name of the scale model's 2-replica deployment."""
    return f"{model}-x2"


def embedded_spec(name: str) -> tuple[ModelFamily, Variant]:
    """The family and variant of an embedded model (``tiny-llava-awq-g32`` -> tiny-llava, awq-g32)."""
    for family in FAMILIES.values():
        for variant in VARIANTS.values():
            if model_name(family, variant) == name:
                return family, variant
    raise KeyError(name)


class DemoSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    results_root: Path = Field(default=Path("results"), description="Each run gets RESULTS_ROOT/<run id>/.")
    models: list[str] = Field(
        default=["tiny-llava-awq", "tiny-qwen2vl-awq", "tiny-llava-bf16"],
        min_length=1,
        description="Embedded models swept at one replica each.",
    )
    scale_model: str | None = Field(
        default="tiny-llava-awq", description="Also swept at 2 replicas, to check the planner."
    )
    levels: Literal["probe", "fixed"] = Field(
        default="probe",
        description="probe: a short run at 1 and probe_concurrency streams estimates where throughput stops "
        "growing, and each 1-replica sweep's levels are placed around it (the 2-replica sweep uses its "
        "model's levels x replicas); fixed: `concurrencies` as given.",
    )
    concurrencies: list[int] = Field(default=[1, 2, 4, 8], min_length=1, description="levels: fixed.")
    probe_concurrency: int = Field(
        default=8,
        ge=2,
        description="The probe's high level. On 0.4-core engines a 16-stream burst of image prefills "
        "outlasted the 8 s probe (0.02-0.04 req/s measured: no knee, so the slow 5-level ladder; 15.4 min in "
        "all); 8 streams halve the burst and still pass the knee of every embedded model (3-5 streams).",
    )
    probe_warmup_s: float = Field(default=2.0, ge=0)
    probe_measure_s: float = Field(
        default=8.0, gt=0, description="At 6 s (and 0.4-core engines) a 16-stream batch round outlasted it."
    )
    max_concurrency: int = Field(default=96, ge=1, description="No probed level above this.")
    warmup_s: float = Field(default=2.0, ge=0)
    ramp_s: float = Field(
        default=2.0,
        ge=0,
        description="A level's new streams start spread over this many seconds of its warmup (0: together). "
        "Streams started together with one fixed output length stay in lockstep: they are sent, prefilled "
        "and finished as one batch, so every TTFT is the whole batch's prefill and the level's p99 measures "
        "the convoy, not the load (docs/results/demo, 'Lockstep').",
    )
    measure_s: float = Field(default=12.0, gt=0)
    drain_measured: bool = Field(
        default=True,
        description="Each level keeps its streams going until its measured requests have ended, before the "
        "next level starts (loadgen's stage drain_measured). Without it the requests in flight at the end "
        "of a 12 s window (a third of them at 10 streams) finished under the next, 2-3x higher level's "
        "prefills: their TPOT doubled, and the level's p99 TPOT was the next level's (docs/results/demo).",
    )
    generator_priority: Literal["default", "high", "realtime"] = Field(
        default="realtime",
        description="The load generator's scheduling: realtime (SCHED_FIFO, root or CAP_SYS_NICE) lets it "
        "preempt the serving stack for the few ms each read needs; it falls back to high (nice -10), then "
        "default, with a warning where the privilege is missing.",
    )
    problems_per_language: int = Field(default=8, ge=1, description="HumanEval problems per language.")
    max_tokens: int = Field(default=64, ge=1, description="Longest output of the sweeps (ignore_eos).")
    max_tokens_min: int | None = Field(
        default=32,
        ge=1,
        description="Shortest output of the sweeps: each request's length is drawn from [max_tokens_min, "
        "max_tokens] (mean 48). One fixed length kept closed-loop streams in lockstep (sent, prefilled and "
        "finished together), so a level's TTFT was its convoy's prefill; a spread of lengths breaks the "
        "convoys. None: every output max_tokens long.",
    )
    accuracy: bool = Field(
        default=True,
        description="Accuracy phase: every model at one stream, natural output lengths, each task once.",
    )
    accuracy_problems_per_language: int = Field(
        default=2,
        ge=1,
        le=TRAINED_PROBLEMS,
        description="Problems per language the accuracy phase asks: the demo set's first, all among the "
        f"{TRAINED_PROBLEMS} the embedded models were trained on (2 x 10 languages x image/text = 40 tasks "
        "per model; 4 took the demo past 15 minutes).",
    )
    accuracy_languages: list[str] | None = Field(
        default=None, description="Languages the accuracy phase asks (default: all of the task set)."
    )
    accuracy_budget_s: float = Field(
        default=600.0,
        gt=0,
        description="Longest measure time of one accuracy run (a model that never stops).",
    )
    saturation_model: str | None = Field(
        default="tiny-llava-awq", description="Also asked every accuracy task at the highest concurrency."
    )
    nodes: int = Field(
        default=1,
        ge=1,
        description="Ray nodes (head + workers) on this machine: one, since each node adds its own raylet "
        "and agents on the same cores (2 replicas need no second node).",
    )
    ingress: Literal["proxy", "haproxy"] = Field(
        default="haproxy",
        description="haproxy: Ray's high-throughput mode (HAProxy in front, each model's LLMServer streaming "
        "directly at <endpoint>/<id>); the best mode measured on both machines (docs/serving.md, 'Serving "
        "modes'). proxy: Ray Serve's Python HTTP proxy and ingress (0 ms stream batching).",
    )
    replica_cpu_quota: float | None = Field(
        default=0.4,
        gt=0,
        description="Cap each vLLM engine at this many cores (a CPU cgroup quota; root), so one replica is a "
        "fixed slice of the machine and N replicas are N such slices (m3bench.demo.cpuslice). The slices "
        "of the 2-replica sweep and the rest of the stack must fit the 2 cores together, or the replicas "
        "get less than their slice: the rest took 0.95 core there (Ray's daemons 0.33, Prometheus 0.20-0.27, "
        "LLMServers 0.16, generator 0.15), and two 0.5-core engines got 0.93 of their 1.08 (machine 98 % "
        "busy), so two replicas carried 1.70x one (docs/results/demo). 2 x 0.4 + 0.95 leaves headroom.",
    )
    ray_metrics_interval_ms: int = Field(
        default=10_000,
        ge=100,
        description="How often every Ray process exports metrics (RAY_metrics_report_interval_ms; 10 s is "
        "Ray's default): a shorter clock costs CPU in every Ray process on the measured cores.",
    )
    threads_per_replica: int = Field(
        default=1, ge=1, description="CPU threads of each engine: one replica = this many cores."
    )
    search_models: list[str] = Field(
        default=[],
        description="Served models to SLO-search after the sweeps (loadgen.search): '<model>' at one "
        "replica, '<model>-x2' (the scale model) at two. Each gets R* with its interval; both of one model "
        "give a planner check on R*.",
    )
    search_quantile: float = Field(
        default=0.9,
        gt=0,
        lt=1,
        description="The TTFT percentile the search holds to slo_ttft_p99_s. A p99 probe needs 368 requests "
        "for its 95 % interval to exist (0.99^n <= 0.025), ~6 min at the 1 req/s one half-core replica "
        "carries; a p90 probe needs 35, so the demo's search states a p90 target.",
    )
    search_resolution: float = Field(default=0.15, gt=0, description="Stop when high / low <= 1 + this.")
    search_max_requests: int = Field(
        default=140, ge=10, description="A probe is extended (doubled from 35) up to this: 140 s at 1 req/s."
    )
    slo_ttft_p99_s: float = Field(default=2.0, gt=0)
    slo_tpot_p99_s: float = Field(default=0.25, gt=0)
    price_per_core_hour: float = Field(default=0.04, ge=0, description="USD, for cost per 1M tokens.")
    serve_port_base: int = Field(default=29100, ge=1024, le=60000)
    http_port: int = Field(default=28000, ge=1024, le=65535)

    @model_validator(mode="after")
    def _known(self) -> DemoSettings:
        served = [*self.models, *([scale_id(self.scale_model)] if self.scale_model else [])]
        unsearchable = [m for m in self.search_models if m not in served]
        if unsearchable:
            listed = ", ".join(served)
            raise ValueError(f"search_models {', '.join(unsearchable)}: not served (served: {listed})")
        named = [*self.models, self.scale_model or "", self.saturation_model or ""]
        unknown = sorted({m for m in named if m and m not in EMBEDDED})
        if unknown:
            raise ValueError(f"unknown embedded model(s) {', '.join(unknown)}; known: {', '.join(EMBEDDED)}")
        for field in ("scale_model", "saturation_model"):
            value = getattr(self, field)
            if value and value not in self.models:
                raise ValueError(f"{field} {value!r} must be one of models")
        if self.max_tokens_min is not None and self.max_tokens_min > self.max_tokens:
            raise ValueError(
                f"max_tokens_min ({self.max_tokens_min}) must be at most max_tokens ({self.max_tokens})"
            )
        if self.ramp_s > self.warmup_s:
            raise ValueError(f"ramp_s ({self.ramp_s}) must fit inside warmup_s ({self.warmup_s})")
        if self.accuracy_problems_per_language > self.problems_per_language:
            raise ValueError(
                f"accuracy_problems_per_language ({self.accuracy_problems_per_language}) must be at most "
                f"problems_per_language ({self.problems_per_language}): the accuracy set is in the demo's"
            )
        return self


Preset = Literal["full", "quick"]

PRESETS: dict[str, dict[str, object]] = {
    "full": {},
    # The reduced demo the end-to-end test runs: same stack and steps, fewer and shorter levels.
    "quick": {
        "levels": "fixed",  # no probe: CI checks the stack end to end, the full preset finds the knee
        "concurrencies": [1, 4],
        "warmup_s": 2.0,
        "measure_s": 8.0,
        "problems_per_language": 2,
        "max_tokens": 16,
        "max_tokens_min": 8,
        # 1 problem x 4 languages x (image, text-only) = 8 tasks per model; the budget bounds a model
        # that never stops (random weights answer up to each task's 768 tokens).
        "accuracy_problems_per_language": 1,
        "accuracy_languages": ["en", "zh", "ar", "hi"],
        "accuracy_budget_s": 60.0,
    },
}
