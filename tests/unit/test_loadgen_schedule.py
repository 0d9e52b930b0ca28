"""Open-loop schedules and phases: absolute targets, seeds, ramps, worker splits."""

from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import replace

import pytest

from loadgen.profile import Arrival, Profile
from loadgen.schedule import (
    ClosedLoopPhases,
    OpenLoopPhases,
    StagePlan,
    arrivals,
    build_plans,
    share,
    time_at,
)


def _plan(
    rate: float = 10.0,
    previous: float | None = None,
    ramp: float = 0.0,
    warmup: float = 0.0,
    measure: float | None = 10.0,
    count: int | None = None,
    cooldown: float = 0.0,
    closed: bool = False,
    drain: float | None = None,
) -> StagePlan:
    """One stage's plan: open loop at ``rate`` requests/s, or with ``closed`` that many streams."""
    return StagePlan(
        index=0,
        name="s",
        mode="closed" if closed else "open",
        target=rate,
        previous_target=rate if previous is None else previous,
        ramp_s=ramp,
        warmup_s=warmup,
        measure_s=measure,
        measure_requests=count,
        cooldown_s=cooldown,
        drain_limit_s=drain,
    )


def _offsets(plan: StagePlan, arrival: Arrival, seed: int, n: int) -> list[float]:
    return [offset for _, offset, _ in itertools.islice(arrivals(plan, arrival, seed), n)]


def test_constant_arrivals_are_exact_multiples() -> None:
    offsets = _offsets(_plan(rate=4.0), Arrival(kind="constant"), 0, 5)
    assert offsets == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])


def test_poisson_rate_and_seed() -> None:
    first = _offsets(_plan(rate=50.0), Arrival(kind="poisson"), 7, 5000)
    assert first == _offsets(_plan(rate=50.0), Arrival(kind="poisson"), 7, 5000)
    assert first != _offsets(_plan(rate=50.0), Arrival(kind="poisson"), 8, 5000)
    assert len(first) / first[-1] == pytest.approx(50.0, rel=0.05)
    gaps = [b - a for a, b in itertools.pairwise(first)]
    assert statistics.pstdev(gaps) / statistics.mean(gaps) == pytest.approx(1.0, rel=0.1)


@pytest.mark.parametrize("burstiness", [0.25, 4.0])
def test_gamma_burstiness_sets_the_variability(burstiness: float) -> None:
    offsets = _offsets(_plan(rate=20.0), Arrival(kind="gamma", burstiness=burstiness), 1, 8000)
    gaps = [b - a for a, b in itertools.pairwise(offsets)]
    assert statistics.mean(gaps) == pytest.approx(1 / 20.0, rel=0.08)
    cv = statistics.pstdev(gaps) / statistics.mean(gaps)
    assert cv == pytest.approx(1 / math.sqrt(burstiness), rel=0.12)


def test_linear_ramp_inverts_the_cumulative_rate() -> None:
    plan = _plan(rate=10.0, previous=2.0, ramp=4.0, warmup=4.0)
    # cumulative arrivals by t=4: 2*4 + (10-2)*4/2 = 24
    assert time_at(plan, 24.0) == pytest.approx(4.0)
    assert time_at(plan, 34.0) == pytest.approx(5.0)
    t = time_at(plan, 5.0)
    assert 2.0 * t + 1.0 * t * t == pytest.approx(5.0)  # rate(t) = 2 + 2t
    from_zero = _plan(rate=10.0, previous=0.0, ramp=2.0, warmup=2.0)
    assert time_at(from_zero, 10.0) == pytest.approx(2.0)


def test_workers_split_the_global_sequence_without_gaps_or_overlap() -> None:
    plan = _plan(rate=30.0)
    offsets = _offsets(plan, Arrival(kind="poisson"), 3, 300)
    mine = {k: [o for i, o in enumerate(offsets) if i % 3 == k] for k in range(3)}
    assert sorted(mine[0] + mine[1] + mine[2]) == offsets


def test_open_loop_phases_by_time_and_count() -> None:
    phases = OpenLoopPhases(_plan(warmup=1.0, measure=2.0, cooldown=1.0))
    got = [phases.phase(t) for t in (0.5, 1.0, 2.9, 3.0, 3.9, 4.0)]
    assert got == ["warmup", "measure", "measure", "cooldown", "cooldown", None]
    counted = OpenLoopPhases(_plan(warmup=0.0, measure=None, count=3, cooldown=0.5))
    got = [counted.phase(t) for t in (0.0, 0.1, 0.2, 0.3, 0.7, 0.81)]
    assert got == ["measure", "measure", "measure", "cooldown", "cooldown", None]


def test_closed_loop_phases_split_the_count() -> None:
    plan = _plan(4, warmup=1.0, measure=None, count=5, cooldown=1.0, closed=True)
    assert [share(5, 2, i) for i in range(2)] == [3, 2]
    phases = ClosedLoopPhases(plan, workers=2, worker_index=1)
    assert phases.phase(0.5) == "warmup"
    assert [phases.phase(1.1), phases.phase(1.2), phases.phase(1.3)] == ["measure", "measure", "cooldown"]
    assert not phases.done(2.2)
    assert phases.done(2.31)


def test_a_drained_closed_loop_stage_waits_for_its_measured_requests() -> None:
    plan = _plan(4, warmup=1.0, measure=2.0, cooldown=0.5, closed=True, drain=10.0)
    phases = ClosedLoopPhases(plan, workers=1, worker_index=0)
    assert phases.phase(1.5) == "measure"
    phases.measuring = 1  # the worker counts the measure-phase request it sent
    assert not phases.done(3.4)  # the cooldown is not over
    assert phases.phase(3.6) == "cooldown"  # streams keep the load on
    assert not phases.done(3.6)  # one measured request is still in flight
    phases.measuring = 0
    assert phases.done(3.6)
    phases.measuring = 1
    assert not phases.done(13.4)
    assert phases.done(13.5)  # at most drain_limit_s past the cooldown
    undrained = ClosedLoopPhases(replace(plan, drain_limit_s=None), workers=1, worker_index=0)
    undrained.measuring = 1
    assert not undrained.done(3.4)
    assert undrained.done(3.5)


def test_a_drained_stage_holds_at_most_the_request_timeout() -> None:
    profile = Profile.model_validate(
        {
            "mode": "closed",
            "stages": [
                {"concurrency": 2, "measure_s": 5, "drain_measured": True},
                {"concurrency": 4, "measure_s": 5},
            ],
            "request": {"timeout_s": 120},
        }
    )
    drained, plain = build_plans(profile)
    assert (drained.drain_limit_s, drained.hold_s) == (120, 120)
    assert (plain.drain_limit_s, plain.hold_s) == (None, 0.0)


def test_drain_measured_is_refused_in_open_loop() -> None:
    with pytest.raises(ValueError, match="drain_measured applies to closed-loop stages only"):
        Profile.model_validate(
            {"mode": "open", "stages": [{"rate": 1, "measure_s": 5, "drain_measured": True}]}
        )


def test_sweep_expands_to_named_plans_with_ramps() -> None:
    profile = Profile.model_validate(
        {"mode": "open", "sweep": {"rates": [1, 2.5], "ramp_s": 2, "warmup_s": 3, "measure_s": 5}}
    )
    plans = build_plans(profile)
    assert [p.name for p in plans] == ["s0-r1", "s1-r2.5"]
    assert [(p.previous_target, p.target) for p in plans] == [(0.0, 1.0), (1.0, 2.5)]
    assert plans[0].planned_s == 8.0
