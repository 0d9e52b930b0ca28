"""Per-request formulas and stage summaries on synthetic timestamps (recomputable from records)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from loadgen.profile import Generator, Slo
from loadgen.records import RecordWriter, RequestRecord, read_records
from loadgen.summary import distribution, summarize, summarize_run
from loadgen.timings import e2e_s, itl_s, schedule_lag_s, tpot_s, ttft_from_scheduled_s, ttft_s

MS = 1_000_000


def record(**overrides: Any) -> RequestRecord:
    values: dict[str, Any] = {
        "run_id": "r",
        "request_id": "r-1",
        "stage": "s0",
        "stage_index": 0,
        "phase": "measure",
        "mode": "open",
        "target": 2.0,
        "worker": "w0",
        "model": "m",
        "task_id": "t",
        "language": "en",
        "scheduled_ns": 0,
        "sent_ns": 2 * MS,
        "first_token_ns": 102 * MS,
        "end_ns": 192 * MS,
        "chunk_offsets_ns": [100 * MS, 110 * MS, 190 * MS],
        "timing": "kernel",
        "anchor_wall_ns": 10**18,
        "anchor_perf_ns": 0,
        "prompt_tokens": 5,
        "output_tokens": 10,
        "status": "ok",
        "grade": "pass",
    }
    values.update(overrides)
    return RequestRecord(**values)


def test_formulas() -> None:
    r = record()
    assert ttft_s(r) == pytest.approx(0.100)
    assert e2e_s(r) == pytest.approx(0.190)
    assert tpot_s(r) == pytest.approx(0.090 / 9)
    assert itl_s(r) == pytest.approx([0.010, 0.080])
    assert schedule_lag_s(r) == pytest.approx(0.002)
    assert ttft_from_scheduled_s(r) == pytest.approx(0.102)


def test_no_stand_in_values() -> None:
    failed = record(status="disconnect", first_token_ns=None, chunk_offsets_ns=[], output_tokens=None)
    assert (ttft_s(failed), e2e_s(failed), tpot_s(failed), itl_s(failed)) == (None, None, None, [])
    one_token = record(output_tokens=1)
    assert tpot_s(one_token) is None
    closed = record(scheduled_ns=None)
    assert schedule_lag_s(closed) is None


def test_distribution_percentiles() -> None:
    d = distribution([float(x) for x in range(1, 101)])
    assert (d["n"], d["p50"], d["min"], d["max"]) == (100, 50.5, 1.0, 100.0)
    assert distribution([])["p99"] is None


def _stage_records() -> list[RequestRecord]:
    rows = []
    for i in range(10):
        start = i * 500 * MS
        ttft = (100 if i < 8 else 900) * MS
        rows.append(
            record(
                request_id=f"r-{i}",
                sent_ns=start,
                scheduled_ns=start,
                first_token_ns=start + ttft,
                end_ns=start + ttft + 90 * MS,
                language="en" if i % 2 else "zh",
                grade="pass" if i % 3 else "fail",
            )
        )
    rows.append(record(request_id="r-w", phase="warmup"))
    rows.append(
        record(request_id="r-e", status="http_error", first_token_ns=None, end_ns=MS, grade="ungraded")
    )
    return rows


def test_stage_summary_counts_throughput_goodput_accuracy() -> None:
    summary = summarize(_stage_records(), slo=Slo(ttft_s=0.5))
    stage = summary["stages"][0]
    assert stage["counts"]["by_phase"] == {"measure": 11, "warmup": 1}
    assert stage["counts"]["measure_by_status"]["ok"] == 10
    assert stage["counts"]["measure_by_status"]["http_error"] == 1
    window = stage["window"]["window_s"]
    assert window == pytest.approx(4.5 + 0.99)  # first send 0, last end 4.5 s + 990 ms
    assert stage["throughput"]["requests_per_s"] == pytest.approx(10 / window)
    assert stage["throughput"]["output_tokens_per_s"] == pytest.approx(100 / window)
    assert stage["throughput"]["goodput_requests_per_s"] == pytest.approx(8 / window)
    assert stage["latency_s"]["ttft"]["p50"] == pytest.approx(0.1)
    accuracy = stage["accuracy"]["m"]
    assert accuracy["en"]["graded"] + accuracy["zh"]["graded"] == 10
    assert accuracy["zh"]["fail"] == 2  # i = 0, 6
    assert stage["generator"]["valid"]


def test_generator_health_marks_a_stage_invalid() -> None:
    health = [
        {"event": "stage_done", "index": 0, "tag": "w0", "cpu_s": 9.8, "wall_s": 10.0, "loop_lag_p99_s": 0.05}
    ]
    stage = summarize(_stage_records(), limits=Generator(), health=health)["stages"][0]
    assert not stage["generator"]["valid"]
    assert len(stage["generator"]["invalid_reasons"]) == 2


def test_summary_is_recomputed_from_the_records_file(tmp_path: Path) -> None:
    writer = RecordWriter(tmp_path / "records.jsonl")
    for row in _stage_records():
        writer.write(row)
    writer.close()
    with (tmp_path / "records.jsonl").open("a", encoding="utf-8") as handle:
        handle.write('{"torn": ')  # a crash mid-write leaves a torn last line
    assert len(read_records(tmp_path / "records.jsonl")) == 12
    assert summarize_run(tmp_path) == summarize(_stage_records())
