"""Throughput over the measure window on synthetic records: requests longer than the window, and the
first-token read split (server coalescing against a late client)."""

from __future__ import annotations

from typing import Any

import pytest

from loadgen.profile import Generator
from loadgen.records import RequestRecord
from loadgen.summary import summarize
from loadgen.validity import first_read
from tests.support.records import bare_record

S = 1_000_000_000
MS = 1_000_000


def _record(**values: Any) -> RequestRecord:
    """A closed-loop record at concurrency 8, its first token read 0.1 ms after it arrived."""
    closed = {"stage": "s0-c8", "mode": "closed", "target": 8.0, "first_token_read_delay_ns": 100_000}
    return bare_record(**{**closed, **values})


def closed_loop(
    streams: int = 8, e2e_s: float = 50.0, tokens: int = 100, measure: tuple[float, float] = (100.0, 140.0)
) -> list[RequestRecord]:
    """``streams`` closed-loop streams, staggered evenly over one request time, each sending back to back
    requests of ``e2e_s`` that stream one token every e2e_s / tokens s. Phases by send time: warmup before
    the measure span, measure inside it, cooldown for 10 s after it, then the streams stop (the drain).
    """
    rows = []
    gap = e2e_s / tokens
    for stream in range(streams):
        sent = stream * e2e_s / streams
        number = 0
        while sent <= measure[1] + 10.0:
            phase = "warmup" if sent < measure[0] else "measure" if sent <= measure[1] else "cooldown"
            offsets = [round((k + 1) * gap * S) for k in range(tokens)]
            start = round(sent * S)
            rows.append(
                _record(
                    request_id=f"{stream}-{number}",
                    phase=phase,
                    sent_ns=start,
                    first_token_ns=start + offsets[0],
                    end_ns=start + offsets[-1],
                    chunk_offsets_ns=offsets,
                    output_tokens=tokens,
                )
            )
            sent += e2e_s
            number += 1
    return rows


def test_a_drain_tail_longer_than_the_window_does_not_bias_throughput() -> None:
    # 8 streams x 100 tokens / 50 s: the server delivers 16 tokens/s and 0.16 requests/s in steady state.
    # Each request (50 s) is longer than the measure window (~40 s).
    stage = summarize(closed_loop()).stages[0]
    window = stage.window.window_s
    assert 35.0 < window <= 40.0
    assert stage.throughput.output_tokens_per_s == pytest.approx(16.0, rel=0.02)
    completions = stage.throughput.completed_in_window
    assert abs(completions - 0.16 * window) <= 1.0  # whole requests: at most one off at the window's edges
    # the schema-1 figure (tokens of requests born in the window / first send to last end) is the bias
    # issue 16 measured: here it reports about half the steady state
    born = stage.throughput.born_output_tokens_per_s
    assert born is not None
    assert born < 0.6 * 16.0
    assert "steady state" in stage.window.basis


def test_token_throughput_does_not_depend_on_request_length() -> None:
    # the same 16 tokens/s from 16 streams of 25 s requests and 4 streams of 100 s requests (longer than the
    # measure window: no request born in it ends in it)
    short = summarize(closed_loop(streams=4, e2e_s=25.0, tokens=100)).stages[0].throughput
    long = summarize(closed_loop(streams=16, e2e_s=100.0, tokens=100)).stages[0].throughput
    assert short.output_tokens_per_s == pytest.approx(16.0, rel=0.02)
    assert long.output_tokens_per_s == pytest.approx(16.0, rel=0.02)


def test_tokens_are_spread_evenly_over_chunks() -> None:
    # 10 tokens in 2 chunks (a server that writes 5 tokens at a time): 5 arrive with each chunk
    rows = [
        _record(
            request_id=str(i),
            phase="measure",
            sent_ns=i * S,
            first_token_ns=i * S + 100 * MS,
            end_ns=i * S + 600 * MS,
            chunk_offsets_ns=[100 * MS, 600 * MS],
            output_tokens=10,
        )
        for i in range(5)
    ]
    stage = summarize(rows).stages[0]
    # window [0, 4 s]: requests 0..3 whole (40 tokens), request 4's first chunk at 4.1 s is outside
    assert stage.throughput.tokens_in_window == pytest.approx(40.0)
    assert stage.timing.tokens_per_chunk == pytest.approx(5.0)
    assert stage.timing.tokens_per_write == pytest.approx(5.0)


def _first_read_stage(read_delay_ns: int | None, timing: str = "kernel", coalesced: bool = True) -> Any:
    rows = []
    for i in range(100):
        first = 100 * MS
        second = first if coalesced else first + 10 * MS
        rows.append(
            _record(
                request_id=str(i),
                phase="measure",
                mode="open",
                sent_ns=i * 100 * MS,
                scheduled_ns=i * 100 * MS,
                first_token_ns=i * 100 * MS + first,
                end_ns=i * 100 * MS + 200 * MS,
                chunk_offsets_ns=[first, second, 200 * MS],
                output_tokens=4,
                timing=timing,
                first_token_read_delay_ns=read_delay_ns,
            )
        )
    return summarize(rows, limits=Generator()).stages[0]


def test_coalesced_first_write_with_a_prompt_read_is_valid() -> None:
    stage = _first_read_stage(read_delay_ns=200_000)  # 0.2 ms after the kernel stamp
    assert stage.generator.valid, stage.generator.invalid_reasons
    assert stage.timing.ttft_upper_bound_fraction == 0.0
    assert stage.timing.first_read_server_coalesced_fraction == 1.0
    assert stage.timing.tokens_per_write == pytest.approx(4 / 2)  # 2 distinct arrivals per reply
    (finding,) = stage.generator.findings
    assert (finding.rule, finding.party, finding.invalid) == ("server_coalesced_first_write", "server", False)
    assert "tokens per write" in finding.evidence


def test_a_late_read_is_invalid_and_blames_the_client() -> None:
    limit = Generator().max_read_delay_s
    stage = _first_read_stage(read_delay_ns=int((limit + 0.010) * 1e9))  # 10 ms past the limit
    assert not stage.generator.valid
    assert stage.timing.ttft_upper_bound_fraction == 1.0
    rules = {(f.rule, f.party) for f in stage.generator.findings if f.invalid}
    assert rules == {("read_delay", "client"), ("ttft_upper_bound", "client")}
    assert any("TTFT only an upper bound" in reason for reason in stage.generator.invalid_reasons)


def test_a_shared_read_without_a_kernel_stamp_stays_an_upper_bound() -> None:
    stage = _first_read_stage(read_delay_ns=0, timing="user")  # user-space stamps cannot tell
    assert not stage.generator.valid
    assert stage.timing.ttft_upper_bound_fraction == 1.0


def test_separate_reads_are_neither() -> None:
    stage = _first_read_stage(read_delay_ns=200_000, coalesced=False)
    assert stage.generator.valid
    assert stage.timing.first_read_server_coalesced_fraction == 0.0
    assert stage.generator.findings == []


def test_first_read_classification_at_the_limit() -> None:
    limit_ns = int(Generator().max_read_delay_s * 1e9)
    shared = [100 * MS, 100 * MS]
    at_limit = _record(phase="measure", sent_ns=0, end_ns=S, chunk_offsets_ns=shared)
    at_limit.first_token_read_delay_ns = limit_ns
    assert first_read(at_limit, Generator().max_read_delay_s) == "server_coalesced"
    at_limit.first_token_read_delay_ns = limit_ns + 1
    assert first_read(at_limit, Generator().max_read_delay_s) == "client_late"
    single = _record(phase="measure", sent_ns=0, end_ns=S, chunk_offsets_ns=[100 * MS])
    assert first_read(single, Generator().max_read_delay_s) is None


def _batched_stage(start_row: bool) -> tuple[Any, float]:
    """32 closed-loop streams whose replies come in whole batch rounds (every 20 s, 48 tokens each, one
    token every 20/48 s), longer than the 12 s measure phase [10, 22) s of a stage started at 0: the
    measure-phase sends all fall at the round boundary t = 20 s. Returns the stage and the true rate."""
    rows = []
    for stream in range(32):
        for number, sent_s in enumerate((0.0, 20.0, 40.0)):
            phase = "warmup" if sent_s < 10.0 else "measure" if sent_s < 22.0 else "cooldown"
            offsets = [round((k + 1) * 20.0 / 48 * S) for k in range(48)]
            start = round(sent_s * S)
            rows.append(
                _record(
                    request_id=f"{stream}-{number}",
                    stage="s0-c32",
                    target=32.0,
                    phase=phase,
                    sent_ns=start + stream * MS,  # the round's sends, 1 ms apart
                    first_token_ns=start + offsets[0],
                    end_ns=start + offsets[-1],
                    chunk_offsets_ns=offsets,
                    output_tokens=48,
                )
            )
    anchor = rows[0].anchor_wall_ns - rows[0].anchor_perf_ns  # wall ns at perf 0
    health = (
        [
            {
                "event": "stage_start",
                "index": 0,
                "start_wall_ns": anchor,
                "warmup_s": 10.0,
                "measure_s": 12.0,
                "measure_requests": None,
            }
        ]
        if start_row
        else []
    )
    return summarize(rows, health=health).stages[0], 32 / 20.0


def test_closed_loop_window_is_the_stage_clock_when_requests_outlast_the_stage() -> None:
    stage, rate = _batched_stage(start_row=True)
    assert stage.window.window_s == pytest.approx(12.0)
    assert "stage clock" in stage.window.basis
    assert stage.throughput.output_tokens_per_s == pytest.approx(rate * 48, rel=0.02)
    assert stage.throughput.request_equivalent_per_s == pytest.approx(rate, rel=0.02)
    # completions are whole batch rounds: one round (32) ended at t = 20 s inside the 12 s window
    assert stage.throughput.completed_in_window == 32
    # without the stage's clock the window is first to last measure send: the 31 ms of one round's sends
    by_sends, _ = _batched_stage(start_row=False)
    assert by_sends.window.window_s < 0.05
    assert "first to last measure-phase send" in by_sends.window.basis
