"""Planner math on synthetic levels; every expected value is worked out by hand in the comment beside it."""

from __future__ import annotations

from typing import Any

import pytest

from m3bench.report.planner import (
    Level,
    Slos,
    cost_per_million_tokens,
    level_checks,
    pareto_front,
    predicted_rate,
    prediction_error,
    replicas_needed,
    saturation,
    sustainable_rate,
    tokens_per_request,
)


def level(offered: float, throughput: float | None, mode: str = "closed", **values: Any) -> Level:
    base: dict[str, Any] = {"ok": 100, "measured": 100, "output_tokens": 5000}
    base.update(values)
    return Level(stage=f"s-{offered:g}", mode=mode, offered=offered, throughput=throughput, **base)  # type: ignore[arg-type]


CLOSED = [
    level(1, 1.0, ttft_p99=0.1, itl_p99=0.020, accuracy=0.9),
    level(2, 1.9, ttft_p99=0.2, itl_p99=0.025, accuracy=0.9),
    level(4, 3.0, ttft_p99=0.5, itl_p99=0.040, accuracy=0.6),
]


def test_interpolates_between_the_last_level_that_meets_and_the_first_that_breaks() -> None:
    # k = the 2-stream level; f = (0.3 - 0.2) / (0.5 - 0.2) = 1/3; rate = 1.9 + (3.0 - 1.9) / 3
    result = sustainable_rate(CLOSED, Slos(ttft_p99_s=0.3))
    assert result.bound == "interpolated"
    assert (result.last_ok, result.first_fail, result.limiting) == ("s-2", "s-4", ("p99 TTFT",))
    assert result.fraction == pytest.approx(1 / 3)
    assert result.rate == pytest.approx(1.9 + 1.1 / 3)


def test_the_tightest_slo_limits_the_rate() -> None:
    # TTFT: f = (0.35 - 0.2) / 0.3 = 0.5; ITL: f = (0.030 - 0.025) / 0.015 = 1/3; accuracy (0.8 - 0.9) /
    # (0.6 - 0.9) = 1/3 as well: both limit, rate = 1.9 + 1.1 / 3
    result = sustainable_rate(CLOSED, Slos(ttft_p99_s=0.35, itl_p99_s=0.030, min_accuracy=0.8))
    assert result.fraction == pytest.approx(1 / 3)
    assert set(result.limiting) == {"p99 ITL", "accuracy"}
    assert result.rate == pytest.approx(1.9 + 1.1 / 3)


def test_every_level_meeting_the_slo_gives_a_lower_bound() -> None:
    result = sustainable_rate(CLOSED, Slos(ttft_p99_s=1.0))
    assert (result.bound, result.rate, result.last_ok) == ("lower_bound", 3.0, "s-4")
    assert "lower bound" in result.note


def test_every_level_meeting_the_slo_up_to_saturation_gives_the_capacity() -> None:
    # 1 -> 1.0, 2 -> 1.9, 4 -> 2.0 req/s: elasticity at 4 = (0.1 / 1.9) / (2 / 2) = 0.05 < 0.5, saturated
    levels = [*CLOSED[:2], level(4, 2.0, ttft_p99=0.5)]
    reached = saturation(levels)
    assert (reached.reached, reached.stage, reached.capacity) == (True, "s-4", 2.0)
    result = sustainable_rate(levels, Slos(ttft_p99_s=1.0), saturated=reached.reached)
    assert (result.bound, result.rate, result.last_ok) == ("saturated", 2.0, "s-4")
    assert "do not bind below capacity" in result.note
    # a level that breaks an SLO still decides, saturated or not: (0.3 - 0.2) / (0.5 - 0.2) = 1/3 of the way
    broken = sustainable_rate(levels, Slos(ttft_p99_s=0.3), saturated=True)
    assert (broken.bound, broken.rate) == ("interpolated", pytest.approx(1.9 + 0.1 / 3))


def test_a_break_that_higher_levels_do_not_repeat_is_named() -> None:
    # s-2 breaks p99 TTFT (0.6 > 0.3), s-4 and s-6 meet it again: rate from the first break, flagged
    levels = [
        level(1, 1.0, ttft_p99=0.1),
        level(2, 1.9, ttft_p99=0.6),
        *[level(c, 2.5, ttft_p99=0.2) for c in (4, 6)],
    ]
    result = sustainable_rate(levels, Slos(ttft_p99_s=0.3))
    assert (result.bound, result.first_fail, result.recovered) == ("interpolated", "s-2", ("s-4", "s-6"))
    assert result.rate == pytest.approx(1.0 + 0.4 * 0.9)  # f = (0.3 - 0.1) / (0.6 - 0.1)
    assert "meet the SLOs again" in result.note
    assert sustainable_rate(CLOSED, Slos(ttft_p99_s=0.3)).recovered == ()  # a clean crossing


def test_no_level_meeting_the_slo_gives_no_rate() -> None:
    result = sustainable_rate(CLOSED, Slos(ttft_p99_s=0.05))
    assert (result.bound, result.rate, result.first_fail) == ("below_range", None, "s-1")
    assert "p99 TTFT" in result.note


def test_no_levels() -> None:
    assert sustainable_rate([], Slos()).bound == "no_levels"


def test_the_first_failure_bounds_the_rate_even_if_a_later_level_passes() -> None:
    levels = [level(1, 1.0, ttft_p99=0.1), level(2, 2.0, ttft_p99=0.4), level(4, 3.0, ttft_p99=0.2)]
    # k = 0; f = (0.3 - 0.1) / (0.4 - 0.1) = 2/3; rate = 1 + 2/3 * (2 - 1)
    result = sustainable_rate(levels, Slos(ttft_p99_s=0.3))
    assert result.rate == pytest.approx(1 + 2 / 3)


def test_throughput_falling_past_the_last_good_level_does_not_lower_the_rate() -> None:
    levels = [level(1, 1.0, ttft_p99=0.1), level(2, 2.0, ttft_p99=0.2), level(4, 1.5, ttft_p99=0.6)]
    # X* = 2.0; X_k+1 = 1.5 < X*: rate = 2.0 + f * max(0, -0.5) = 2.0
    assert sustainable_rate(levels, Slos(ttft_p99_s=0.3)).rate == pytest.approx(2.0)


def test_levels_are_sorted_by_offered_load() -> None:
    shuffled = [CLOSED[2], CLOSED[0], CLOSED[1]]
    assert sustainable_rate(shuffled, Slos(ttft_p99_s=0.3)).rate == pytest.approx(1.9 + 1.1 / 3)


def test_open_loop_level_that_cannot_keep_up_breaks_the_slo_and_saturates() -> None:
    levels = [level(r, x, mode="open") for r, x in ((1, 1.0), (2, 2.0), (4, 3.0))]
    # throughput / offered: 1.0, 1.0, 0.75 < 0.9; f = (0.9 - 1.0) / (0.75 - 1.0) = 0.4; rate = 2 + 0.4 * 1
    result = sustainable_rate(levels, Slos())
    assert result.limiting == ("throughput / offered",)
    assert result.rate == pytest.approx(2.4)
    found = saturation(levels)
    assert (found.reached, found.stage, found.offered, found.capacity) == (True, "s-4", 4, 3.0)


def test_closed_loop_saturation_is_where_throughput_stops_growing_with_concurrency() -> None:
    levels = [level(c, x) for c, x in ((1, 1.0), (2, 2.0), (4, 3.6), (8, 4.0))]
    # elasticity 1->2: (1/1)/(1/1) = 1; 2->4: (0.8)/(1) = 0.8; 4->8: (0.4/3.6)/(1) = 0.11 < 0.5
    found = saturation(levels)
    assert (found.reached, found.offered, found.capacity) == (True, 8, 4.0)
    unsaturated = saturation(levels[:3])
    assert (unsaturated.reached, unsaturated.stage, unsaturated.capacity) == (False, None, 3.6)


def test_saturation_without_completed_requests() -> None:
    assert saturation([level(1, None)]).capacity is None


def test_errors_and_unmeasured_values_break_the_slos() -> None:
    erratic = level(1, 1.0, ok=98, measured=100, ttft_p99=None)
    checks = {c.name: c.ok for c in level_checks(erratic, Slos(ttft_p99_s=1.0))}
    # 2 non-ok of 100 = 0.02 > 0.01; no TTFT measured fails the TTFT SLO rather than passing it
    assert checks == {"p99 TTFT": False, "error fraction": False}
    assert erratic.error_fraction == pytest.approx(0.02)


def test_replicas_for_a_target_rate() -> None:
    # 10 * 1.2 / 3 = 4; 7 * 1.2 / 0.7 = 12 (12.000000000000002 in floats): 12 replicas, not 13
    assert replicas_needed(10, 3, 0.2) == 4
    assert replicas_needed(7, 0.7, 0.2) == 12
    assert replicas_needed(10, 3, 0.25) == 5  # 12.5 / 3 = 4.17
    assert replicas_needed(10, 3, 0.2, efficiency=0.8) == 5  # 12 / 2.4
    assert replicas_needed(0.1, 3, 0.2) == 1
    assert replicas_needed(10, None, 0.2) is None
    assert replicas_needed(10, 0.0, 0.2) is None


def test_cost_per_million_output_tokens() -> None:
    # 2 req/s * 100 tokens * 3600 s = 720,000 tokens/h; $2/h / 720,000 * 1e6 = $2.778
    assert cost_per_million_tokens(2.0, 1, 2.0, 100) == pytest.approx(2.0 / 0.72)
    # two replicas of 2 accelerators at $3: $12/h for the same tokens
    assert cost_per_million_tokens(3.0, 4, 2.0, 100) == pytest.approx(12.0 / 0.72)
    assert cost_per_million_tokens(None, 1, 2.0, 100) is None
    assert cost_per_million_tokens(2.0, 1, None, 100) is None


def test_tokens_per_request() -> None:
    assert (
        tokens_per_request([level(1, 1.0, ok=10, output_tokens=100), level(2, 1.0, ok=30, output_tokens=500)])
        == 15
    )
    assert tokens_per_request([level(1, 1.0, ok=0, output_tokens=0)]) is None


def test_prediction_from_one_replica() -> None:
    assert predicted_rate(2.2, 2) == pytest.approx(4.4)
    assert predicted_rate(2.0, 3, efficiency=0.9) == pytest.approx(5.4)
    assert predicted_rate(None, 2) is None
    assert prediction_error(4.4, 4.0) == pytest.approx(0.1)
    assert prediction_error(3.4, 4.0) == pytest.approx(-0.15)
    assert prediction_error(4.4, None) is None


def test_pareto_front() -> None:
    points = {
        "a": (0.9, 1.0),
        "b": (0.8, 0.5),
        "c": (0.7, 0.6),  # dominated by b (less accurate, slower)
        "d": (0.9, 1.2),  # dominated by a (as accurate, slower)
        "e": (None, 0.1),  # not measured: not on any front
        "f": (0.9, 1.0),  # ties with a: neither is strictly better
    }
    assert pareto_front(points) == {"a", "b", "f"}


def test_slos_describe_themselves() -> None:
    text = "; ".join(Slos(ttft_p99_s=0.5, tpot_p99_s=0.05, min_accuracy=0.6).describe())
    assert "p99 TTFT <= 500 ms" in text
    assert "p99 TPOT <= 50 ms" in text
    assert "accuracy >= 60%" in text
