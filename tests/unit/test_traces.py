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


# ---------------------------------------------------------------- the trace load mode (replay)


def _trace_file(tmp_path: Path, offsets_ms: list[int], outputs: list[int] | None = None) -> Path:
    rows = [
        TraceRow(i + 1, ms / 1000, 10 + i, (outputs or [3] * len(offsets_ms))[i])
        for i, ms in enumerate(offsets_ms)
    ]
    path = tmp_path / "trace.jsonl"
    write_mooncake(rows, path)
    return path


def test_trace_stage_profile_is_validated(tmp_path: Path) -> None:
    from loadgen.profile import Profile, ProfileError, load_profile

    path = _trace_file(tmp_path, [0, 500, 1500])
    profile = Profile.model_validate({"mode": "open", "stages": [{"trace": {"path": str(path)}}]})
    stage = profile.resolved_stages()[0]
    assert stage.name == "s0-trace"
    assert stage.trace is not None
    assert stage.trace.path == path.resolve()
    bad = {
        "missing file": ({"trace": {"path": str(tmp_path / "nope.jsonl")}}, "does not exist"),
        "two targets": ({"rate": 3, "trace": {"path": str(path)}}, "exactly one of"),
        "speed and rate": ({"trace": {"path": str(path), "speedup": 2, "rate": 3}}, "speedup or rate"),
        "ramp": ({"warmup_s": 1, "ramp_s": 1, "trace": {"path": str(path)}}, "no ramp"),
    }
    for name, (stage_spec, message) in bad.items():
        with pytest.raises(ProfileError, match=message):
            load_profile(json.dumps({"mode": "open", "stages": [stage_spec]}))
        assert name


def test_trace_plan_replays_every_row_at_its_offset(tmp_path: Path) -> None:
    from loadgen.profile import Arrival, Profile
    from loadgen.schedule import OpenLoopPhases, arrivals, build_plans
    from loadgen.traces.replay import TAIL_S

    path = _trace_file(tmp_path, [0, 250, 250, 1000, 4000, 4001])
    stages = [
        {"trace": {"path": str(path), "speedup": 2}, "warmup_s": 0.2, "cooldown_s": 1},
        {"rate": 5, "measure_s": 1},
    ]
    plans = build_plans(Profile.model_validate({"mode": "open", "stages": stages}))
    plan = plans[0]
    assert plan.trace is not None
    assert plan.mode == "open"
    assert plan.target == pytest.approx(5 / 2.0005)  # (rows - 1) / span after the speed-up
    assert plan.measure_s == pytest.approx(2.0005 - 0.2 + TAIL_S)
    assert plans[1].trace is None
    assert plans[1].previous_target == plans[1].target == 5
    sequence = list(arrivals(plan, Arrival(), seed=1))
    assert [(i, at) for i, at, _ in sequence] == [
        (0, 0.0),
        (1, 0.125),
        (2, 0.125),
        (3, 0.5),
        (4, 2.0),
        (5, 2.0005),
    ]  # then it ends: a trace stage has as many arrivals as rows
    phases = OpenLoopPhases(plan)
    assert [phases.phase(at) for _, at, _ in sequence] == ["warmup"] * 3 + ["measure"] * 3
    with_window = Profile.model_validate(
        {"mode": "open", "stages": [{"trace": {"path": str(path), "start_s": 0.2, "duration_s": 3.0}}]}
    )
    windowed = build_plans(with_window)[0]
    assert [round(at, 4) for _, at, _ in arrivals(windowed, Arrival(), 0)] == [0.05, 0.05, 0.8]
    assert windowed.measure_s == pytest.approx(3.0 + TAIL_S)  # to the window's end, not the last row


def test_trace_that_warmup_covers_is_refused(tmp_path: Path) -> None:
    from loadgen.profile import Profile
    from loadgen.schedule import build_plans

    path = _trace_file(tmp_path, [0, 1000])
    profile = Profile.model_validate(
        {"mode": "open", "stages": [{"trace": {"path": str(path)}, "warmup_s": 5}]}
    )
    with pytest.raises(TraceError, match="covers the whole trace"):
        build_plans(profile)


def test_row_output_length_is_spliced_into_the_prebuilt_body(tmp_path: Path) -> None:
    from loadgen.calibration.tasks import write_calibration_tasks
    from loadgen.profile import RequestOptions, Sampling, TraceSpec
    from loadgen.traces.replay import Replay, length_fields
    from loadgen.workload import Workload

    tasks = write_calibration_tasks(tmp_path / "tasks", per_language=1, languages=("en",))
    options = RequestOptions(extra_body={"top_p": 0.5, "stop": ["\n\n"]})
    workload = Workload(tasks, ["m"], Sampling(), options)
    plain = json.loads(workload.body(0, "m"))
    assert plain["stop"] == ["\n\n"]
    assert plain["max_tokens"] == 16
    assert plain["model"] == "m"
    exact = json.loads(workload.body(0, "m", length_fields(7, "ignore_eos"), keep_stop=False))
    assert exact == {
        **{k: v for k, v in plain.items() if k != "stop"},
        "max_tokens": 7,
        "ignore_eos": True,
    }
    minimum = json.loads(workload.body(0, "m", length_fields(9, "min_tokens"), keep_stop=False))
    assert (minimum["max_tokens"], minimum["min_tokens"], "stop" in minimum) == (9, 9, False)
    capped = json.loads(workload.body(0, "m", length_fields(5, "max_tokens"), keep_stop=True))
    assert (capped["max_tokens"], capped["stop"], "ignore_eos" in capped) == (5, ["\n\n"], False)

    path = _trace_file(tmp_path, [0, 10, 20], outputs=[4, 0, 12])
    replay = Replay(TraceSpec(path=path), workload.tasks)
    assert [(r.line, r.length, r.keep_stop) for r in replay.rows] == [
        (1, b',"max_tokens":4,"ignore_eos":true', False),
        (2, b',"max_tokens":1,"ignore_eos":true', False),  # an output length of 0 asks for one token
        (3, b',"max_tokens":12,"ignore_eos":true', False),
    ]
    assert replay.offered_rate(0.02, window_s=1.0) == 3.0


def _record(
    index: int, scheduled_s: float, lag_s: float, ttft: float, status: str = "ok"
) -> dict[str, object]:
    scheduled = int(scheduled_s * 1e9)
    sent = scheduled + int(lag_s * 1e9)
    return {
        "run_id": "r",
        "request_id": f"q{index}",
        "stage": "s0-trace",
        "stage_index": 0,
        "phase": "measure",
        "mode": "open",
        "target": 1.0,
        "worker": "local",
        "model": "m",
        "task_id": "t",
        "language": "en",
        "trace_line": index + 1,
        "scheduled_ns": scheduled,
        "sent_ns": sent,
        "first_token_ns": sent + int(ttft * 1e9) if status == "ok" else None,
        "end_ns": sent + int((ttft + 0.05) * 1e9),
        "chunk_offsets_ns": [int(ttft * 1e9)] if status == "ok" else [],
        "timing": "kernel",
        "anchor_wall_ns": 1_000_000_000_000_000_000,
        "anchor_perf_ns": 0,
        "output_tokens": 1 if status == "ok" else None,
        "status": status,
    }


def test_summary_gives_offered_and_achieved_rate_latency_and_slo_per_bucket() -> None:
    from loadgen.profile import Slo
    from loadgen.records import RequestRecord
    from loadgen.summary import summarize

    start_unix = 1_000_000_000.0
    rows = [_record(i, 0.5 * i, 0.0001, 0.1) for i in range(20)]  # 0..9.5 s: 2/s, all fast
    rows += [_record(20 + i, 10 + 0.2 * i, 0.0001, 0.3) for i in range(50)]  # 10..19.8 s: 5/s, slow
    rows[-1] = _record(69, 19.8, 0.5, 0.3)  # sent 0.5 s late: in the next bucket
    rows.append(_record(70, 15.0, 0.0001, 0.1, status="http_error"))
    records = [RequestRecord.model_validate(r) for r in rows]
    health = [{"event": "stage_start", "index": 0, "start_wall_ns": int(start_unix * 1e9)}]
    summary = summarize(records, Slo(ttft_s=0.2), health=health)
    over = summary.stages[0].over_time
    assert over is not None
    assert over.bucket_s == 10.0
    assert over.anchor.startswith("stage start")
    first, second, third = over.buckets
    assert (first.offered, first.sent, first.offered_rate_per_s, first.achieved_rate_per_s) == (
        20,
        20,
        2.0,
        2.0,
    )
    assert (second.offered, second.sent, second.errors, third.offered, third.sent) == (51, 50, 1, 0, 1)
    assert first.slo_attainment == 1.0
    assert second.slo_attainment == 0.0  # slow (0.3 s > 0.2 s) or failed
    assert first.ttft_p50_s == pytest.approx(0.1)
    assert second.ttft_p99_s == pytest.approx(0.3)
    assert second.schedule_lag_p99_s == pytest.approx(quantile_lags(), abs=1e-4)
    no_anchor = summarize(records, Slo()).stages[0].over_time
    assert no_anchor is not None
    assert no_anchor.anchor == "first scheduled send"
    assert all(bucket.slo_attainment is None for bucket in no_anchor.buckets)  # no SLO set


def quantile_lags() -> float:
    from loadgen.stats import quantile

    return quantile([0.0001] * 50 + [0.5], 0.99)


def test_traffic_report_shows_the_over_time_panels(tmp_path: Path) -> None:
    from loadgen.records import RequestRecord
    from m3bench.report.traffic import write_traffic_report

    rows = [_record(i, 0.5 * i, 0.0001, 0.1 if i < 20 else 0.4) for i in range(40)]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "records.jsonl").write_text(
        "".join(RequestRecord.model_validate(r).model_dump_json() + "\n" for r in rows), encoding="utf-8"
    )
    (run_dir / "run.json").write_text(
        json.dumps({"profile": {"slo": {"ttft_s": 0.2}, "stages": [{"trace": {"bucket_s": 5.0}}]}}),
        encoding="utf-8",
    )
    paths = write_traffic_report(run_dir)
    markdown = paths["markdown"].read_text(encoding="utf-8")
    assert "5 s buckets" in markdown
    assert "| 0 | 2.00 | 2.00 | 10 | 0 | 100.0 | 100.0 |" in markdown
    assert "| 10 | 2.00 | 2.00 | 10 | 0 | 400.0 | 400.0 |" in markdown
    assert markdown.count("| 100.0% |") == 2
    assert markdown.count("| 0.0% |") == 2
    assert (run_dir / "report" / "images" / "traffic-00.png").read_bytes().startswith(b"\x89PNG")
    page = paths["html"].read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 1
    assert "<table>" in page


def test_a_bad_trace_is_a_one_line_profile_error(tmp_path: Path) -> None:
    from loadgen.profile import ProfileError, load_profile

    bad = _write(tmp_path / "bad.jsonl", "x\n")
    with pytest.raises(
        ProfileError, match=r"^invalid profile \(inline\): trace .*bad.jsonl has no usable row"
    ):
        load_profile(json.dumps({"mode": "open", "stages": [{"trace": {"path": str(bad)}}]}))
    single = _trace_file(tmp_path, [0])
    profile = load_profile(json.dumps({"mode": "open", "stages": [{"trace": {"path": str(single)}}]}))
    assert profile.resolved_stages()[0].trace is not None  # one row: a trace of length 0, still a stage
