"""Driving m3bench from integration tests: the CLI in a child process (`serve up`, `load run` ...), the
closed-loop profile the failure tests load with, and a load run of the calibration server's model."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loadgen.profile import Profile, RunConfig

M3BENCH = (sys.executable, "-c", "from m3bench.cli import main; main()")


def m3bench(
    *args: str, timeout_s: float = 900, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`m3bench ARGS` to completion, output captured (a non-zero exit is for the test to judge)."""
    return subprocess.run(
        [*M3BENCH, *args], capture_output=True, text=True, env=env, timeout=timeout_s, check=False
    )


def closed_profile(concurrency: int, measure_s: float, timeout_s: float, **extra: object) -> str:
    """A closed-loop stage of 16-token replies, ungraded (failures, not answers, are under test)."""
    profile = {
        "mode": "closed",
        "stages": [{"concurrency": concurrency, "measure_s": measure_s}],
        "request": {"timeout_s": timeout_s, "max_tokens": 16},
        "grading": {"enabled": False},
        **extra,
    }
    return json.dumps(profile)


def start_load_run(
    endpoint: str, tasks: Path, models: str, profile: str, out: Path, *more: str
) -> subprocess.Popen[str]:
    """`m3bench load run` started in the background as run id ``run`` under ``out``, pipes open."""
    command = [
        *(*M3BENCH, "load", "run", "--endpoint", endpoint, "--tasks", str(tasks), "--models", models),
        *("--profile", profile, "--out", str(out), "--run-id", "run", *more),
    ]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def calibration_config(
    url: str, tasks: Path, out: Path, profile: Profile | dict[str, Any], run_id: str | None = None
) -> RunConfig:
    """A load run of the calibration server's one model, ``calib``."""
    if not isinstance(profile, Profile):
        profile = Profile.model_validate(profile)
    return RunConfig(endpoint=url, tasks=tasks, models=["calib"], profile=profile, out_dir=out, run_id=run_id)
