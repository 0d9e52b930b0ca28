"""Open-loop schedule lag (sent_ns - scheduled_ns) in two set-ups that decided changes of 2026-12-05.

``priority``: the 10,000-row trace of tests/integration/test_traces.py, replayed by 2 workers at the
generator's realtime priority (SCHED_FIFO 5), with the calibration server started with ``--realtime``
(SCHED_FIFO 10, above the generator) and without it, alternating. Prints lag p99 and each worker's share of
time spent waiting for a CPU.

``connect``: an open loop at 20 requests/s for 12 s whose replies take 15 s, so every send opens a new
connection, with N CPU hogs at default priority on the machine; the generator at realtime. Prints lag
p50 / p99 / max and the records' ``connect_ns`` (opening the connection, inside the lag).

One JSON line per run. Run under the heavy lock (figures in docs/loadgen.md and docs/results/demo)::

    flock /tmp/m3-heavy.lock .venv/bin/python tests/benchmarks/bench_send_lag.py priority --runs 2
    flock /tmp/m3-heavy.lock .venv/bin/python tests/benchmarks/bench_send_lag.py connect --hogs 30 --runs 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from loadgen.calibration.launch import calibration_server  # noqa: E402
from loadgen.calibration.tasks import write_calibration_tasks  # noqa: E402
from loadgen.profile import Profile  # noqa: E402
from loadgen.records import read_records  # noqa: E402
from loadgen.run import run_load  # noqa: E402
from loadgen.stats import quantile  # noqa: E402
from loadgen.summary_model import RunSummary  # noqa: E402
from tests.integration.test_traces import write_known_trace  # noqa: E402
from tests.support.load import calibration_config  # noqa: E402


def _ms(values: list[float], q: float) -> float:
    return round(quantile(sorted(values), q), 3)


def _priority(tmp: Path, runs: int) -> None:
    tasks = write_calibration_tasks(tmp / "tasks", per_language=2, languages=("en", "zh"))
    trace = tmp / "known.jsonl"
    write_known_trace(trace)
    profile = Profile.model_validate(
        {
            "mode": "open",
            "stages": [{"trace": {"path": str(trace), "format": "mooncake"}, "cooldown_s": 0.5}],
            "grading": {"enabled": False},
            "generator": {"workers": 2, "priority": "realtime"},
        }
    )
    for run in range(runs):
        for server_priority in ("realtime", "default"):
            args = ["--ttft-ms", "5", "--itl-ms", "2"] + (
                ["--realtime"] if server_priority == "realtime" else []
            )
            with calibration_server(*args) as server:
                result = run_load(
                    calibration_config(server.url, tasks, tmp / f"{server_priority}-{run}", profile)
                )
            records = read_records(result.records_path)
            lags = [(r.sent_ns - r.scheduled_ns) / 1e6 for r in records if r.scheduled_ns is not None]
            summary = (
                RunSummary.model_validate(result.summary)
                if isinstance(result.summary, dict)
                else result.summary
            )
            workers = {w.worker: w.runqueue_wait_fraction for w in summary.stages[0].generator.workers}
            _print(
                {
                    "bench": "priority",
                    "server": server_priority,
                    "sends": len(lags),
                    "lag_p99_ms": _ms(lags, 0.99),
                    "lag_max_ms": round(max(lags), 2),
                    "runqueue_wait_fraction": workers,
                }
            )


def _connect(tmp: Path, runs: int, hogs: int) -> None:
    tasks = write_calibration_tasks(tmp / "tasks", per_language=2, languages=("en",))
    profile = Profile.model_validate(
        {
            "mode": "open",
            "stages": [{"rate": 20, "warmup_s": 2, "measure_s": 10}],
            "request": {"timeout_s": 60, "max_tokens": 4},
            "grading": {"enabled": False},
            "generator": {"priority": "realtime"},
        }
    )
    for run in range(runs):
        load = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(hogs)]
        try:
            with calibration_server("--ttft-ms", "15000", "--itl-ms", "5") as server:
                result = run_load(calibration_config(server.url, tasks, tmp / f"connect-{run}", profile))
        finally:
            for hog in load:
                hog.kill()
        records = read_records(result.records_path)
        lags = [(r.sent_ns - r.scheduled_ns) / 1e6 for r in records if r.scheduled_ns is not None]
        connects = [r.connect_ns / 1e6 for r in records if r.connect_ns is not None]
        _print(
            {
                "bench": "connect",
                "hogs": hogs,
                "sends": len(lags),
                "new_connections": len(connects),
                "lag_p50_ms": _ms(lags, 0.5),
                "lag_p99_ms": _ms(lags, 0.99),
                "lag_max_ms": round(max(lags), 2),
                "connect_p50_ms": _ms(connects, 0.5) if connects else None,
                "connect_p99_ms": _ms(connects, 0.99) if connects else None,
            }
        )


def _print(row: dict[str, Any]) -> None:
    print(json.dumps(row), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bench", choices=("priority", "connect"))
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--hogs", type=int, default=30, help="connect: CPU hogs at default priority")
    options = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="m3-send-lag-"))
    if options.bench == "priority":
        _priority(tmp, options.runs)
    else:
        _connect(tmp, options.runs, options.hogs)


if __name__ == "__main__":
    main()
