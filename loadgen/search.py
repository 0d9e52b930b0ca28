"""SLO search: the highest open-loop rate whose percentiles meet every target, with its interval.

``run_search(config)`` for a profile with ``mode: search`` (``m3bench load search`` or ``load run``):

1. **Bracket** geometrically from ``start_rate``: x ``growth`` while probes pass, / ``growth`` while they
   fail, inside [``min_rate``, ``max_rate``].
2. **Bisect** geometrically (the next rate is sqrt(low x high)) until high / low <= 1 + ``resolution``.
3. **Result**: R* = the highest passing rate; the knee (the highest rate that meets the targets) lies in
   [R*, first failing rate) as far as each probe's verdict holds at its stated confidence.

Each probe is an ordinary open-loop run (``run_load``, its own run directory under ``probes/``, every
record kept) of ``warmup_s`` then ``n`` measured requests. A target's percentile comes with the
distribution-free order-statistic interval (``loadgen.stats.quantile_ci``); ``n`` starts at the fewest
requests for which that interval exists (for the p99 at 95 %: 368, from 0.99^n <= 0.025) and the probe is
extended (another run at the same rate, its measured requests pooled; n doubled) while the verdict is
unresolved, up to ``max_requests``. A probe **passes** when every target's estimate is within its limit and
either the interval lies below the limit or its half-width is within ``precision`` (10 %) of the estimate;
it **fails** when some estimate is above its limit with the interval above it or the interval that precise;
otherwise it is **inconclusive** and, at ``max_requests``, counts as failing (R* errs low, never high).

A probe whose generator verdict is invalid (client or machine: the generator could not hold the rate or
time it) is re-run up to ``retries`` times and is never used as evidence; if it stays invalid the search
stops there and says so (``status: generator_limited``). ``search.json`` in the search's directory holds
the settings, every probe (rate, requests, estimates and intervals, verdict, validity, run directories)
and the result.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from loadgen.profile import LoadgenError, Profile, RunConfig
from loadgen.records import RequestRecord, read_records
from loadgen.search_spec import SearchSpec, Target
from loadgen.stats import min_samples_for_ci, quantile_ci
from loadgen.timings import e2e_from_scheduled_s, itl_s, tpot_s, ttft_from_scheduled_s

Verdict = Literal["pass", "fail", "inconclusive", "invalid"]
SEARCH_SCHEMA_VERSION = 1
FORMULAS = {
    "probe": "open loop at the probe's rate: warmup_s, then n measured requests (measure_requests)",
    "target_value": "ttft/e2e from the scheduled send, tpot, itl gaps; a failed request counts as +inf",
    "percentile": "linear interpolation between order statistics (loadgen/stats.py)",
    "interval": "order statistics [x_(l), x_(u)]: l largest with P(B <= l-1) <= (1-c)/2, u smallest with "
    "P(B >= u) <= (1-c)/2, B ~ Binomial(n, q)",
    "min_requests": "smallest n with an interval: q^n <= (1-c)/2 (p99 at 95 %: 368)",
    "pass": "every estimate <= max_s and (interval high <= max_s or half-width <= precision x estimate)",
    "fail": "some estimate > max_s and (interval low > max_s or half-width <= precision x estimate)",
    "inconclusive": "neither: the probe is extended (n doubled, pooled) up to max_requests, "
    "then counts as fail",
    "bracket": "rate x growth while passing, / growth while failing",
    "bisect": "next rate sqrt(low x high) until high / low <= 1 + resolution",
    "result": "R* = highest passing rate; the knee lies in [R*, lowest failing rate)",
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TargetEstimate(_Model):
    metric: str
    quantile: float
    max_s: float
    n: int
    estimate_s: float | None
    low_s: float | None
    high_s: float | None
    verdict: Verdict


class Probe(_Model):
    index: int
    rate: float
    phase: Literal["bracket", "bisect"]
    requests: int = Field(description="measured requests pooled into the verdict")
    run_dirs: list[str] = Field(description="every run of this probe, invalid attempts included")
    targets: list[TargetEstimate]
    verdict: Verdict
    invalid_reasons: list[str] = Field(default_factory=list)
    achieved_rate: float | None = None


class SearchResult(_Model):
    status: Literal["found", "below_min_rate", "above_max_rate", "generator_limited"]
    r_star: float | None = Field(description="highest rate that passed (requests/s)")
    interval: tuple[float | None, float | None] = Field(description="[R*, lowest failing rate)")
    resolution: float
    note: str


class SearchReport(_Model):
    schema_version: int = SEARCH_SCHEMA_VERSION
    run_id: str
    endpoint: str
    models: list[str]
    spec: SearchSpec
    probes: list[Probe]
    result: SearchResult | None = None
    formulas: dict[str, str] = Field(default_factory=lambda: dict(FORMULAS))


def target_values(records: Sequence[RequestRecord], metric: str) -> list[float]:
    """The values a target's percentile is taken over (FORMULAS target_value)."""
    values: list[float] = []
    for record in records:
        if record.status != "ok":
            values.append(math.inf)
            continue
        if metric == "itl":
            values.extend(itl_s(record))
            continue
        value = {
            "ttft": ttft_from_scheduled_s,
            "e2e": e2e_from_scheduled_s,
            "tpot": tpot_s,
        }[metric](record)
        if value is not None:
            values.append(value)
    return values


def judge_target(
    records: Sequence[RequestRecord], target: Target, confidence: float, precision: float
) -> TargetEstimate:
    values = target_values(records, target.metric)
    if not values:
        return TargetEstimate(
            metric=target.metric,
            quantile=target.quantile,
            max_s=target.max_s,
            n=0,
            estimate_s=None,
            low_s=None,
            high_s=None,
            verdict="inconclusive",
        )
    ci = quantile_ci(values, target.quantile, confidence)
    precise = ci.relative_half_width is not None and ci.relative_half_width <= precision
    verdict: Verdict = "inconclusive"
    if ci.estimate <= target.max_s and ((ci.high is not None and ci.high <= target.max_s) or precise):
        verdict = "pass"
    elif ci.estimate > target.max_s and ((ci.low is not None and ci.low > target.max_s) or precise):
        verdict = "fail"
    return TargetEstimate(
        metric=target.metric,
        quantile=target.quantile,
        max_s=target.max_s,
        n=ci.n,
        estimate_s=ci.estimate if math.isfinite(ci.estimate) else None,
        low_s=ci.low if ci.low is not None and math.isfinite(ci.low) else None,
        high_s=ci.high if ci.high is not None and math.isfinite(ci.high) else None,
        verdict=verdict,
    )


def combine(estimates: Sequence[TargetEstimate]) -> Verdict:
    verdicts = {estimate.verdict for estimate in estimates}
    if "fail" in verdicts:
        return "fail"
    if verdicts == {"pass"}:
        return "pass"
    return "inconclusive"


def probe_profile(base: Profile, spec: SearchSpec, rate: float, requests: int, seed: int) -> Profile:
    """An open-loop profile of one stage: ``warmup_s`` at ``rate`` then ``requests`` measured ones."""
    data = base.model_dump(exclude={"mode", "search", "stages", "sweep", "name", "seed"})
    stage = {"name": f"r{rate:.4g}", "rate": rate, "warmup_s": spec.warmup_s, "measure_requests": requests}
    return Profile.model_validate(
        {**data, "name": f"{base.name}-probe", "mode": "open", "stages": [stage], "seed": seed}
    )


RunLoad = Callable[[RunConfig], Any]


class Search:
    """One search; ``run_load`` is injected so the bracketing and bisection logic can be tested alone."""

    def __init__(self, config: RunConfig, run_load: RunLoad, say: Callable[[str], None] = print) -> None:
        if config.profile.mode != "search" or config.profile.search is None:
            raise LoadgenError("an SLO search needs a profile with mode: search and a search section")
        assert config.run_id is not None
        self.config, self.run_load, self.say = config, run_load, say
        self.spec: SearchSpec = config.profile.search
        self.dir = config.out_dir / config.run_id
        self.dir.mkdir(parents=True, exist_ok=True)
        levels = [target.quantile for target in self.spec.targets]
        self.first_n = self.spec.min_requests or max(
            min_samples_for_ci(level, self.spec.confidence) for level in levels
        )
        self.first_n = min(self.first_n, self.spec.max_requests)
        self.report = SearchReport(
            run_id=config.run_id,
            endpoint=config.endpoint,
            models=config.models,
            spec=self.spec,
            probes=[],
        )
        self.runs = 0

    def _write(self) -> None:
        temporary = self.dir / ".search.json.tmp"
        temporary.write_text(self.report.model_dump_json(indent=2), encoding="utf-8")
        temporary.replace(self.dir / "search.json")

    def _one_run(self, rate: float, requests: int) -> tuple[list[RequestRecord], Any, str]:
        self.runs += 1
        run_id = f"probe-{self.runs:02d}-r{rate:.4g}"
        profile = probe_profile(
            self.config.profile, self.spec, rate, requests, self.config.profile.seed + self.runs
        )
        config = self.config.model_copy(
            update={
                "profile": profile,
                "run_id": run_id,
                "out_dir": self.dir / "probes",
                "preflight": self.config.preflight and self.runs == 1,
            }
        )
        result = self.run_load(config)
        records = [r for r in read_records(result.run_dir / "records.jsonl") if r.phase == "measure"]
        return records, result.summary.stages[0] if result.summary.stages else None, run_id

    def probe(self, rate: float, phase: Literal["bracket", "bisect"]) -> Probe:
        spec = self.spec
        pooled: list[RequestRecord] = []
        run_dirs: list[str] = []
        requests = self.first_n
        reasons: list[str] = []
        achieved: float | None = None
        estimates: list[TargetEstimate] = []
        verdict: Verdict = "inconclusive"
        while True:
            for _attempt in range(spec.retries + 1):
                records, stage, run_id = self._one_run(rate, requests)
                run_dirs.append(f"probes/{run_id}")
                reasons = (
                    list(stage.generator.invalid_reasons) if stage is not None else ["no measured stage"]
                )
                if stage is not None and stage.generator.valid:
                    achieved = stage.throughput.achieved_send_rate_per_s
                    break
                self.say(f"[search] {rate:.4g}/s: invalid probe, not used as evidence: {'; '.join(reasons)}")
            else:
                verdict = "invalid"  # every attempt at this pool size was invalid
                break
            pooled += records
            estimates = [judge_target(pooled, t, spec.confidence, spec.precision) for t in spec.targets]
            verdict = combine(estimates)
            if verdict != "inconclusive" or len(pooled) >= spec.max_requests:
                break
            requests = min(len(pooled), spec.max_requests - len(pooled))  # doubles the pool
        return Probe(
            index=len(self.report.probes),
            rate=rate,
            phase=phase,
            requests=len(pooled),
            run_dirs=run_dirs,
            targets=estimates,
            verdict=verdict,
            invalid_reasons=reasons if verdict == "invalid" else [],
            achieved_rate=achieved if verdict != "invalid" else None,
        )

    def _passes(self, rate: float, phase: Literal["bracket", "bisect"]) -> bool | None:
        """Probe ``rate`` and store the probe: True when it passed, False when it failed (inconclusive at
        max_requests counts as failing), None when the generator could not hold the rate."""
        probe = self.probe(rate, phase)
        self.report.probes.append(probe)
        if probe.verdict == "invalid":
            return None  # the search stops here; _finish writes the report
        self._write()
        shown = ", ".join(
            f"{t.metric} p{t.quantile * 100:g} {_ms(t.estimate_s)} [{_ms(t.low_s)}, {_ms(t.high_s)}] ms"
            for t in probe.targets
        )
        self.say(f"[search] {probe.phase} {probe.rate:.4g}/s n={probe.requests}: {probe.verdict} ({shown})")
        return probe.verdict == "pass"

    def _finish(self, status: str, low: float | None, high: float | None, note: str) -> SearchReport:
        self.report.result = SearchResult.model_validate(
            {
                "status": status,
                "r_star": low,
                "interval": (low, high),
                "resolution": self.spec.resolution,
                "note": note,
            }
        )
        self._write()
        return self.report

    def _limited(self, rate: float, low: float | None, high: float | None) -> SearchReport:
        return self._finish("generator_limited", low, high, f"the generator could not hold {rate:.4g}/s")

    def run(self) -> SearchReport:
        spec = self.spec
        low: float | None = None
        high: float | None = None
        rate = spec.start_rate
        while low is None or high is None:
            passed = self._passes(rate, "bracket")
            if passed is None:
                return self._limited(rate, low, high)
            if passed:
                low = rate
                if high is None:
                    if rate >= spec.max_rate:
                        return self._finish("above_max_rate", low, None, "every probe up to max_rate passed")
                    rate = min(rate * spec.growth, spec.max_rate)
            else:
                high = rate
                if low is None:
                    if rate <= spec.min_rate:
                        return self._finish("below_min_rate", None, high, "no probe down to min_rate passed")
                    rate = max(rate / spec.growth, spec.min_rate)
        while high / low > 1 + spec.resolution:
            rate = math.sqrt(low * high)
            passed = self._passes(rate, "bisect")
            if passed is None:
                return self._limited(rate, low, high)
            if passed:
                low = rate
            else:
                high = rate
        return self._finish(
            "found",
            low,
            high,
            f"the knee lies in [{low:.4g}, {high:.4g}) requests/s (high / low <= 1 + {spec.resolution:g})",
        )


def _ms(value: float | None) -> str:
    return f"{value * 1e3:.1f}" if value is not None else "-"


def run_search(config: RunConfig, say: Callable[[str], None] = print) -> SearchReport:
    """Run the search ``config.profile.search`` describes against ``config.endpoint``."""
    import secrets
    import time

    from loadgen.run import run_load

    run_id = config.run_id or time.strftime("%Y%m%d-%H%M%S") + "-search-" + secrets.token_hex(2)
    config = config.model_copy(
        update={"run_id": run_id, "tasks": config.tasks.resolve(), "out_dir": config.out_dir.resolve()}
    )
    return Search(config, run_load, say).run()


def read_search(path: Path) -> SearchReport:
    return SearchReport.model_validate_json(path.read_text(encoding="utf-8"))


def describe(report: SearchReport) -> str:
    result = report.result
    if result is None:
        return "search did not finish"
    low, high = result.interval
    return json.dumps({"status": result.status, "r_star": result.r_star, "interval": [low, high]})
