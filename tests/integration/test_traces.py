"""Trace replay against the calibration server (issue 18): a 10,000-row trace of known timestamps, with
rate changes and bursts, replayed by 1 and by 2 workers.

What must hold (docs/loadgen.md, "Trace replay"):
* records = rows: every row sent exactly once (the server's request log equals the records' ids, and the
  records' trace lines are the trace's lines, each once), with the row's output length (the calibration
  server streams exactly ``max_tokens`` tokens, so this checks the splice into the prebuilt body);
* schedule lag p99 <= 1 ms over all 10,000 sends;
* the achieved arrival curve (sends per 10 s bucket from the stage start) within 1 % of the trace's.

A run the generator's own validity check marks disturbed by the machine (it waited for a CPU, its loop
lagged) is retried; if every attempt was disturbed the test skips with the measured figures. The bounds
are never loosened.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from loadgen.calibration.launch import calibration_server
from loadgen.calibration.tasks import write_calibration_tasks
from loadgen.profile import Profile
from loadgen.records import read_records
from loadgen.run import run_load
from loadgen.stats import quantile
from loadgen.summary_model import RunSummary
from loadgen.traces.formats import TraceRow, write_mooncake
from tests.support.load import calibration_config
from tests.support.skips import skip_disturbed

pytestmark = pytest.mark.slow
BUCKET_MS = 10_000
RATES = (150, 300, 100, 250, 200)  # per 10 s bucket: 10,000 rows in 50 s
LAG_P99_S = 0.001
CURVE_TOLERANCE = 0.01


def write_known_trace(path: Path, seed: int = 18) -> list[TraceRow]:
    """10,000 rows: five 10 s buckets at different rates, gamma (shape 0.3) bursts inside each, and two
    dense bursts (100 rows in 100 ms, 60 rows in 30 ms). Millisecond timestamps (Mooncake's unit)."""
    rng = random.Random(seed)
    offsets_ms: list[int] = []
    for bucket, rate in enumerate(RATES):
        count = rate * BUCKET_MS // 1000
        start = bucket * BUCKET_MS
        dense = {1: (100, 3_000, 100), 3: (60, 7_000, 30)}.get(bucket)
        if dense is not None:
            packed, burst_at, width = dense
            offsets_ms += [start + burst_at + rng.randrange(width) for _ in range(packed)]
            count -= packed
        gaps = [rng.gammavariate(0.3, 1 / 0.3) for _ in range(count + 1)]
        scale = (BUCKET_MS - 1) / sum(gaps)
        cursor = 0.0
        for gap in gaps[:-1]:
            cursor += gap * scale
            offsets_ms.append(start + min(int(cursor), BUCKET_MS - 1))
    offsets_ms.sort()
    rows = [
        TraceRow(i + 1, ms / 1000, rng.randrange(5, 40), rng.randrange(2, 7), ())
        for i, ms in enumerate(offsets_ms)
    ]
    write_mooncake(rows, path)
    return rows


@pytest.fixture(scope="module")
def tasks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_calibration_tasks(tmp_path_factory.mktemp("tasks"), per_language=2, languages=("en", "zh"))


@pytest.fixture(scope="module")
def trace(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[TraceRow]]:
    path = tmp_path_factory.mktemp("trace") / "known.jsonl"
    return path, write_known_trace(path)


def _summary(value: Any) -> RunSummary:
    return value if isinstance(value, RunSummary) else RunSummary.model_validate(value)


@pytest.mark.parametrize("workers", [0, 2], ids=["1-worker", "2-workers"])
def test_known_trace_is_replayed_exactly(
    workers: int, tasks: Path, trace: tuple[Path, list[TraceRow]], tmp_path: Path
) -> None:
    path, rows = trace
    assert len(rows) == 10_000
    profile = Profile.model_validate(
        {
            "mode": "open",
            "stages": [{"trace": {"path": str(path), "format": "mooncake"}, "cooldown_s": 0.5}],
            "grading": {"enabled": False},
            # a schedule's precision is what is tested, not this shared 2-core machine's other jobs
            "generator": {"workers": workers, "priority": "realtime"},
        }
    )
    disturbed = []
    for attempt in range(3):
        request_log = tmp_path / f"requests-{attempt}.txt"
        # the server at default priority: with --realtime (SCHED_FIFO 10) it outranked the generator's
        # SCHED_FIFO 5 and took a worker's core in the dense bursts. Two runs each, 2 workers, 2026-12-05:
        # lag p99 0.82 / 0.75 ms and 1 % of the workers' time waiting for a CPU with it, 0.62 / 0.60 ms and
        # 0.03 % without; CI once read 1.011 ms with it and no finding (docs/loadgen.md, "Trace replay")
        with calibration_server(
            "--ttft-ms", "5", "--itl-ms", "2", "--request-log", str(request_log)
        ) as server:
            result = run_load(calibration_config(server.url, tasks, tmp_path / str(attempt), profile))
        records = read_records(result.records_path)
        lags = sorted((r.sent_ns - r.scheduled_ns) / 1e9 for r in records if r.scheduled_ns is not None)
        lag_p99 = quantile(lags, 0.99)
        stage = _summary(result.summary).stages[0]
        if lag_p99 <= LAG_P99_S:
            break
        machine = [f for f in stage.generator.findings if f.party == "machine" and f.invalid]
        client = [f for f in stage.generator.findings if f.party == "client" and f.invalid]
        if not machine and not client:  # an undisturbed generator missed the bound: a real failure
            pytest.fail(f"schedule lag p99 {lag_p99 * 1e3:.3f} ms > 1 ms with no disturbance found")
        disturbed.append(
            f"attempt {attempt}: lag p99 {lag_p99 * 1e3:.2f} ms, max {lags[-1] * 1e3:.1f} ms; "
            + "; ".join(f"{f.party}: {f.evidence}" for f in machine + client)
        )
    else:
        skip_disturbed(" | ".join(disturbed))

    # records = rows, each sent once
    assert len(records) == len(rows)
    ids = [r.request_id for r in records]
    assert len(set(ids)) == len(ids)
    received = [line for line in request_log.read_text().splitlines() if not line.startswith("calib-")]
    assert sorted(received) == sorted(ids)
    assert sorted(r.trace_line for r in records if r.trace_line is not None) == [row.line for row in rows]
    by_line = {row.line: row for row in rows}
    assert all(r.status == "ok" for r in records)
    assert all(r.output_tokens == by_line[r.trace_line].output_tokens for r in records if r.trace_line)
    if workers:
        assert {r.worker for r in records} == {"w0", "w1"}
        assert abs(sum(r.worker == "w0" for r in records) - len(rows) / 2) <= 1  # arrival i -> worker i % 2

    # each row scheduled at its own offset from the stage start: within one process, to the microsecond
    for worker in {r.worker for r in records}:
        mine = [r for r in records if r.worker == worker]
        ref = mine[0]
        assert ref.scheduled_ns is not None
        assert ref.trace_line is not None
        for record in mine:
            assert record.scheduled_ns is not None
            assert record.trace_line is not None
            gap = by_line[record.trace_line].at_s - by_line[ref.trace_line].at_s
            assert (record.scheduled_ns - ref.scheduled_ns) / 1e9 == pytest.approx(gap, abs=2e-6)

    # the achieved arrival curve against the trace's, per 10 s bucket from the stage start
    assert lag_p99 <= LAG_P99_S
    over = stage.over_time
    assert over is not None
    assert over.anchor.startswith("stage start")
    expected_counts = [sum(1 for row in rows if int(row.at_s // 10) == k) for k in range(len(RATES))]
    assert expected_counts == [rate * 10 for rate in RATES]
    offered = [bucket.offered for bucket in over.buckets]
    sent = [bucket.sent for bucket in over.buckets]
    assert offered == expected_counts  # the schedule is the trace
    for achieved, wanted in zip(sent, expected_counts, strict=True):
        assert abs(achieved - wanted) <= CURVE_TOLERANCE * wanted
    print(
        f"\n{workers or 1} worker(s): {len(records)} records, schedule lag p50 "
        f"{quantile(lags, 0.5) * 1e6:.0f} us, p99 {lag_p99 * 1e6:.0f} us, max {lags[-1] * 1e3:.2f} ms; "
        f"offered per 10 s {offered}, sent {sent}"
    )


@pytest.mark.parametrize("workers", [0, 2], ids=["1-worker", "2-workers"])
def test_conversations_follow_their_plan(workers: int, tasks: Path, tmp_path: Path) -> None:
    """Session stage against the calibration server: every session's turns as planned (count, think times,
    questions), all turns of a session from one process, the history in every follow-up's prompt."""
    from loadgen.sessions import plan_session

    spec = {"follow_ups_min": 0, "follow_ups_max": 3, "think_time": {"kind": "exponential", "mean_s": 0.3}}
    profile = Profile.model_validate(
        {
            "mode": "open",
            "arrival": {"kind": "poisson"},
            "stages": [{"rate": 8, "measure_s": 4, "cooldown_s": 4, "sessions": spec}],
            "seed": 5,
            "generator": {"workers": workers},
        }
    )
    with calibration_server("--ttft-ms", "20", "--itl-ms", "2") as server:
        result = run_load(calibration_config(server.url, tasks, tmp_path, profile))
    records = read_records(result.records_path)
    assert all(r.status == "ok" for r in records)
    sessions: dict[str, list[Any]] = {}
    for record in records:
        assert record.session_id is not None
        assert record.turn is not None
        sessions.setdefault(record.session_id, []).append(record)
    plan = Profile.model_validate(profile.model_dump()).resolved_stages()[0].sessions
    assert plan is not None
    assert len(sessions) > 20
    for session_id, turns in sessions.items():
        turns.sort(key=lambda r: r.turn)
        index = int(session_id.rsplit("-", 1)[1])
        follow_ups = plan_session(plan, seed=5, stage_index=0, session_index=index)
        numbers = [r.turn for r in turns]
        if turns[0].phase == "cooldown":  # born in the cooldown: the stage's end may cut it, never reorder it
            assert numbers == list(range(len(numbers)))
            assert len(numbers) <= len(follow_ups) + 1
            continue
        assert numbers == list(range(len(follow_ups) + 1))
        assert len({r.worker for r in turns}) == 1  # one process holds the conversation
        assert turns[0].grade == "pass"
        assert all(r.grade == "ungraded" for r in turns[1:])
        for previous, turn, follow_up in zip(turns, turns[1:], follow_ups, strict=False):
            assert turn.scheduled_ns == previous.end_ns + int(follow_up.think_s * 1e9)
            assert (turn.prompt_tokens or 0) > (previous.prompt_tokens or 0)  # image, question, answer, ...
    stage = _summary(result.summary).stages[0]
    assert stage.turns is not None
    assert [t.turn for t in stage.turns] == list(range(len(stage.turns)))
    assert sum(t.requests for t in stage.turns) == sum(1 for r in records if r.phase == "measure")
