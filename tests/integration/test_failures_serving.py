"""Engine death under load, on the real stack (issue 21): one embedded model (tiny-llava-awq) served by
vLLM's CPU engine behind Ray Serve, loaded by `m3bench load run` (real Locust), through the CLI.

Killing vLLM's EngineCore process must give: records whose cause says ``engine_dead``, a load run that
exits 3 (errors above threshold) naming that cause, closed-loop back-off waits in the summary, `serve
status` non-zero while the model has no replica running, and no /dev/shm segment of the dead engine
left once the stack has recovered (nor of any engine after `serve down`). Prints the recovery times that
docs/serving.md's failure-modes table quotes.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from loadgen.calibration.tasks import write_calibration_tasks
from loadgen.outcome import EXIT_ERRORS
from loadgen.records import read_records
from loadgen.timings import wall_s
from serving.stack import StackState
from serving.stack.shm import SHM_DIR, held_segments
from serving.stack.smoke import chat_body, image_data_url, stream_chat
from tests.support.load import closed_profile, m3bench, start_load_run
from tests.support.ports import free_port_plan
from tests.support.stack import Up

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
CATALOG = REPO / "deploy/models/embedded-cpu.yaml"
MODEL = "tiny-llava-awq"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    state_dir = tmp_path_factory.mktemp("serve-state")
    plan = free_port_plan(30000, 45000)
    up = [
        *("serve", "up", "--catalog", str(CATALOG), "--only", MODEL),
        *("--port-base", str(plan.base), "--http-port", str(plan.http)),
        *("--state-dir", str(state_dir), "--timeout", "420"),
    ]
    try:
        done = m3bench(*up)
        assert done.returncode == 0, done.stderr[-3000:]
        state = StackState.load(state_dir)
        assert state is not None
        yield Up(state, state_dir)
    finally:
        m3bench("serve", "down", "--state-dir", str(state_dir), timeout_s=180)


def _status(stack: Up) -> tuple[int, dict[str, object]]:
    done = m3bench("serve", "status", "--json", "--state-dir", str(stack.state_dir), timeout_s=120)
    return done.returncode, json.loads(done.stdout) if done.stdout.strip() else {}


def _running(report: dict[str, object]) -> int | None:
    replicas = report.get("replicas")
    if not isinstance(replicas, dict) or MODEL not in replicas:
        return None
    return int(replicas[MODEL]["running"])


def _engine(stack: Up) -> psutil.Process:
    engines = [p for p in stack.cluster.processes() if "EngineCore" in " ".join(p.cmdline()) + p.name()]
    assert len(engines) == 1, [(p.pid, p.name()) for p in engines]
    return engines[0]


def test_engine_death_is_loud_and_recovers(stack: Up, tmp_path: Path) -> None:
    tasks = write_calibration_tasks(tmp_path / "tasks", per_language=2, languages=("en",))
    code, report = _status(stack)
    assert code == 0, report
    engine = _engine(stack)
    replica = engine.parent()  # the Serve replica actor: Serve replaces it when its engine is dead
    assert replica is not None
    segments = held_segments([engine.pid, replica.pid])
    profile = closed_profile(2, measure_s=100, timeout_s=60)
    load = start_load_run(stack.endpoint, tasks, MODEL, profile, tmp_path / "load")
    try:
        time.sleep(15)  # steady load first
        assert load.poll() is None
        killed_at = time.time()
        os.kill(engine.pid, signal.SIGKILL)
        polls: list[tuple[float, int, dict[str, object]]] = []
        back_seen: float | None = None
        while time.time() < killed_at + 240 and back_seen is None:
            code, report = _status(stack)
            polls.append((time.time() - killed_at, code, report))
            if code == 0 and any(_running(r) == 0 for _, _, r in polls):
                back_seen = time.time()
            time.sleep(1)
        out, err = load.communicate(timeout=300)
    finally:
        if load.poll() is None:
            load.kill()
            load.communicate()
    timeline = [(round(t, 1), c, r.get("problem")) for t, c, r in polls]
    print("serve status after the kill (s, exit, problem):", timeline)
    none_running = [t for t, c, r in polls if c != 0 and _running(r) == 0]
    assert none_running, "serve status never reported the model without a running replica"
    assert all(c != 0 for t, c, r in polls if _running(r) == 0)
    down_seen = killed_at + none_running[0]
    assert back_seen is not None, "the model never came back"

    assert load.returncode == EXIT_ERRORS, err[-3000:]
    last = out.strip().splitlines()[-1]
    assert last.startswith("errors above threshold: stage s0-c2: "), last
    assert "main cause: engine_dead" in last, last
    records = read_records(tmp_path / "load" / "run" / "records.jsonl")
    dead = [r for r in records if r.cause == "engine_dead"]
    assert dead, sorted({(r.status, r.error[:80]) for r in records if r.status != "ok"})
    # instant 500s whose kept tail names the exception, and streams cut by an in-stream error event
    assert {(r.status, r.http_status) for r in dead} <= {("http_error", 500), ("bad_stream", 200)}
    assert all(r.error.rstrip().endswith("for the root cause.") for r in dead if r.http_status == 500)
    assert any("EngineDeadError" in r.error for r in dead)
    summary = json.loads((tmp_path / "load" / "run" / "summary.json").read_text())
    assert summary["run"]["backoff"]["waits"] > 0
    first_ok = min(
        wall_s(r, r.end_ns) for r in records if r.status == "ok" and wall_s(r, r.sent_ns) > killed_at
    )
    errors_per_s = len(dead) / max(1e-9, max(wall_s(r, r.end_ns) for r in dead) - killed_at)
    print(
        f"engine death: status non-zero after {down_seen - killed_at:.1f} s, zero again after "
        f"{back_seen - killed_at:.1f} s; first ok request {first_ok - killed_at:.1f} s after the kill; "
        f"{len(dead)} engine_dead records ({errors_per_s:.1f}/s with back-off); "
        f"{len(records)} records, {summary['run']['backoff']['waits']} back-off waits "
        f"({summary['run']['backoff']['wait_s']} s)"
    )
    assert segments, "the engine held no /dev/shm segment (vLLM's message queues live there)"
    left = sorted(name for name in segments if (SHM_DIR / name).exists())
    assert not left, f"segments of the dead engine still in /dev/shm after recovery: {left}"


def test_replica_kill_recovery(stack: Up) -> None:
    """The replica actor killed (the engine ends with it): status non-zero until a new one runs."""
    replica = _engine(stack).parent()
    assert replica is not None
    assert "ServeReplica" in " ".join(replica.cmdline()) + replica.name()
    image = image_data_url()
    assert stream_chat(stack.endpoint, chat_body(MODEL, image, max_tokens=4), timeout_s=120).ok
    killed_at = time.time()
    replica.kill()
    down_seen: float | None = None
    first_ok: float | None = None
    failures: set[str] = set()
    while time.time() < killed_at + 120 and down_seen is None:
        code, report = _status(stack)
        if code != 0 and _running(report) == 0:
            down_seen = time.time()
        time.sleep(0.5)
    while time.time() < killed_at + 300 and first_ok is None:
        result = stream_chat(stack.endpoint, chat_body(MODEL, image, max_tokens=4), timeout_s=240)
        if result.ok:
            first_ok = time.time()
        else:
            failures.add(f"{result.status}: {(result.error or '')[:60]}")
            time.sleep(1)
    assert down_seen is not None, "serve status never went non-zero after the replica was killed"
    assert first_ok is not None, f"no success within 300 s of the replica kill: {failures}"
    code, report = _status(stack)
    assert code == 0, report
    print(
        f"replica kill: status non-zero after {down_seen - killed_at:.1f} s; first ok request "
        f"{first_ok - killed_at:.1f} s after the kill; failures seen: {sorted(failures)}"
    )


def test_down_leaves_no_segment_of_the_stack(stack: Up) -> None:
    processes = stack.cluster.processes()
    segments = held_segments([p.pid for p in processes])
    assert segments
    done = m3bench("serve", "down", "--state-dir", str(stack.state_dir), timeout_s=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not stack.cluster.processes()
    left = sorted(name for name in segments if (SHM_DIR / name).exists())
    assert not left, f"segments left after serve down: {left}"
