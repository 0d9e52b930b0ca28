"""When requests are sent: stage plans, open-loop arrival schedules and the phase of each request.

Open loop: one *global* arrival sequence per stage, generated from the seed in unit-rate time and
mapped onto the stage's rate profile (constant, or a linear ramp from the previous stage's rate) by
inverting the cumulative rate. Arrival times are absolute offsets from the stage start, never
accumulated sleeps. Every worker generates the same sequence and sends arrival ``i`` only when
``i % workers == worker_index``, so N workers together send exactly the target process, and the
phase of each arrival (warmup/measure/cooldown) is the same whichever worker sends it.

Closed loop: each worker tags its own sends by time since the stage start and by its share of the
stage's ``measure_requests``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass

from loadgen.profile import Arrival, Profile, SessionSpec, Stage, TraceSpec
from loadgen.records import Mode, Phase


@dataclass(frozen=True)
class StagePlan:
    index: int
    name: str
    mode: Mode
    target: float  # concurrency or requests/s
    previous_target: float  # where a ramp starts
    ramp_s: float
    warmup_s: float
    measure_s: float | None
    measure_requests: int | None
    cooldown_s: float
    trace: TraceSpec | None = None  # a trace stage: one arrival per row (loadgen.traces.replay)
    sessions: SessionSpec | None = None  # a session stage: each arrival starts a conversation
    # closed loop, the stage's drain_measured: hold the load until its measured requests have ended, at
    # most this long (the request timeout) past the cooldown; None: no hold
    drain_limit_s: float | None = None

    @property
    def hold_s(self) -> float:
        """The longest the stage may run past its plan while its measured requests end."""
        return self.drain_limit_s or 0.0

    @property
    def planned_s(self) -> float | None:
        """Planned length when bounded by time; None when only a request count bounds it."""
        if self.measure_s is None:
            return None
        return self.warmup_s + self.measure_s + self.cooldown_s


def build_plans(profile: Profile) -> list[StagePlan]:
    plans: list[StagePlan] = []
    previous = 0.0
    for index, stage in enumerate(profile.resolved_stages()):
        if stage.trace is not None:
            plans.append(_trace_plan(index, stage, stage.trace))
            previous = plans[-1].target
            continue
        target = float(stage.concurrency if stage.concurrency is not None else stage.rate or 0.0)
        plans.append(
            StagePlan(
                index=index,
                name=stage.name or f"s{index}",
                mode="closed" if profile.mode == "closed" else "open",  # a search has no plans
                target=target,
                previous_target=previous if stage.ramp_s > 0 else target,
                ramp_s=stage.ramp_s,
                warmup_s=stage.warmup_s,
                measure_s=stage.measure_s,
                measure_requests=stage.measure_requests,
                cooldown_s=stage.cooldown_s,
                sessions=stage.sessions,
                drain_limit_s=profile.request.timeout_s if stage.drain_measured else None,
            )
        )
        previous = target
    return plans


def _trace_plan(index: int, stage: Stage, spec: TraceSpec) -> StagePlan:
    """A trace stage: target = the trace's mean rate; the measure phase runs from warmup to the trace's
    end (plus ``TAIL_S``, so the last row goes out before a worker reports the stage done), unless
    ``measure_s`` ends it sooner."""
    from loadgen.traces import replay
    from loadgen.traces.formats import TraceError
    from loadgen.traces.transform import offered_rate

    chosen = replay.rows(spec)
    span = replay.span_s(spec)
    if stage.warmup_s > 0 and stage.warmup_s >= span:
        raise TraceError(f"stage {index}: warmup_s {stage.warmup_s:g} s covers the whole trace ({span:g} s)")
    until_end = span - stage.warmup_s + replay.TAIL_S
    rate = offered_rate(chosen) or float(len(chosen))
    return StagePlan(
        index=index,
        name=stage.name or f"s{index}",
        mode="open",
        target=rate,
        previous_target=rate,
        ramp_s=0.0,
        warmup_s=stage.warmup_s,
        measure_s=min(stage.measure_s, until_end) if stage.measure_s is not None else until_end,
        measure_requests=stage.measure_requests,
        cooldown_s=stage.cooldown_s,
        trace=spec,
    )


def share(total: int, workers: int, index: int) -> int:
    """This worker's part of ``total`` when ``workers`` split it as evenly as possible."""
    return total // workers + (1 if index < total % workers else 0)


def time_at(plan: StagePlan, units: float) -> float:
    """Seconds from the stage start at which the cumulative rate reaches ``units`` arrivals."""
    start, end, ramp = plan.previous_target, plan.target, plan.ramp_s
    if ramp <= 0 or start == end:
        return units / end
    slope = (end - start) / ramp  # rate(t) = start + slope * t during the ramp
    at_ramp_end = start * ramp + slope * ramp * ramp / 2
    if units >= at_ramp_end:
        return ramp + (units - at_ramp_end) / end
    # solve slope/2 t^2 + start t - units = 0 for the root in [0, ramp]
    return (-start + math.sqrt(start * start + 2 * slope * units)) / slope


def unit_gaps(arrival: Arrival, rng: random.Random) -> Iterator[float]:
    """Inter-arrival gaps of a unit-rate process (mean 1)."""
    if arrival.kind == "constant":
        while True:
            yield 1.0
    elif arrival.kind == "poisson":
        while True:
            yield rng.expovariate(1.0)
    else:
        shape = arrival.burstiness
        while True:
            yield rng.gammavariate(shape, 1.0 / shape)


def arrivals(plan: StagePlan, arrival: Arrival, seed: int) -> Iterator[tuple[int, float, random.Random]]:
    """(global index, offset in seconds, the stage's shared RNG) for every arrival of an open-loop stage.

    The RNG is handed out so the caller draws the task for arrival ``i`` from the same stream at the
    same point on every worker; it must draw the same number of values for every arrival.
    """
    rng = random.Random(f"m3bench:{seed}:{plan.index}")
    if plan.trace is not None:  # one arrival per row, at the row's offset; the sequence ends with the trace
        from loadgen.traces import replay

        for index, row in enumerate(replay.rows(plan.trace)):
            yield index, row.at_s, rng
        return
    gaps = unit_gaps(arrival, random.Random(f"m3bench-gaps:{seed}:{plan.index}"))
    units = 0.0
    index = 0
    while True:
        yield index, time_at(plan, units), rng
        units += next(gaps)
        index += 1


class OpenLoopPhases:
    """Phase of each global arrival; identical on every worker because it only looks at the sequence."""

    def __init__(self, plan: StagePlan) -> None:
        self.plan = plan
        self.measured = 0
        self.measure_end_s: float | None = None

    def phase(self, offset_s: float) -> Phase | None:
        """The arrival's phase; None once the stage's cooldown is over."""
        plan = self.plan
        if offset_s < plan.warmup_s:
            return "warmup"
        if self.measure_end_s is None:
            by_time = plan.measure_s is not None and offset_s >= plan.warmup_s + plan.measure_s
            by_count = plan.measure_requests is not None and self.measured >= plan.measure_requests
            if not (by_time or by_count):
                self.measured += 1
                return "measure"
            self.measure_end_s = plan.warmup_s + plan.measure_s if by_time and plan.measure_s else offset_s
        if offset_s < self.measure_end_s + plan.cooldown_s:
            return "cooldown"
        return None


class ClosedLoopPhases:
    """Phase of each send of one worker in a closed-loop stage. With ``plan.drain_limit_s`` the stage is
    not done while a measure-phase request of this worker is in flight (``measuring``, kept by the
    worker), at most that long past the measure window and cooldown."""

    def __init__(self, plan: StagePlan, workers: int, worker_index: int) -> None:
        self.plan = plan
        self.quota = (
            None if plan.measure_requests is None else share(plan.measure_requests, workers, worker_index)
        )
        self.sent_measured = 0
        self.measure_end_s: float | None = None
        self.measuring = 0  # measure-phase requests in flight

    def _measure_over(self, elapsed_s: float) -> bool:
        plan = self.plan
        if self.measure_end_s is not None:
            return True
        by_time = plan.measure_s is not None and elapsed_s >= plan.warmup_s + plan.measure_s
        by_count = self.quota is not None and self.sent_measured >= self.quota
        if by_time or by_count:
            self.measure_end_s = plan.warmup_s + plan.measure_s if by_time and plan.measure_s else elapsed_s
            return True
        return False

    def phase(self, elapsed_s: float) -> Phase:
        if elapsed_s < self.plan.warmup_s:
            return "warmup"
        if self._measure_over(elapsed_s):
            return "cooldown"
        self.sent_measured += 1
        return "measure"

    def done(self, elapsed_s: float) -> bool:
        """True once measuring is over and the cooldown has passed (and, with ``drain_limit_s``, the
        measured requests have ended)."""
        if elapsed_s < self.plan.warmup_s or not self._measure_over(elapsed_s):
            return False
        assert self.measure_end_s is not None
        after = elapsed_s - self.measure_end_s - self.plan.cooldown_s
        if after < 0:
            return False
        limit = self.plan.drain_limit_s
        return limit is None or self.measuring <= 0 or after >= limit
