"""Capacity-planning math: pure functions over the load levels of one sweep (no I/O, no plotting).

A *level* is one stage of a load sweep (a closed-loop concurrency or an open-loop rate) reduced to the
numbers the planner needs. Rates are requests per second (``throughput``: the request rate the stage's token
flow carries over its measure window, FORMULAS), so closed-loop concurrencies are never read as request
rates. Every result carries the formula that produced it (``FORMULAS``), which the report prints next to it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

FORMULAS = {
    "throughput": "request-equivalent rate: output tokens that arrived in the measure window / window (s) / "
    "output tokens per ok measure-phase request (loadgen summary request_equivalent_per_s; the completion "
    "count where no usage was reported); not measured (none) for a closed-loop level whose window is shorter "
    "than its median E2E (the window saw part of a batch round, not a steady state)",
    "saturation_open": "first open-loop level with throughput / offered rate < saturation_follow",
    "saturation_closed": (
        "first closed-loop level whose throughput elasticity ((X_i - X_i-1) / X_i-1) / "
        "((c_i - c_i-1) / c_i-1) < saturation_elasticity"
    ),
    "capacity": "max throughput over the sweep's levels (a lower bound when no level saturated)",
    "sustainable_rate": (
        "levels sorted by offered load; k = last level such that levels 0..k all meet every SLO; "
        "X* = max throughput of levels 0..k; f = min over the SLOs level k+1 breaks of "
        "(limit - v_k) / (v_k+1 - v_k) (latency and accuracy assumed linear between levels); "
        "rate = X* + f * max(0, X_k+1 - X*); if every level meets the SLOs, rate = X*: the capacity when "
        "the sweep saturated (the SLOs do not bind below it), else a lower bound; levels above k+1 that meet "
        "every SLO again are named (recovered): the crossing is not resolved"
    ),
    "replicas": "ceil(target_rate * (1 + headroom) / (rate_per_replica * scaling_efficiency))",
    "predicted_rate": "N * rate_at_slo(1 replica) * scaling_efficiency (linear scaling model)",
    "prediction_error": "(predicted - measured) / measured",
    "tokens_per_request": "sum of usage completion_tokens / ok requests over the sweep's planned levels",
    "cost_per_million": (
        "price_per_accelerator_hour * accelerators_per_replica * replicas / "
        "(throughput * tokens_per_request * 3600) * 1e6"
    ),
    "pareto": "no other model has accuracy >= and p99 latency <=, with at least one strictly better",
}


@dataclass(frozen=True)
class Level:
    """One load level of a sweep; latencies in seconds, ``None`` where nothing was measured."""

    stage: str
    mode: Literal["closed", "open"]
    offered: float  # concurrency (closed) or requests/s (open)
    throughput: float | None
    output_tokens: int = 0
    ok: int = 0
    measured: int = 0
    ttft_p50: float | None = None
    ttft_p99: float | None = None
    itl_p50: float | None = None
    itl_p99: float | None = None
    tpot_p50: float | None = None
    tpot_p99: float | None = None
    e2e_p50: float | None = None
    e2e_p99: float | None = None
    accuracy: float | None = None
    graded: int = 0
    valid: bool = True
    invalid_reasons: tuple[str, ...] = ()

    @property
    def error_fraction(self) -> float | None:
        return (self.measured - self.ok) / self.measured if self.measured else None

    @property
    def follow(self) -> float | None:
        """Open loop: throughput / offered rate (1.0 while the server keeps up)."""
        if self.mode != "open" or self.throughput is None:
            return None
        return self.throughput / self.offered


@dataclass(frozen=True)
class Slos:
    """The user's service-level objectives. ``None`` leaves a limit unset."""

    ttft_p99_s: float | None = None
    itl_p99_s: float | None = None
    tpot_p99_s: float | None = None
    min_accuracy: float | None = None
    max_error_fraction: float = 0.01
    min_follow: float = 0.9  # open loop: a level that cannot keep up has a growing queue

    def describe(self) -> list[str]:
        parts = []
        for label, value in (("p99 TTFT", self.ttft_p99_s), ("p99 ITL", self.itl_p99_s)):
            if value is not None:
                parts.append(f"{label} <= {value * 1e3:g} ms")
        if self.tpot_p99_s is not None:
            parts.append(f"p99 TPOT <= {self.tpot_p99_s * 1e3:g} ms")
        if self.min_accuracy is not None:
            parts.append(f"accuracy >= {self.min_accuracy:.0%}")
        parts.append(f"non-ok requests <= {self.max_error_fraction:.1%}")
        parts.append(f"open loop: throughput >= {self.min_follow:.0%} of the offered rate")
        return parts


@dataclass(frozen=True)
class Check:
    name: str
    value: float | None
    limit: float
    at_most: bool  # True: value <= limit passes; False: value >= limit passes

    @property
    def ok(self) -> bool:
        if self.value is None:
            return False
        return self.value <= self.limit if self.at_most else self.value >= self.limit


def level_checks(level: Level, slos: Slos) -> list[Check]:
    """Every SLO that applies to ``level``; a value that was not measured fails its check."""
    checks = [
        Check(name, value, limit, True)
        for name, value, limit in (
            ("p99 TTFT", level.ttft_p99, slos.ttft_p99_s),
            ("p99 ITL", level.itl_p99, slos.itl_p99_s),
            ("p99 TPOT", level.tpot_p99, slos.tpot_p99_s),
        )
        if limit is not None
    ]
    if slos.min_accuracy is not None:
        checks.append(Check("accuracy", level.accuracy, slos.min_accuracy, False))
    checks.append(Check("error fraction", level.error_fraction, slos.max_error_fraction, True))
    if level.mode == "open":
        checks.append(Check("throughput / offered", level.follow, slos.min_follow, False))
    return checks


def sorted_levels(levels: Sequence[Level]) -> list[Level]:
    return sorted(levels, key=lambda level: level.offered)


@dataclass(frozen=True)
class Saturation:
    reached: bool
    stage: str | None  # the first saturated level
    offered: float | None
    capacity: float | None  # requests/s; a lower bound when not reached
    rule: str


def saturation(levels: Sequence[Level], follow: float = 0.9, elasticity: float = 0.5) -> Saturation:
    """Where throughput stops following offered load; capacity = the highest throughput measured."""
    ordered = [level for level in sorted_levels(levels) if level.throughput is not None]
    if not ordered:
        return Saturation(False, None, None, None, "no level completed a request")
    capacity = max(level.throughput or 0.0 for level in ordered)
    if ordered[0].mode == "open":
        rule = FORMULAS["saturation_open"].replace("saturation_follow", f"{follow:g}")
        for level in ordered:
            if (level.follow or 0.0) < follow:
                return Saturation(True, level.stage, level.offered, capacity, rule)
        return Saturation(False, None, None, capacity, rule)
    rule = FORMULAS["saturation_closed"].replace("saturation_elasticity", f"{elasticity:g}")
    for previous, level in itertools.pairwise(ordered):
        before, after = previous.throughput or 0.0, level.throughput or 0.0
        if before <= 0 or level.offered <= previous.offered:
            continue
        gain = ((after - before) / before) / ((level.offered - previous.offered) / previous.offered)
        if gain < elasticity:
            return Saturation(True, level.stage, level.offered, capacity, rule)
    return Saturation(False, None, None, capacity, rule)


Bound = Literal["interpolated", "saturated", "lower_bound", "below_range", "no_levels"]


@dataclass(frozen=True)
class Sustainable:
    """The highest request rate one sweep sustains within the SLOs."""

    rate: float | None
    bound: Bound
    note: str
    last_ok: str | None = None  # stage name of level k
    first_fail: str | None = None  # stage name of level k+1
    limiting: tuple[str, ...] = ()  # SLOs that level k+1 breaks
    fraction: float | None = None  # f
    failures: dict[str, list[str]] = field(default_factory=dict)  # stage -> broken SLOs
    # levels above the first break that meet every SLO again: the break does not mark a crossing (a p99 of a
    # few requests, one slow request among them); the rate stays the conservative one, flagged
    recovered: tuple[str, ...] = ()


def _fraction(before: Check, after: Check) -> float:
    if before.value is None or after.value is None or after.value == before.value:
        return 0.0
    return min(1.0, max(0.0, (before.limit - before.value) / (after.value - before.value)))


def sustainable_rate(levels: Sequence[Level], slos: Slos, *, saturated: bool = False) -> Sustainable:
    """Interpolated highest rate meeting every SLO (formula: ``FORMULAS['sustainable_rate']``).

    ``saturated``: the sweep reached saturation (``saturation(levels).reached``). When every level meets the
    SLOs, the saturated ones included, more load adds queueing, not throughput: the rate is the capacity
    (bound ``saturated``), not a lower bound that a higher sweep could raise. (An open-loop level that
    saturates breaks the throughput / offered SLO, so this happens in closed loops only.)"""
    ordered = sorted_levels(levels)
    if not ordered:
        return Sustainable(None, "no_levels", "no valid load level to plan from")
    checks = [level_checks(level, slos) for level in ordered]
    failures = {
        level.stage: [c.name for c in level_checks_ if not c.ok]
        for level, level_checks_ in zip(ordered, checks, strict=True)
    }
    last_ok = -1
    while last_ok + 1 < len(ordered) and not failures[ordered[last_ok + 1].stage]:
        last_ok += 1
    recovered = tuple(level.stage for level in ordered[last_ok + 2 :] if not failures[level.stage])
    again = (
        f"; {', '.join(recovered)} above it meet the SLOs again: the crossing is not resolved"
        if recovered
        else ""
    )
    if last_ok < 0:
        first = ordered[0]
        broken = ", ".join(failures[first.stage])
        note = f"no measured level meets the SLOs: the lowest ({first.stage}) breaks {broken}{again}"
        return Sustainable(
            None,
            "below_range",
            note,
            None,
            first.stage,
            tuple(failures[first.stage]),
            None,
            failures,
            recovered,
        )
    best = max(level.throughput or 0.0 for level in ordered[: last_ok + 1])
    if last_ok == len(ordered) - 1:
        if saturated:
            note = (
                "every measured level meets the SLOs, the saturated ones too: the SLOs do not bind below "
                "capacity, so the rate is the capacity (a closed loop caps the queue; open-loop arrivals "
                "this close to capacity queue: plan with headroom)"
            )
            return Sustainable(best, "saturated", note, ordered[last_ok].stage, None, (), None, failures)
        note = "every measured level meets the SLOs: the rate is a lower bound (sweep higher to find it)"
        return Sustainable(best, "lower_bound", note, ordered[last_ok].stage, None, (), None, failures)
    before, after = ordered[last_ok], ordered[last_ok + 1]
    pairs = [(b, a) for b, a in zip(checks[last_ok], checks[last_ok + 1], strict=True) if not a.ok]
    fraction = min(_fraction(b, a) for b, a in pairs)
    rate = best + fraction * max(0.0, (after.throughput or 0.0) - best)
    limiting = tuple(a.name for b, a in pairs if math.isclose(_fraction(b, a), fraction, abs_tol=1e-12))
    note = (
        f"between {before.stage} (meets) and {after.stage} (breaks {', '.join(failures[after.stage])}){again}"
    )
    return Sustainable(
        rate, "interpolated", note, before.stage, after.stage, limiting, fraction, failures, recovered
    )


def tokens_per_request(levels: Sequence[Level]) -> float | None:
    ok = sum(level.ok for level in levels)
    return sum(level.output_tokens for level in levels) / ok if ok else None


def replicas_needed(
    target_rate: float, rate_per_replica: float | None, headroom: float, efficiency: float = 1.0
) -> int | None:
    """ceil(target * (1 + headroom) / (rate_per_replica * efficiency)); None without a usable rate."""
    if rate_per_replica is None or rate_per_replica <= 0 or efficiency <= 0:
        return None
    needed = target_rate * (1.0 + headroom) / (rate_per_replica * efficiency)
    return max(1, math.ceil(needed - 1e-9))  # 1e-9: 2.0000000001 from float division is 2 replicas


def cost_per_million_tokens(
    price_per_accelerator_hour: float | None,
    accelerators: float,
    rate: float | None,
    tokens_per_req: float | None,
) -> float | None:
    """USD per 1M output tokens when ``accelerators`` serve ``rate`` requests/s of ``tokens_per_req``."""
    if price_per_accelerator_hour is None or not rate or not tokens_per_req:
        return None
    tokens_per_hour = rate * tokens_per_req * 3600.0
    return price_per_accelerator_hour * accelerators / tokens_per_hour * 1e6


def predicted_rate(rate_one_replica: float | None, replicas: int, efficiency: float = 1.0) -> float | None:
    """Linear scaling: N replicas sustain N * rate(1) * efficiency."""
    return None if rate_one_replica is None else replicas * rate_one_replica * efficiency


def prediction_error(predicted: float | None, measured: float | None) -> float | None:
    if predicted is None or not measured:
        return None
    return (predicted - measured) / measured


def pareto_front(points: Mapping[str, tuple[float | None, float | None]]) -> set[str]:
    """Names on the accuracy-versus-latency front; ``points``: name -> (accuracy, p99 latency s)."""
    known = {name: (a, t) for name, (a, t) in points.items() if a is not None and t is not None}
    front = set()
    for name, (accuracy, latency) in known.items():
        dominated = any(
            a >= accuracy and t <= latency and (a > accuracy or t < latency)
            for other, (a, t) in known.items()
            if other != name
        )
        if not dominated:
            front.add(name)
    return front
