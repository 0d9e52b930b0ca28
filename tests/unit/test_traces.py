"""Trace files: the public formats read into rows, bad rows reported and skipped, windows and rescaling
that keep burstiness, the synthetic day, and the row -> task mapping (issue 18)."""

from __future__ import annotations

import itertools
import json
import statistics
from pathlib import Path

import pytest

from benchmark.tasks.schema import TaskRecord
from loadgen.traces import TraceError, offered_rate, read_trace, rescale, window
from loadgen.traces.formats import TraceRow, write_mooncake
from loadgen.traces.mapping import map_rows
from loadgen.traces.synth import SynthSettings, rate_at, synthesize


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_mooncake_rows_sorted_rebased_and_bad_rows_named(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "t.jsonl",
        "\n".join(
            [
                '{"timestamp": 2000, "input_length": 10, "output_length": 5, "hash_ids": [1, 2]}',
                '{"timestamp": 1000, "input_length": 20, "output_length": 7, "hash_ids": [1]}',
                '{"timestamp": 1500, "input_length": 20}',
                "{not json",
                '{"timestamp": 3000, "input_length": -1, "output_length": 7}',
                '{"timestamp": 3500, "input_length": 8, "output_length": 2, "hash_ids": ["x"]}',
                '{"timestamp": 4000, "input_length": 8, "output_length": 2}',
            ]
        )
        + "\n",
    )
    trace = read_trace(path)
    assert trace.format == "mooncake"
    assert [(r.line, r.at_s, r.input_tokens, r.output_tokens, r.hash_ids) for r in trace.rows] == [
        (2, 0.0, 20, 7, (1,)),
        (1, 1.0, 10, 5, (1, 2)),
        (7, 3.0, 8, 2, ()),
    ]
    assert trace.problems == [
        f"{path}:3: missing 'output_length'",
        f"{path}:4: not JSON (Expecting property name enclosed in double quotes at column 2)",
        f"{path}:5: input_length must be a whole number >= 0, got -1",
        f"{path}:6: hash_ids must be a list of integers",
    ]


def test_azure_csv_with_seven_digit_fractions(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "azure.csv",
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n"
        "2023-11-16 18:15:50.9951690,396,109\n"
        "yesterday,1,1\n"
        "2023-11-16 18:15:47.0000000,12\n",
    )
    trace = read_trace(path)
    assert trace.format == "azure"
    assert [r.input_tokens for r in trace.rows] == [374, 396]
    assert trace.rows[1].at_s == pytest.approx(50.9951690 - 46.6805900, abs=1e-6)
    assert trace.problems == [
        f"{path}:4: TIMESTAMP 'yesterday' is not a date and time",
        f"{path}:5: expected 3 fields",
    ]


def test_burstgpt_csv(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "burst.csv",
        "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
        "5,ChatGPT,472,18,490,Conversation log\n"
        "45,GPT-4,1087,0,1087,API log\n",
    )
    trace = read_trace(path)
    assert trace.format == "burstgpt"
    assert [(r.at_s, r.input_tokens, r.output_tokens) for r in trace.rows] == [(0, 472, 18), (40, 1087, 0)]


def test_unusable_traces_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="does not exist"):
        read_trace(tmp_path / "none.jsonl")
    with pytest.raises(TraceError, match=r"no usable row \(first problem: .*:1: not JSON"):
        read_trace(_write(tmp_path / "bad.jsonl", "garbage\n"))
    with pytest.raises(TraceError, match=r"missing column\(s\) ContextTokens"):
        read_trace(_write(tmp_path / "a.csv", "TIMESTAMP,GeneratedTokens\n1,2\n"), "azure")
    with pytest.raises(TraceError, match="cannot tell the format"):
        read_trace(_write(tmp_path / "x.csv", "a,b\n1,2\n"))
    with pytest.raises(TraceError, match="unknown trace format"):
        read_trace(_write(tmp_path / "y.jsonl", "{}\n"), "sharegpt")


def _cv(rows: list[TraceRow]) -> float:
    gaps = [b.at_s - a.at_s for a, b in itertools.pairwise(rows)]
    return statistics.pstdev(gaps) / statistics.fmean(gaps)


def test_rescale_keeps_burstiness_and_sets_the_rate() -> None:
    rows = synthesize(SynthSettings(duration_s=3600, mean_rate=2, peak_to_trough=1, burstiness=0.25))
    faster = rescale(rows, rate=10.0)
    assert offered_rate(faster) == pytest.approx(10.0)
    assert len(faster) == len(rows)
    assert _cv(faster) == pytest.approx(_cv(rows), rel=1e-9)
    assert _cv(rows) > 1.5  # gamma shape 0.25: CV = 1/sqrt(0.25) = 2; Poisson would be 1
    assert rescale(rows, speedup=2.0)[-1].at_s == pytest.approx(rows[-1].at_s / 2)
    with pytest.raises(TraceError, match="not both"):
        rescale(rows, speedup=2, rate=3)


def test_window_rebases_and_refuses_empty() -> None:
    rows = [TraceRow(i + 1, float(i), 1, 1) for i in range(10)]
    cut = window(rows, 3.0, 4.0)
    assert [r.at_s for r in cut] == [0.0, 1.0, 2.0, 3.0]
    assert [r.line for r in cut] == [4, 5, 6, 7]
    with pytest.raises(TraceError, match="no trace row"):
        window(rows, 20.0, 5.0)


def test_synthetic_day_has_the_asked_cycle_and_mean(tmp_path: Path) -> None:
    settings = SynthSettings(duration_s=86_400, mean_rate=1.0, peak_to_trough=4.0, burstiness=0.5)
    rows = synthesize(settings)
    assert rate_at(settings, settings.peak_at_s) / rate_at(
        settings, settings.peak_at_s + 43_200
    ) == pytest.approx(4.0)
    assert len(rows) / 86_400 == pytest.approx(1.0, rel=0.03)
    hourly = [sum(1 for r in rows if h * 3600 <= r.at_s < (h + 1) * 3600) for h in range(24)]
    peak_hour, trough_hour = hourly[14], hourly[2]
    assert 2.5 < peak_hour / trough_hour < 6  # 4x with counting noise of hourly buckets
    path = tmp_path / "day.jsonl"
    write_mooncake(rows, path)
    back = read_trace(path)
    assert len(back.rows) == len(rows)
    assert not back.problems
    assert back.rows[-1].at_s == pytest.approx(rows[-1].at_s - rows[0].at_s, abs=1e-3)


def _task(i: int, prompt_len: int) -> TaskRecord:
    return TaskRecord.model_validate(
        {
            "id": f"t/{i}",
            "source": {"benchmark": "x", "source_id": str(i), "license": "MIT"},
            "natural_language": "en",
            "programming_language": "python",
            "prompt": "x" * prompt_len,
            "grading": {"method": "exact_match"},
            "expected_answer": "a",
            "metadata": {"image_required": False, "group": "text-only"},
        }
    )


def test_rows_map_to_the_closest_task_and_prefixes_share_a_task() -> None:
    tasks = [_task(0, 350), _task(1, 3500), _task(2, 700)]  # 100, 1000, 200 tokens at 3.5 bytes/token
    rows = [
        TraceRow(1, 0.0, 190, 5),
        TraceRow(2, 1.0, 900, 6, (7, 8)),
        TraceRow(3, 2.0, 120, 7, (7, 9)),  # same first block as row 2: same task despite its length
        TraceRow(4, 3.0, 120, 0),
    ]
    mapped = map_rows(rows, tasks)
    assert [(m.task_index, m.max_tokens) for m in mapped] == [(2, 5), (1, 6), (1, 7), (0, 1)]
    assert [m.estimated_prompt_tokens for m in mapped] == [200, 1000, 1000, 100]


def test_records_replay_their_own_schedule(tmp_path: Path) -> None:
    from loadgen.records import RequestRecord

    base = {
        "run_id": "r",
        "stage": "s0",
        "stage_index": 0,
        "mode": "open",
        "target": 1.0,
        "phase": "measure",
        "worker": "w",
        "model": "m",
        "task_id": "t",
        "language": "en",
        "anchor_wall_ns": 1_000_000_000_000,
        "anchor_perf_ns": 0,
        "status": "ok",
        "timing": "kernel",
    }
    lines = []
    for i, (scheduled, tokens) in enumerate([(5_000_000_000, 3), (2_000_000_000, 4)]):
        fields = {**base, "request_id": f"q{i}", "scheduled_ns": scheduled, "sent_ns": scheduled + 1000}
        fields.update({"end_ns": scheduled + 10**9, "prompt_tokens": 11, "output_tokens": tokens})
        record = RequestRecord.model_validate(fields)
        lines.append(record.model_dump_json())
    path = _write(tmp_path / "records.jsonl", "\n".join(lines) + "\n")
    trace = read_trace(path)
    assert trace.format == "m3bench"
    assert [(r.at_s, r.output_tokens) for r in trace.rows] == [(0.0, 4), (3.0, 3)]
    assert json.loads(lines[0])["request_id"] == "q0"
