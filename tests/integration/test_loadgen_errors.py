"""Bad input gives one line and exit code 2; a server that dies mid-run gives error records, not a hang."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from loadgen.calibration.launch import calibration_server
from loadgen.calibration.tasks import write_calibration_tasks
from loadgen.cli import app
from loadgen.profile import Profile
from loadgen.records import read_records
from loadgen.run import run_load
from loadgen.summary import accuracy_table
from tests.support.load import calibration_config

pytestmark = pytest.mark.slow
PROFILE = "{mode: closed, stages: [{concurrency: 1, measure_s: 1}]}"


@pytest.fixture(scope="module")
def tasks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_calibration_tasks(tmp_path_factory.mktemp("tasks"), per_language=1, languages=("en",))


def _cli(
    endpoint: str, tasks: Path, models: str, profile: str = PROFILE, out: Path | None = None
) -> tuple[int, list[str]]:
    """`load run` in process: its exit code and its non-blank output lines."""
    args = ["run", "--endpoint", endpoint, "--tasks", str(tasks), "--models", models, "--profile", profile]
    if out is not None:
        args += ["--out", str(out)]
    result = CliRunner().invoke(app, args)
    return result.exit_code, [line for line in result.output.splitlines() if line.strip()]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_unreachable_endpoint(tasks: Path, tmp_path: Path) -> None:
    code, lines = _cli(f"http://127.0.0.1:{_free_port()}", tasks, "calib", out=tmp_path)
    assert code == 2
    assert len(lines) == 1
    assert lines[0].startswith("error: cannot reach http://127.0.0.1:")
    assert "connection refused" in lines[0]


def test_unknown_model_and_non_sse_reply(tasks: Path, tmp_path: Path) -> None:
    with calibration_server("--ttft-ms", "1") as server:
        code, lines = _cli(server.url, tasks, "calib,nope", out=tmp_path)
    assert code == 2
    assert lines == [f"error: model 'nope' not served by {server.url} (it serves: calib)"]
    with calibration_server("--ttft-ms", "1", "--fault", "non_sse") as server:
        code, lines = _cli(server.url, tasks, "calib", out=tmp_path)
    assert code == 2
    assert len(lines) == 1
    assert "not an SSE stream" in lines[0]


def test_invalid_profile_and_task_set(tasks: Path, tmp_path: Path) -> None:
    code, lines = _cli(
        "http://127.0.0.1:1", tasks, "calib", "{mode: closed, stages: [{concurrency: 0, measure_s: 1}]}"
    )
    assert code == 2
    assert lines == [
        "error: invalid profile (inline): stages.0.concurrency: Input should be greater than or equal to 1"
    ]
    code, lines = _cli("http://127.0.0.1:1", tmp_path / "none", "calib")
    assert code == 2
    assert len(lines) == 1
    assert "does not exist" in lines[0]


def test_server_dying_mid_run_gives_error_records_and_a_summary(tasks: Path, tmp_path: Path) -> None:
    profile = Profile.model_validate(
        {
            "mode": "closed",
            "stages": [{"concurrency": 4, "warmup_s": 0.5, "measure_s": 3.0, "cooldown_s": 0.5}],
            "request": {"timeout_s": 5, "max_tokens": 20},
        }
    )
    started = time.monotonic()
    with calibration_server("--ttft-ms", "50", "--itl-ms", "20", "--die-after-requests", "12") as server:
        result = run_load(calibration_config(server.url, tasks, tmp_path, profile))
    assert time.monotonic() - started < 60
    statuses = {r.status for r in read_records(result.records_path)}
    assert {"ok", "disconnect"} <= statuses
    stage = result.summary.stages[0]
    assert stage.counts.measure_by_status["disconnect"] > 0
    assert (result.run_dir / "summary.json").is_file()
    cut = [
        r
        for r in read_records(result.records_path)
        if r.status == "disconnect" and r.first_token_ns is not None
    ]
    assert cut, "streams cut mid-way keep the tokens that did arrive"
    # live grading: 20-token replies against a 16-token expected answer fail; errors stay ungraded
    graded = {(r.status, r.grade) for r in read_records(result.records_path)}
    assert ("ok", "fail") in graded
    assert ("ok", "pass") not in graded
    assert {grade for status, grade in graded if status != "ok"} == {"ungraded"}
    ok = [r for r in read_records(result.records_path) if r.status == "ok"]
    accuracy = accuracy_table(ok)["calib"]["en"]
    assert accuracy.accuracy == 0.0
    assert accuracy.fail == accuracy.graded > 0
