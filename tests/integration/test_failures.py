"""Failures are loud, and stopping stops (issue 21), with real Locust processes through the real CLI.

The calibration server (loadgen/calibration) is the honest stand-in for a model server here: it logs
every request it receives (``--request-log``), so "nothing keeps sending" is read from the server's
side, and it can answer instant 500s or 404s. The engine-death test against real vLLM/Ray is in
test_failures_serving.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from loadgen.calibration.launch import RunningServer, calibration_server
from loadgen.calibration.tasks import write_calibration_tasks
from loadgen.outcome import EXIT_ERRORS, EXIT_GENERATOR_FAILED
from loadgen.records import read_records
from tests.support.load import closed_profile, start_load_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tasks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_calibration_tasks(tmp_path_factory.mktemp("tasks"), per_language=1, languages=("en",))


def _profile(measure_s: float, **extra: object) -> str:
    return closed_profile(4, measure_s, timeout_s=10, **extra)


def _load_run(
    server: RunningServer, tasks: Path, out: Path, profile: str, *more: str, models: str = "calib"
) -> subprocess.Popen[str]:
    return start_load_run(server.url, tasks, models, profile, out, *more)


@pytest.fixture
def request_log(tmp_path: Path) -> Path:
    return tmp_path / "requests.log"


@pytest.fixture
def server(request_log: Path) -> Iterator[RunningServer]:
    with calibration_server(
        "--ttft-ms", "50", "--itl-ms", "20", "--output-len", "16", "--request-log", str(request_log)
    ) as running:
        yield running


def _lines(path: Path) -> int:
    """Requests of the load run the server received (its log also holds the preflight's request)."""
    return sum(line.startswith("run-") for line in path.read_text().splitlines()) if path.is_file() else 0


def _wait_for_requests(log: Path, count: int, process: subprocess.Popen[str], limit_s: float = 90) -> None:
    deadline = time.monotonic() + limit_s
    while _lines(log) < count:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the load run never sent"
        time.sleep(0.1)


def _generator_processes(parent: int) -> list[psutil.Process]:
    return [p for p in psutil.Process(parent).children(recursive=True) if "locust" in " ".join(p.cmdline())]


@contextmanager
def _sending(
    server: RunningServer, request_log: Path, tasks: Path, out: Path, requests: int
) -> Iterator[tuple[subprocess.Popen[str], list[psutil.Process]]]:
    """A 2-minute load run once the server has seen ``requests`` of it, and its Locust processes; on the
    way out it is killed if still running, and reaped."""
    process = _load_run(server, tasks, out, _profile(120))
    try:
        _wait_for_requests(request_log, requests, process)
        generators = _generator_processes(process.pid)
        assert generators
        yield process, generators
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


def _running(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those still running (an exited process whose new parent has not reaped it yet is not)."""
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            continue
    return alive


def test_sigterm_stops_sending_within_2_s_and_writes_the_summary(
    server: RunningServer, request_log: Path, tasks: Path, tmp_path: Path
) -> None:
    with _sending(server, request_log, tasks, tmp_path / "out", 40) as (process, generators):
        process.send_signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        time.sleep(2.0)
        sent_by_2s = _lines(request_log)
        stdout, stderr = process.communicate(timeout=60)
        took_s = time.monotonic() - stopped_at
        time.sleep(1.0)
        assert _lines(request_log) == sent_by_2s, "requests still arrived more than 2 s after SIGTERM"
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert took_s < 30
    assert stdout.strip().splitlines()[-1].startswith("interrupted by SIGTERM: ")
    run_dir = tmp_path / "out" / "run"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["run"]["outcome"]["verdict"] == "interrupted"
    assert summary["run"]["outcome"]["code"] == 143
    assert "interrupted" in summary["run"]["warnings"]
    records = read_records(run_dir / "records.jsonl")
    # every request the server saw is a record: the drain let open requests finish
    assert len(records) == _lines(request_log)
    assert sum(r.status == "ok" for r in records) >= 36
    assert not _running(generators)


def test_sigkill_of_the_parent_stops_locust_within_2_s(
    server: RunningServer, request_log: Path, tasks: Path, tmp_path: Path
) -> None:
    with _sending(server, request_log, tasks, tmp_path / "out", 20) as (process, generators):
        process.kill()
        killed_at = time.monotonic()
        alive = _running(generators)
        while alive and time.monotonic() < killed_at + 2.0:
            time.sleep(0.05)
            alive = _running(alive)
        gone_s = time.monotonic() - killed_at
        assert not alive, f"Locust outlived its parent by more than 2 s: {[p.pid for p in alive]}"
        count = _lines(request_log)
        time.sleep(1.0)
        assert _lines(request_log) == count
    print(f"Locust processes gone {gone_s:.2f} s after the parent's SIGKILL")
    records = read_records(tmp_path / "out" / "run" / "records" / "local.jsonl")
    assert len(records) >= 16  # what was measured before the kill is on disk


def test_instant_500s_back_off_and_exit_3_naming_the_cause(tasks: Path, tmp_path: Path) -> None:
    with calibration_server("--fault", "http500") as server:
        process = _load_run(server, tasks, tmp_path / "out", _profile(4), "--no-preflight")
        out, err = process.communicate(timeout=120)
    assert process.returncode == EXIT_ERRORS, err
    last = out.strip().splitlines()[-1]
    assert last.startswith("errors above threshold: stage s0-c4: ")
    assert " http_error measured; main cause: http_error" in last
    assert "programmed failure" in last
    summary = json.loads((tmp_path / "out" / "run" / "summary.json").read_text())
    backoff = summary["run"]["backoff"]
    # 4 streams for 4 s: waits 0.1, 0.2, 0.4, 0.8, 1.6, 2, ... leave each stream about 6 sends
    records = read_records(tmp_path / "out" / "run" / "records.jsonl")
    assert backoff["enabled"] is True
    assert backoff["waits"] >= 4 * 4
    assert len(records) <= 4 * 9, f"{len(records)} requests in 4 s: the closed loop did not back off"


def test_unknown_model_without_preflight_exits_3_not_found(tasks: Path, tmp_path: Path) -> None:
    with calibration_server() as server:
        process = _load_run(server, tasks, tmp_path / "out", _profile(1), "--no-preflight", models="nope")
        out, err = process.communicate(timeout=120)
    assert process.returncode == EXIT_ERRORS, err
    last = out.strip().splitlines()[-1]
    assert "0 ok" not in last
    assert "main cause: not_found" in last
    assert "The model `nope` does not exist." in last
    records = read_records(tmp_path / "out" / "run" / "records.jsonl")
    assert {r.cause for r in records} == {"not_found"}


def test_a_missing_task_image_is_one_line_before_locust_starts(tasks: Path, tmp_path: Path) -> None:
    broken = write_calibration_tasks(tmp_path / "broken", per_language=1, languages=("en",))
    for image in (broken / "images").iterdir():
        image.unlink()
    with calibration_server() as server:
        process = _load_run(server, broken, tmp_path / "out", _profile(1))
        _, err = process.communicate(timeout=120)
    assert process.returncode == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1
    assert lines[0].startswith("error: task set ")
    assert "is missing or unreadable" in lines[0]
    assert not (tmp_path / "out" / "run" / "logs").exists()


def test_a_locust_start_up_failure_is_one_line_with_its_cause(tasks: Path, tmp_path: Path) -> None:
    profile = _profile(1, generator={"cpus": [os.cpu_count() or 64]})  # a CPU this machine lacks
    with calibration_server() as server:
        process = _load_run(server, tasks, tmp_path / "out", profile)
        out, err = process.communicate(timeout=120)
    assert process.returncode == EXIT_GENERATOR_FAILED, out + err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("[load]")]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: the load generator failed: Locust exited with code ")
    assert "OSError: [Errno 22] Invalid argument (see logs/local.log)" in lines[0]
