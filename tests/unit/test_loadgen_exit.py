"""Failures are loud (issue 21), unit level: error head + tail and cause, the run's exit status and last
line, the closed-loop back-off, task images checked at load, the Locust failure line."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest

from loadgen.calibration.tasks import write_calibration_tasks
from loadgen.http_stream import RawReply
from loadgen.outcome import EXIT_ERRORS, EXIT_GENERATOR_FAILED, EXIT_OK, judge
from loadgen.profile import Backoff, LoadgenError, Profile, RequestOptions, RunConfig, Sampling
from loadgen.records import RequestRecord
from loadgen.run import _cause, backoff_summary
from loadgen.sse import ERROR_HEAD, ERROR_TAIL, classify_error, clip_error, parse_reply
from loadgen.worker import StreamBackoff
from loadgen.workload import Workload

RAY_TRACEBACK = (
    "Traceback (most recent call last):\n"
    + '  File "/ray/serve/_private/replica.py", line 1, in handle_request\n    frame()\n' * 120
    + "vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. See stack trace.\n"
)


def _reply(status: int, body: str, took_ns: int = 1_000_000) -> RawReply:
    data = json.dumps({"error": {"message": body, "type": "InternalServerError", "code": status}})
    return RawReply(
        sent_ns=1_000,
        end_ns=1_000 + took_ns,
        status=status,
        headers={"content-type": "application/json"},
        body=bytearray(data.encode()),
        complete=True,
    )


def test_a_long_server_error_keeps_its_head_and_the_exception_at_its_end() -> None:
    assert len(RAY_TRACEBACK) > 3 * (ERROR_HEAD + ERROR_TAIL)
    parsed = parse_reply(_reply(500, RAY_TRACEBACK))
    assert parsed.status == "http_error"
    assert parsed.error.startswith("HTTP 500: Traceback (most recent call last)")
    assert parsed.error.rstrip().endswith("EngineCore encountered an issue. See stack trace.")
    assert "characters cut" in parsed.error
    assert len(parsed.error) < ERROR_HEAD + ERROR_TAIL + 100
    assert parsed.cause == "engine_dead"
    # the old cut (first 2,000 characters) lost the exception: the tail is what names it
    assert "EngineDeadError" not in parsed.error[:2000]


def test_non_json_error_bodies_are_not_cut_at_200_characters() -> None:
    body = "x" * 500 + " torch.OutOfMemoryError: tried to allocate"
    reply = RawReply(status=500, headers={"content-type": "text/plain"}, body=bytearray(body.encode()))
    reply.complete = True
    parsed = parse_reply(reply)
    assert parsed.error.endswith("tried to allocate")
    assert parsed.cause == "out_of_memory"


@pytest.mark.parametrize(
    ("text", "status", "cause"),
    [
        ("HTTP 500: ... EngineDeadError: EngineCore encountered an issue", 500, "engine_dead"),
        ("HTTP 500: RuntimeError: CUDA out of memory. Tried to allocate 2 GiB", 500, "out_of_memory"),
        ("HTTP 400: This model's maximum context length is 2048 tokens", 400, "bad_request"),
        ("HTTP 400: something the server did not like", 400, "bad_request"),
        ("HTTP 404: The model `nope` does not exist.", 404, "not_found"),
        ("HTTP 500: ZeroDivisionError: division by zero", 500, None),
        ("connection closed mid-reply after 10 body bytes", None, None),
    ],
)
def test_classify_error(text: str, status: int | None, cause: str | None) -> None:
    assert classify_error(text, status) == cause


def test_short_errors_are_kept_whole() -> None:
    assert clip_error("HTTP 503: busy") == "HTTP 503: busy"


def _record(stage: str, status: str, cause: str | None = None, phase: str = "measure") -> RequestRecord:
    return RequestRecord.model_validate(
        {
            "run_id": "r",
            "request_id": f"r-{id(object())}",
            "stage": stage,
            "stage_index": 0,
            "phase": phase,
            "mode": "closed",
            "target": 4,
            "worker": "local",
            "model": "m",
            "task_id": "t",
            "language": "en",
            "sent_ns": 0,
            "end_ns": 1,
            "timing": "user",
            "anchor_wall_ns": 0,
            "anchor_perf_ns": 0,
            "status": status,
            "error": "" if status == "ok" else f"HTTP 500: boom {cause}",
            "cause": cause,
        }
    )


def test_every_stage_under_the_threshold_exits_0() -> None:
    records = [_record("a", "ok")] * 199 + [_record("a", "http_error", "engine_dead")]
    outcome = judge(records, ["a"], 0.01)
    assert outcome.code == EXIT_OK
    assert outcome.line.startswith("ok: 199 ok, 1 http_error measured; main cause: engine_dead (1x")
    assert outcome.line.endswith("(exit 0)")


def test_errors_above_the_threshold_name_counts_and_the_main_cause() -> None:
    records = (
        [_record("a", "ok")] * 82
        + [_record("a", "http_error", "engine_dead")] * 2085
        + [_record("a", "disconnect")] * 3
        + [_record("a", "http_error", "engine_dead", phase="warmup")] * 50  # not measured
    )
    outcome = judge(records, ["a"], 0.01)
    assert outcome.code == EXIT_ERRORS
    assert outcome.verdict == "errors_above_threshold"
    assert outcome.by_status == {"ok": 82, "http_error": 2085, "timeout": 0, "disconnect": 3, "bad_stream": 0}
    assert outcome.main_cause == "engine_dead"
    assert outcome.causes == {"engine_dead": 2085, "disconnect": 3}
    assert "stage a: 2088/2170 errors (96.2% > 1.0%)" in outcome.line
    assert "82 ok, 2085 http_error, 3 disconnect measured" in outcome.line
    assert 'main cause: engine_dead (2085x: "HTTP 500: boom engine_dead")' in outcome.line


def test_a_stage_without_measured_requests_is_not_a_pass() -> None:
    outcome = judge([_record("a", "ok")], ["a", "b"], 0.01)
    assert outcome.code == EXIT_ERRORS
    assert outcome.reasons == ["stage b measured no request"]


def test_generator_failure_and_signals_win() -> None:
    records = [_record("a", "ok")] * 10
    failed = judge(records, ["a"], 0.01, problems=["w0 exited early with code -9: killed"])
    assert failed.code == EXIT_GENERATOR_FAILED
    assert failed.line.startswith("load generator failed: w0 exited early with code -9")
    stopped = judge(records, ["a", "b"], 0.01, problems=["x"], interrupted=signal.SIGTERM)
    assert stopped.code == 128 + signal.SIGTERM
    assert stopped.line.startswith("interrupted by SIGTERM: 10 ok measured")


def test_threshold_is_a_profile_option_defaulting_to_one_percent() -> None:
    profile = Profile.model_validate({"mode": "closed", "stages": [{"concurrency": 1, "measure_s": 1}]})
    assert profile.max_error_fraction == 0.01
    assert profile.backoff.enabled


def test_backoff_after_immediate_5xx_doubles_to_its_bound_and_resets() -> None:
    backoff = StreamBackoff(Backoff(initial_s=0.1, max_s=0.5, immediate_s=1.0))
    quick_500 = _reply(500, "dead", took_ns=5_000_000)
    waits = [backoff.wait_after(quick_500) for _ in range(5)]
    assert waits == [0.1, 0.2, 0.4, 0.5, 0.5]
    assert backoff.wait_after(_reply(200, "", took_ns=5_000_000)) == 0.0
    assert backoff.wait_after(quick_500) == 0.1  # reset by the success
    assert backoff.wait_after(_reply(500, "slow", took_ns=3_000_000_000)) == 0.0  # not immediate
    assert backoff.wait_after(_reply(404, "no such model")) == 0.0  # not a 5xx
    off = StreamBackoff(Backoff(enabled=False))
    assert off.wait_after(quick_500) == 0.0


def test_backoff_waits_reach_the_summary(tmp_path: Path) -> None:
    rows = [
        {"event": "stage_start", "index": 0, "name": "s0-c4"},
        {"event": "stage_done", "tag": "w0", "index": 0, "backoffs": 30, "backoff_s": 12.5},
        {"event": "stage_done", "tag": "w1", "index": 0, "backoffs": 2, "backoff_s": 0.3},
    ]
    (tmp_path / "generator.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = RunConfig(
        endpoint="http://127.0.0.1:1",
        tasks=tmp_path,
        models=["m"],
        profile=Profile.model_validate({"mode": "closed", "stages": [{"concurrency": 4, "measure_s": 1}]}),
    )
    summary = backoff_summary(tmp_path, config)
    assert summary["enabled"] is True
    assert summary["waits"] == 32
    assert summary["wait_s"] == 12.8
    assert summary["by_stage"] == {"s0-c4": {"waits": 32, "wait_s": 12.8}}


def test_task_images_are_checked_when_the_task_set_loads(tmp_path: Path) -> None:
    tasks = write_calibration_tasks(tmp_path / "tasks", per_language=2, languages=("en",))
    Workload(tasks, ["m"], Sampling(), RequestOptions())
    shutil.rmtree(tasks / "images")
    with pytest.raises(LoadgenError, match=r"task .*: image .*images/\w+\.png is missing or unreadable"):
        Workload(tasks, ["m"], Sampling(), RequestOptions())


def test_locust_failure_line_is_its_last_exception(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "local.log").write_text(
        "[2026-12-05 05:00:00,000] host/INFO/locust.main: Starting Locust 2.47.0\n"
        "Traceback (most recent call last):\n"
        '  File "loadgen/workload.py", line 120, in _image_url\n'
        "loadgen.profile.LoadgenError: task HumanEval/0-en: cannot read image /x.png: No such file\n"
        "[2026-12-05 05:00:01,000] host/INFO/locust.main: Shutting down (exit code 1)\n"
    )
    cause = _cause(tmp_path, "local")
    assert cause.startswith("loadgen.profile.LoadgenError: task HumanEval/0-en: cannot read image /x.png")
    assert cause.endswith("(see logs/local.log)")
    assert _cause(tmp_path, "w3") == "no log (logs/w3.log)"
