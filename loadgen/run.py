"""Run a load test: preflight, start Locust (one process, or master + workers), wait, summarize.

``run_load(config) -> RunResult`` is the Python API (the demo orchestration calls it);
``m3bench load run`` is a thin CLI over it. A run directory holds everything the run measured:
run.json (resolved config), provenance.json, records.jsonl (merged, graded), records/ (each
process's own append-only files), generator.jsonl, summary.json and summaries/, prometheus/
(file_sd targets), logs/.

How a run ends (``RunResult.outcome``, the exit status of ``m3bench load run``): 0 when every stage
completed and no stage's measured requests failed more often than ``Profile.max_error_fraction``;
``EXIT_ERRORS`` when they did; ``EXIT_GENERATOR_FAILED`` when Locust failed (start-up error, a process
that died, a run that overran); ``128 + signal`` after SIGTERM/SIGINT. A signal stops sending at once
(the master drains: open requests get ``STOP_DRAIN_S``), then the summary is written as usual. The
Locust processes die with this one: each asks the kernel for a signal when its parent dies
(``loadgen.locustfile``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadgen.cpu_attribution import CPU_FILE, CpuSampler, attribute_plans
from loadgen.merge import reconcile
from loadgen.metrics_server import MULTIPROC_ENV
from loadgen.outcome import Outcome, judge
from loadgen.preflight import preflight
from loadgen.profile import LoadgenError, RunConfig
from loadgen.provenance import describe
from loadgen.records import read_records
from loadgen.summary import summarize_run
from loadgen.summary_model import RunInfo, RunSummary
from loadgen.workload import Workload

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
PARENT_ENV = "M3BENCH_PARENT_PID"  # tells each Locust process whose death must end it
STOP_SIGNAL = signal.SIGUSR1  # to the Locust master (or single process): stop sending, drain, finish
PARENT_GONE_SIGNAL = signal.SIGUSR2  # what the kernel sends a Locust process when its parent dies
STOP_DRAIN_S = 10.0  # after a stop signal, open requests get this long to finish
Progress = Callable[[dict[str, Any]], None]


@dataclass
class RunResult:
    run_id: str
    run_dir: Path
    summary: RunSummary
    records: int
    warnings: list[str] = field(default_factory=list)
    exit_codes: dict[str, int | None] = field(default_factory=dict)
    outcome: Outcome | None = None  # how the run ended: exit status and the last line

    @property
    def records_path(self) -> Path:
        return self.run_dir / "records.jsonl"


def format_progress(status: dict[str, Any]) -> str | None:
    """One progress line from the master's status.json (what ``progress`` callbacks receive)."""
    stage = status.get("stage")
    if stage is None:
        return None
    counts = ", ".join(f"{k} {v}" for k, v in sorted(status.get("statuses", {}).items())) or "no records yet"
    where = (
        "draining"
        if status.get("draining")
        else f"stage {status['stage_index'] + 1}/{status['stages']} {stage}"
    )
    return f"[load] {where} t={status.get('stage_elapsed_s', 0):.0f}s records {status['records']} ({counts})"


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def resolve(config: RunConfig) -> RunConfig:
    run_id = config.run_id or time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)
    generator = config.profile.generator
    if generator.workers and not generator.master_port:
        generator = generator.model_copy(update={"master_port": _free_port(generator.master_bind_host)})
    profile = config.profile.model_copy(update={"generator": generator})
    return config.model_copy(
        update={
            "run_id": run_id,
            "profile": profile,
            "tasks": config.tasks.resolve(),
            "out_dir": config.out_dir.resolve(),
        }
    )


def _commands(config: RunConfig, run_file: Path) -> dict[str, list[str]]:
    generator = config.profile.generator
    base = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--m3bench-config",
        str(run_file),
        "--host",
        config.endpoint,
        "--loglevel",
        "INFO",
        "--stop-timeout",
        "5",
    ]
    ui = (
        [
            "--web-host",
            generator.web_host,
            "--web-port",
            str(generator.web_port),
            "--autostart",
            "--autoquit",
            str(generator.web_autoquit_s),
        ]
        if generator.web_ui
        else ["--headless"]
    )
    if not generator.workers and not generator.remote_workers:
        return {"local": [*base, *ui]}
    expected = generator.workers + generator.remote_workers
    commands = {
        "master": [
            *base,
            *ui,
            "--master",
            "--master-bind-host",
            generator.master_bind_host,
            "--master-bind-port",
            str(generator.master_port),
            "--expect-workers",
            str(expected),
            "--expect-workers-max-wait",
            "120",
        ]
    }
    for index in range(generator.workers):
        commands[f"worker{index}"] = [
            *base,
            "--worker",
            "--master-host",
            generator.master_bind_host,
            "--master-port",
            str(generator.master_port),
        ]
    return commands


def run_load(config: RunConfig, progress: Progress | None = None) -> RunResult:
    """Run the whole test described by ``config``; raises ``LoadgenError`` for anything the user must fix."""
    config = resolve(config)
    assert config.run_id is not None
    Workload(config.tasks, config.models, config.profile.sampling, config.profile.request)  # fail early
    from loadgen.schedule import build_plans

    build_plans(config.profile)  # fail early too: a trace stage reads its trace here
    profile = config.profile
    provenance: dict[str, Any] = describe()
    if config.preflight:
        key_env = profile.request.api_key_env
        key = os.environ.get(key_env, "") if key_env else ""
        headers = {"authorization": f"Bearer {key}"} if key else {}
        provenance["endpoint_models"] = preflight(
            config.endpoint, config.models, profile.request.api == "chat", profile.request.timeout_s, headers
        )
    run_dir = config.out_dir / config.run_id
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    run_file = run_dir / "run.json"
    run_file.write_text(config.model_dump_json(indent=2), encoding="utf-8")
    provenance["commands"] = _commands(config, run_file)
    (run_dir / "provenance.json").write_text(json.dumps(provenance, indent=2, default=str), encoding="utf-8")
    sampler = CpuSampler(run_dir / CPU_FILE).start()  # where the CPU went, per second (cpu.jsonl)
    metrics_root = Path(tempfile.mkdtemp(prefix="m3bench-metrics-"))  # values only: removed at the end
    try:
        processes = _start(provenance["commands"], run_dir, metrics_root)
        warnings, problems, interrupted = _wait(processes, run_dir, config, progress)
    finally:
        sampler.stop()
        shutil.rmtree(metrics_root, ignore_errors=True)
    exit_codes = {name: process.returncode for name, process in processes.items()}
    merged = run_dir / "records.jsonl"
    merged.touch()  # a Locust that failed at start-up never made it
    added = reconcile(run_dir)
    if added:
        warnings.append(f"{added} records were missing from the merged file and were taken from worker files")
    records = read_records(merged)
    if problems and not records and interrupted is None:
        raise GeneratorFailedError(f"the load generator failed: {problems[0]}")
    from loadgen.schedule import build_plans

    stages = [plan.name for plan in build_plans(profile)]
    attribute_plans(run_dir, build_plans(profile))  # where the CPU went, per stage: cpu.json
    outcome = judge(records, stages, profile.max_error_fraction, problems, interrupted)
    summary = summarize_run(run_dir)
    summary.run = RunInfo(
        run_id=config.run_id,
        endpoint=config.endpoint,
        models=config.models,
        profile=profile.name,
        warnings=warnings,
        exit_codes=exit_codes,
        outcome=outcome.to_json(),
        backoff=backoff_summary(run_dir, config),
    )
    _write_summaries(run_dir, summary)
    return RunResult(config.run_id, run_dir, summary, summary.records, warnings, exit_codes, outcome)


class GeneratorFailedError(LoadgenError):
    """Locust failed before it recorded anything; the message names the cause from its log."""


def backoff_summary(run_dir: Path, config: RunConfig) -> dict[str, Any]:
    """The closed-loop back-off as configured, and the waits each stage took (from generator.jsonl)."""
    by_stage: dict[str, dict[str, float]] = {}
    path = run_dir / "generator.jsonl"
    names = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                row = json.loads(line)
                if row.get("event") == "stage_start":
                    names[int(row["index"])] = str(row["name"])
                elif row.get("event") == "stage_done" and "backoffs" in row:
                    entry = by_stage.setdefault(names.get(int(row["index"]), str(row["index"])), {})
                    entry["waits"] = entry.get("waits", 0) + int(row["backoffs"])
                    entry["wait_s"] = round(entry.get("wait_s", 0.0) + float(row["backoff_s"]), 3)
    return {
        **config.profile.backoff.model_dump(),
        "applies_to": "closed loop",
        "waits": int(sum(entry.get("waits", 0) for entry in by_stage.values())),
        "wait_s": round(sum(entry.get("wait_s", 0.0) for entry in by_stage.values()), 3),
        "by_stage": by_stage,
    }


def _start(
    commands: dict[str, list[str]], run_dir: Path, metrics_root: Path
) -> dict[str, subprocess.Popen[bytes]]:
    """Start the Locust processes; each keeps its metric values in its own directory under
    ``metrics_root`` for its metrics server process to render (loadgen.metrics_server)."""
    processes: dict[str, subprocess.Popen[bytes]] = {}
    env = {**os.environ, "PYTHONUNBUFFERED": "1", PARENT_ENV: str(os.getpid())}
    for name, command in commands.items():
        log = (run_dir / "logs" / f"{name}.log").open("ab")
        (metrics_root / name).mkdir()
        processes[name] = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**env, MULTIPROC_ENV: str(metrics_root / name)},
            start_new_session=True,
        )
        log.close()
        if name == "master":
            time.sleep(0.5)  # let the master bind before workers dial in
    return processes


def _planned_s(config: RunConfig) -> float:
    from loadgen.schedule import build_plans

    total = 0.0
    for plan in build_plans(config.profile):
        total += (plan.planned_s if plan.planned_s is not None else 3600.0) + plan.hold_s
    return total


def _wait(
    processes: dict[str, subprocess.Popen[bytes]], run_dir: Path, config: RunConfig, progress: Progress | None
) -> tuple[list[str], list[str], int | None]:
    """Wait for Locust; returns (warnings, generator problems, the signal that stopped the run)."""
    warnings: list[str] = []
    problems: list[str] = []
    reported: set[str] = set()
    main = processes.get("master") or processes["local"]
    limit = time.monotonic() + _planned_s(config) + 2 * config.profile.request.timeout_s + 900
    if config.profile.generator.web_ui:
        limit += 24 * 3600.0
    stop: dict[str, Any] = {"signal": None}

    def on_signal(signum: int, _frame: Any) -> None:
        if stop["signal"] is not None:
            raise KeyboardInterrupt  # a second signal: stop the processes now
        stop["signal"] = signum
        stop["until"] = time.monotonic() + STOP_DRAIN_S + 20.0
        with contextlib.suppress(OSError):
            main.send_signal(STOP_SIGNAL)  # the master stops sending and drains (loadgen.locustfile)

    previous = _install(on_signal)
    try:
        while main.poll() is None:
            now = time.monotonic()
            if now > limit:
                problems.append("the run overran its plan by far; Locust was stopped")
                break
            if stop["signal"] is not None and now > stop["until"]:
                break
            for name, process in processes.items():
                code = process.poll()
                if process is main or code is None or name in reported:
                    continue
                if code != 0 or not _finished(run_dir):
                    reported.add(name)
                    problems.append(f"{name} exited early with code {code}: {_cause(run_dir, name)}")
            if progress is not None:
                status = run_dir / "status.json"
                if status.is_file():
                    with contextlib.suppress(ValueError):
                        progress(json.loads(status.read_text(encoding="utf-8")))
            time.sleep(0.2 if stop["signal"] is not None else 1.0)
    except KeyboardInterrupt:
        stop["signal"] = stop["signal"] or signal.SIGINT
    finally:
        _stop(processes)
        _restore(previous)
    if stop["signal"] is not None:
        warnings.append("interrupted")
    name = "master" if "master" in processes else "local"
    if main.returncode not in (0, None) and stop["signal"] is None:
        problems.append(f"Locust exited with code {main.returncode}: {_cause(run_dir, name)}")
    elif stop["signal"] is None and not problems and not _status(run_dir).get("finished"):
        problems.append(f"Locust ended before the run finished: {_cause(run_dir, name)}")
    warnings.extend(problems)
    return warnings, problems, stop["signal"]


_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _install(handler: Any) -> dict[int, Any]:
    """Our SIGTERM/SIGINT handlers while Locust runs (only the main thread may set them)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signum: signal.signal(signum, handler) for signum in _SIGNALS}


def _restore(previous: dict[int, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


_EXCEPTION_LINE = re.compile(r"^(?:[\w.]+(?:Error|Exception|Exit|Interrupt)|locust: error)\b.*")


def _cause(run_dir: Path, name: str) -> str:
    """The line of a Locust process's log that says why it failed: its last exception line."""
    log = run_dir / "logs" / f"{name}.log"
    try:
        lines = [line.strip() for line in log.read_text(encoding="utf-8", errors="replace").splitlines()]
    except OSError:
        return f"no log (logs/{name}.log)"
    telling = [line for line in lines if _EXCEPTION_LINE.match(line)]
    text = telling[-1] if telling else next((line for line in reversed(lines) if line), "empty log")
    return f"{text[:300]} (see logs/{name}.log)"


def _status(run_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((run_dir / "status.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _finished(run_dir: Path) -> bool:
    try:
        return bool(json.loads((run_dir / "status.json").read_text(encoding="utf-8")).get("draining"))
    except (OSError, ValueError):
        return False


def _stop(processes: dict[str, subprocess.Popen[bytes]]) -> None:
    """Let Locust finish on its own (the master tells workers to quit), then insist."""
    main = processes.get("master") or processes.get("local")
    if main is not None and main.poll() is None:
        main.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 20
    for process in processes.values():
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = [process for process in processes.values() if process.poll() is None]
        for process in alive:
            process.send_signal(sig)
        for process in alive:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)


def _write_summaries(run_dir: Path, summary: RunSummary) -> None:
    (run_dir / "summary.json").write_text(summary.to_json(), encoding="utf-8")
    stage_dir = run_dir / "summaries"
    stage_dir.mkdir(exist_ok=True)
    for stage in summary.stages:
        name = f"stage-{stage.stage_index:02d}-{stage.stage}.json"
        (stage_dir / name).write_text(stage.model_dump_json(by_alias=True, indent=2), encoding="utf-8")
