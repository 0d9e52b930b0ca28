"""Run ``serving.probe`` (a real vLLM engine) in a subprocess and return its JSON result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
AVX2_EMULATION = REPO / "tests" / "support" / "emulate_avx2"


@dataclass
class ProbeRun:
    returncode: int
    result: dict[str, Any] | None
    stderr: str  # stdout and stderr of the probe process


def run_probe(
    model_dir: Path,
    out: Path,
    *,
    backend: str = "auto",
    emulate_avx2: bool = False,
    decode_requests: int = 0,
    max_tokens: int = 8,
    timeout_s: float = 600,
) -> ProbeRun:
    env = os.environ.copy()
    env["M3BENCH_CPU_INT4"] = backend
    if emulate_avx2:
        env["M3BENCH_EMULATE_AVX2"] = "1"
        env["PYTHONPATH"] = os.pathsep.join([str(AVX2_EMULATION), env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
    cmd = [sys.executable, "-m", "serving.probe", str(model_dir), "--out", str(out)]
    cmd += ["--max-tokens", str(max_tokens), "--decode-requests", str(decode_requests)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s, check=False)
    result = json.loads(out.read_text()) if proc.returncode == 0 and out.exists() else None
    # vLLM logs to stdout and Python tracebacks go to stderr: keep both.
    return ProbeRun(proc.returncode, result, proc.stdout + proc.stderr)
