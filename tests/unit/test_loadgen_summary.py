"""Per-request formulas and stage summaries on synthetic timestamps (recomputable from records)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from loadgen.profile import Generator, Slo
from loadgen.records import RecordWriter, RequestRecord, read_records
from loadgen.summary import distribution, read_summary, summarize, summarize_run
from loadgen.summary_model import RunSummary
from loadgen.timings import e2e_s, itl_s, schedule_lag_s, tpot_s, ttft_from_scheduled_s, ttft_s
from tests.support.records import MS, record


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
    assert (d.n, d.p50, d.min, d.max) == (100, 50.5, 1.0, 100.0)
    assert d.at("p99.9") == pytest.approx(np.percentile(np.arange(1, 101), 99.9))
    assert distribution([]).p99 is None


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
                chunk_offsets_ns=[ttft, ttft + 10 * MS, ttft + 90 * MS],
                language="en" if i % 2 else "zh",
                grade="pass" if i % 3 else "fail",
            )
        )
    rows.append(record(request_id="r-w", phase="warmup"))
    rows.append(
        record(
            request_id="r-e",
            status="http_error",
            first_token_ns=None,
            end_ns=MS,
            chunk_offsets_ns=[],
            output_tokens=None,
            grade="ungraded",
        )
    )
    return rows


def test_stage_summary_counts_throughput_goodput_accuracy() -> None:
    summary = summarize(_stage_records(), slo=Slo(ttft_s=0.5))
    stage = summary.stages[0]
    assert stage.counts.by_phase == {"measure": 11, "warmup": 1}
    assert stage.counts.ok == 10
    assert stage.counts.measure_by_status["http_error"] == 1
    window = stage.window.window_s
    assert window == pytest.approx(4.5)  # first measure send 0 s, last measure send 4.5 s
    # requests ended inside [0, 4.5 s]: the first 8 (each ends 190 ms after its send), not i = 8 (900 ms TTFT
    # makes it end at 4.99 s) nor i = 9; the warmup record (sent at 2 ms, ends at 192 ms) counts: the
    # server completed it inside the window
    assert stage.throughput.completed_in_window == 9
    assert stage.throughput.requests_per_s == pytest.approx(9 / window)
    # tokens by arrival: 10 per request over 3 chunks; i = 8's chunks at 4.9, 4.91, 4.99 s are outside
    inside = 8 * 10 + 10 * 1  # 8 measure requests whole, the warmup one whole
    assert stage.throughput.tokens_in_window == pytest.approx(inside)
    assert stage.throughput.output_tokens_per_s == pytest.approx(inside / window)
    assert stage.throughput.goodput_requests_per_s == pytest.approx(9 / window)  # all 9 met TTFT <= 0.5 s
    assert stage.throughput.goodput_fraction == pytest.approx(8 / 10)
    assert stage.latency_s.ttft.p50 == pytest.approx(0.1)
    accuracy = stage.accuracy["m"]
    assert accuracy["en"].graded + accuracy["zh"].graded == 10
    assert accuracy["zh"].fail == 2  # i = 0, 6
    assert stage.generator.valid
    assert summary.schema_version == 2


def test_generator_health_marks_a_stage_invalid_and_names_the_party() -> None:
    health = [
        {"event": "stage_done", "index": 0, "tag": "w0", "cpu_s": 9.8, "wall_s": 10.0, "loop_lag_p99_s": 0.05}
    ]
    stage = summarize(_stage_records(), limits=Generator(), health=health).stages[0]
    assert not stage.generator.valid
    assert [(f.rule, f.party) for f in stage.generator.findings if f.invalid] == [
        ("generator_cpu", "client"),
        ("loop_lag", "client"),
    ]
    assert all(reason.startswith("client: w0") for reason in stage.generator.invalid_reasons)


def test_loop_lag_while_waiting_for_a_cpu_blames_the_machine() -> None:
    health = [
        {
            "event": "stage_done",
            "index": 0,
            "tag": "w0",
            "cpu_s": 1.0,
            "wall_s": 10.0,
            "runqueue_wait_s": 3.0,  # runnable but not running 30 % of the time, running 10 %
            "loop_lag_p99_s": 0.05,
        }
    ]
    stage = summarize(_stage_records(), health=health).stages[0]
    (finding,) = [f for f in stage.generator.findings if f.invalid]
    assert (finding.rule, finding.party) == ("loop_lag", "machine")
    assert "waited 30% of the time for a CPU" in finding.evidence


def test_summary_is_recomputed_from_the_records_file(tmp_path: Path) -> None:
    writer = RecordWriter(tmp_path / "records.jsonl")
    for row in _stage_records():
        writer.write(row)
    writer.close()
    with (tmp_path / "records.jsonl").open("a", encoding="utf-8") as handle:
        handle.write('{"torn": ')  # a crash mid-write leaves a torn last line
    assert len(read_records(tmp_path / "records.jsonl")) == 12
    assert summarize_run(tmp_path) == summarize(_stage_records())


def test_summary_json_round_trips_and_rejects_unknown_fields(tmp_path: Path) -> None:
    summary = summarize(_stage_records(), slo=Slo(ttft_s=0.5))
    path = tmp_path / "summary.json"
    path.write_text(summary.to_json(), encoding="utf-8")
    on_disk = json.loads(path.read_text(encoding="utf-8"))
    assert on_disk["schema_version"] == 2
    assert on_disk["stages"][0]["latency_s"]["ttft"]["p99.9"] is not None  # the on-disk names stay
    assert on_disk["stages"][0]["accuracy"]["m"]["en"]["pass"] >= 1
    assert read_summary(path) == summary
    on_disk["stages"][0]["throughput"]["surprise"] = 1
    with pytest.raises(ValidationError, match="surprise"):
        RunSummary.model_validate(on_disk)
