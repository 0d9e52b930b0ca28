"""The report from real load-generator runs against the calibration server, checked in headless Chromium.

Three real sweeps (closed loop, 3 levels each): fake model A at 1 and "2 replicas" (the calibration
server has no capacity limit, so the 2-replica sweep is just the same server at twice the streams),
fake model B with short replies that fail the English tasks. The report is rendered by the CLI from the
saved run dirs alone, then opened in Debian's chromium: every <img> must load (naturalWidth > 0, read
back with --dump-dom from an annotated copy) and the page must log nothing to the console.
Set M3BENCH_REPORT_SCREENSHOT=PATH to keep the screenshot (docs/images/report-example.png is one).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from loadgen.calibration.launch import calibration_server
from loadgen.calibration.tasks import write_calibration_tasks
from loadgen.profile import Profile, RunConfig
from loadgen.run import run_load
from m3bench.report import ReportOptions, build_report

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TTFT_MS, ITL_MS, LONG, SHORT = 50, 10, 16, 8
ANNOTATE = (
    "<script>window.addEventListener('load', () => { for (const i of document.images) "
    "i.setAttribute('data-natural-width', i.naturalWidth); });</script>"
)


def _tasks(directory: Path) -> Path:
    """en tasks expect 16 tokens, zh tasks 8: a server that always replies 8 tokens fails only en."""
    write_calibration_tasks(directory, per_language=2, languages=("en", "zh"), max_tokens=LONG)
    lines = []
    for line in (directory / "tasks.jsonl").read_text().splitlines():
        task = json.loads(line)
        if task["natural_language"] == "zh":
            task["expected_answer"] = ("tok " * SHORT).strip()
            task["gen"]["max_tokens"] = SHORT
        lines.append(json.dumps(task, ensure_ascii=False))
    (directory / "tasks.jsonl").write_text("\n".join(lines) + "\n")
    return directory


def _sweep(url: str, model: str, tasks: Path, out: Path, run_id: str, concurrencies: list[int]) -> None:
    profile = {
        "name": "report-e2e",
        "mode": "closed",
        "sweep": {"concurrencies": concurrencies, "warmup_s": 0.5, "measure_s": 1.5, "cooldown_s": 0.2},
        "generator": {"priority": "realtime"},  # shared 2-core box: keep reads prompt (see calibration test)
        "seed": 1,
    }
    config = RunConfig(
        endpoint=url,
        tasks=tasks,
        models=[model],
        profile=Profile.model_validate(profile),
        out_dir=out,
        run_id=run_id,
    )
    result = run_load(config)
    assert result.records > 0, result.warnings


def _chromium(profile_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile_dir}",
        "--enable-logging=stderr",
        "--v=0",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)


def _console(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


def _natural_widths(page: Path, work: Path) -> list[int]:
    probe = work / "probe.html"
    probe.write_text(page.read_text().replace("</body>", ANNOTATE + "</body>"))
    done = _chromium(work / "profile-dom", "--virtual-time-budget=5000", "--dump-dom", probe.as_uri())
    images = re.findall(r"<img\b[^>]*>", done.stdout)
    assert images, done.stderr[-2000:]
    widths = [re.search(r'data-natural-width="(\d+)"', tag) for tag in images]
    assert all(widths), "the page's load event did not fire"
    return [int(w.group(1)) for w in widths if w]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("results")
    tasks = _tasks(tmp_path_factory.mktemp("tasks"))
    timing = ("--ttft-ms", str(TTFT_MS), "--itl-ms", str(ITL_MS), "--realtime")
    with (
        calibration_server(*timing, "--models", "fake-a") as a,
        calibration_server(*timing, "--models", "fake-b", "--output-len", str(SHORT)) as b,
    ):
        _sweep(a.url, "fake-a", tasks, root / "runs", "a-x1", [1, 2, 4])
        _sweep(a.url, "fake-a", tasks, root / "runs", "a-x2", [2, 4, 8])
        _sweep(b.url, "fake-b", tasks, root / "runs", "b-x1", [1, 2, 4])

    def entry(model: str, replicas: int, run: str, quantization: str) -> dict[str, Any]:
        return {
            "model": model,
            "quantization": quantization,
            "family": "calibration",
            "replicas": replicas,
            "accelerator": "cpu-2core",
            "run_dir": f"runs/{run}",
        }

    index = {
        "run": {
            "run_id": "report-e2e",
            "started": "2025-01-01T00:00:00Z",
            "ended": "2025-01-01T00:01:00Z",
            "machine": {"cpus": os.cpu_count(), "kind": "shared dev box"},
            "catalog": "calibration",
            "versions": {"m3bench": "0.1.0"},
            "stream_batching_interval_s": 0.0,
            "notes": ["fake models served by loadgen's calibration server"],
        },
        "sweeps": [
            entry("fake-a", 1, "a-x1", "awq"),
            entry("fake-a", 2, "a-x2", "awq"),
            entry("fake-b", 1, "b-x1", "gptq"),
        ],
    }
    (root / "index.json").write_text(json.dumps(index, indent=2))
    return root


def test_report_from_real_runs_renders_in_chromium(results: Path, tmp_path: Path) -> None:
    # --include-invalid: on a busy shared box the generator may flag a level; the rendering is under test.
    # build_report is what `m3bench report` runs (tests/unit/test_report_build.py drives the CLI itself).
    options = ReportOptions(
        slo_ttft_p99_s=0.5,
        slo_itl_p99_s=0.1,
        min_accuracy=0.95,
        target_rate=40,
        price_per_hour=0.10,
        include_invalid=True,
    )
    build_report(results, options)
    doc = json.loads((results / "report/report.json").read_text())

    model_a, model_b = doc["models"]
    assert model_a["accuracy_by_language"]["en"]["accuracy"] == 1.0
    assert model_a["accuracy_by_language"]["zh"]["accuracy"] == 1.0
    assert model_b["accuracy_by_language"]["en"]["accuracy"] == 0.0
    assert model_b["accuracy_by_language"]["zh"]["accuracy"] == 1.0
    first = model_a["sweeps"][0]["levels"][0]
    assert first["ttft_p50_s"] == pytest.approx(TTFT_MS / 1e3, abs=0.010)
    assert first["itl_p50_s"] == pytest.approx(ITL_MS / 1e3, abs=0.005)
    # programmed timing does not depend on load: every level of A meets the SLOs, a lower bound;
    # B fails every en task: its accuracy (about 50%) is below the minimum from the first level
    assert model_a["sweeps"][0]["sustainable"]["bound"] == "lower_bound"
    assert model_b["sweeps"][0]["sustainable"]["bound"] == "below_range"
    assert model_a["planning"]["replicas_for_target"]["value"] >= 1
    assert {row["quantity"] for row in doc["planner_check"]} == {"rate at SLO", "capacity"}
    assert all(row["predicted"]["value"] and row["measured"]["value"] for row in doc["planner_check"])
    assert not any(row["conclusive"] for row in doc["planner_check"])  # lower bounds on both sides

    page = results / "report/report.html"
    shot = tmp_path / "report.png"
    done = _chromium(
        tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1280,4000", page.as_uri()
    )
    assert shot.is_file(), done.stderr[-2000:]
    assert _console(done.stderr) == []
    widths = _natural_widths(page, tmp_path)
    # latency + throughput per model, accuracy, Pareto, planner check, and where the CPU went per sweep
    cpu_sweeps = doc["cpu"]["sweeps"]
    sweeps = json.loads((results / "index.json").read_text())["sweeps"]
    assert len(cpu_sweeps) == len(sweeps)  # every load run sampled where the CPU went
    assert len(widths) == 2 * 2 + 3 + len(cpu_sweeps)
    assert all(width > 0 for width in widths)
    if os.environ.get("M3BENCH_REPORT_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["M3BENCH_REPORT_SCREENSHOT"])


def test_the_chromium_checks_catch_broken_pages(tmp_path: Path) -> None:
    """Negative control: a console error and a broken image are both seen by the checks above."""
    page = tmp_path / "broken.html"
    page.write_text('<html><body><img src="missing.png"><script>console.error("boom")</script></body></html>')
    done = _chromium(tmp_path / "profile", "--virtual-time-budget=3000", "--dump-dom", page.as_uri())
    assert any("boom" in line for line in _console(done.stderr))
    assert _natural_widths(page, tmp_path) == [0]
