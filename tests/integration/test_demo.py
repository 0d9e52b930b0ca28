"""`m3bench demo` end to end at reduced size (the `quick` preset): the real stack — embedded models on
vLLM behind Ray Serve on a local Ray cluster, Prometheus, Locust sweeps with live grading,
accuracy runs at natural output lengths — then the results directory and the report; and an
interrupted demo leaves no process and keeps its records."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.slow

PORT_BASE, HTTP_PORT = 31100, 28600  # not the demo's defaults: a user's demo may be running
RAY_TEMP = f"/tmp/m3bench-ray-{PORT_BASE}"


def _demo(results: Path, *extra: str) -> subprocess.Popen[str]:
    cmd = [
        sys.executable,
        "-m",
        "m3bench.cli",
        "demo",
        "--preset",
        "quick",
        "--results",
        str(results),
        "--port-base",
        str(PORT_BASE),
        "--http-port",
        str(HTTP_PORT),
        *extra,
    ]
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy()
    )


def _leftovers() -> list[str]:
    """Processes of the demo's Ray cluster, engines and load generator still alive."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        line = " ".join(p.info["cmdline"] or [])
        if RAY_TEMP in line or "loadgen.worker" in line or "m3bench-demo" in line:
            found.append(f"{p.pid}: {line[:120]}")
    return found


def _only_run(results: Path) -> Path:
    runs = [d for d in results.iterdir() if d.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def test_demo_quick_end_to_end(tmp_path: Path) -> None:
    proc = _demo(tmp_path)
    out, _ = proc.communicate(timeout=1500)
    assert proc.returncode == 0, out[-3000:]
    run = _only_run(tmp_path)
    index = json.loads((run / "index.json").read_text())
    sweeps = {s["name"]: s for s in index["sweeps"]}
    # Two INT4 models and the BF16 baseline at one replica, the scale model at two.
    assert {s["quantization"] for s in sweeps.values()} >= {"awq", "none"}
    assert sum(1 for s in sweeps.values() if s["replicas"] == 2) == 1
    for sweep in sweeps.values():
        records = [json.loads(x) for x in (run / sweep["run_dir"] / "records.jsonl").read_text().splitlines()]
        measured = [r for r in records if r["phase"] == "measure"]
        assert measured, f"{sweep['name']}: no measured requests"
        ok = [r for r in measured if r["status"] == "ok"]
        assert len(ok) >= 0.9 * len(measured), f"{sweep['name']}: {len(ok)}/{len(measured)} ok"
        assert all(r["grade"] in ("pass", "fail", "error", "timeout") for r in ok), "ungraded answers"
    # Accuracy runs: every model at one stream, the saturation model again; each task at most once.
    accuracy = index["accuracy"]
    assert {a["model"] for a in accuracy if a["load"] == "low"} == {s["model"] for s in sweeps.values()}
    assert [a["load"] for a in accuracy].count("saturation") == 1
    for entry in accuracy:
        profile = json.loads((run / entry["run_dir"] / "run.json").read_text())["profile"]
        assert profile["sampling"]["by"] == "cycle"
        assert profile["request"]["max_tokens"] is None
        records = [json.loads(x) for x in (run / entry["run_dir"] / "records.jsonl").read_text().splitlines()]
        measured = [r for r in records if r["phase"] == "measure"]
        assert measured, f"accuracy {entry['model']} {entry['load']}: no measured request"
        assert len({r["task_id"] for r in measured}) == len(measured), "a task was asked twice"
        assert {r["task_group"] for r in measured} <= {"image", "text-only"}
    assert (run / "prometheus_window.json").is_file()
    assert len(list((run / "dashboards").glob("*.json"))) == 3
    for name in ("report.html", "report.md", "report.json"):
        assert (run / "report" / name).stat().st_size > 1000
    demo = json.loads((run / "demo.json").read_text())
    assert set(demo["phase_seconds"]) >= {"tasks", "models", "serve", "load", "accuracy", "report"}
    report = json.loads((run / "report" / "report.json").read_text())
    assert len(report["accuracy"]["runs"]) == len(accuracy)
    # Issue 13: on this 2-core machine the generator's levels are valid and the report plans from them:
    # a rate at SLO for at least one model, from this single attempt (the test never retries).
    rates = {sw["label"]: sw["sustainable"]["rate"]["value"] for m in report["models"] for sw in m["sweeps"]}
    assert any(rate is not None for rate in rates.values()), (
        rates,
        [m["sweeps"][0]["levels"] for m in report["models"]],
    )
    # Where the CPU went, per level, for every sweep; the per-second progress lines are in demo.log.
    assert {c["label"] for c in report["cpu"]["sweeps"]} == set(sweeps)
    assert "[load]" in (run / "demo.log").read_text()
    assert demo["machine_load"]["before"]["loadavg"]
    assert demo["cpu_by_phase"]["load"]["samples"] > 0
    assert "memorizing stand-ins" in (run / "report" / "report.md").read_text()
    # `m3bench report` re-renders from the saved files alone.
    (run / "report" / "report.json").unlink()
    again = subprocess.run(
        [sys.executable, "-m", "m3bench.cli", "report", str(run)], capture_output=True, text=True, check=False
    )
    assert again.returncode == 0, again.stderr
    assert (run / "report" / "report.json").is_file()
    assert _leftovers() == []


def test_interrupted_demo_stops_everything_and_keeps_records(tmp_path: Path) -> None:
    proc = _demo(tmp_path, "--model", "tiny-llava-awq", "--no-scale")
    deadline = time.monotonic() + 900
    records: list[Path] = []
    while time.monotonic() < deadline and proc.poll() is None:
        records = list(tmp_path.glob("*/load/*/records.jsonl"))
        if records and records[0].stat().st_size > 0:
            break
        time.sleep(2)
    assert records, "the demo never wrote a record"
    before = records[0].read_text().count("\n")
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode != 0
    assert "interrupted" in out
    assert records[0].read_text().count("\n") >= before  # nothing measured is lost
    time.sleep(2)
    assert _leftovers() == []
