"""A planner level's request rate (m3bench.report.sweeps): the token flow's rate, or none where the window
could not see a steady state."""

from __future__ import annotations

import pytest

from loadgen.summary import summarize
from m3bench.report.sweeps import level_from_stage
from tests.unit.test_loadgen_throughput import _batched_stage, closed_loop


def test_a_window_shorter_than_the_median_request_gives_no_rate() -> None:
    stage, _ = _batched_stage(start_row=True)  # 20 s batch rounds, a 12 s window: part of one round
    assert stage.latency_s.e2e.p50 is not None
    assert stage.window.window_s < stage.latency_s.e2e.p50
    level = level_from_stage(stage, "m")
    assert level.throughput is None
    assert level.ttft_p99 is not None  # the latency figures stay


def test_a_window_longer_than_the_requests_gives_the_token_flow_rate() -> None:
    # 8 streams of 5 s requests (100 tokens each), measure window ~40 s: 1.6 requests/s
    stage = summarize(closed_loop(streams=8, e2e_s=5.0, tokens=100)).stages[0]
    level = level_from_stage(stage, "m")
    assert level.throughput == pytest.approx(1.6, rel=0.03)
    assert level.throughput == stage.throughput.request_equivalent_per_s
