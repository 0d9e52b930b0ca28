"""Start and stop a calibration server process (tests and benchmarks)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


@dataclass
class RunningServer:
    process: subprocess.Popen[str]
    url: str

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/calibration/stats", timeout=10) as reply:  # noqa: S310
            return json.loads(reply.read())  # type: ignore[no-any-return]

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.url}/calibration/reset", data=b"", method="POST")  # noqa: S310
        urllib.request.urlopen(request, timeout=10).close()  # noqa: S310


@contextmanager
def calibration_server(*args: str, cpus: Sequence[int] | None = None) -> Iterator[RunningServer]:
    """``calibration_server("--ttft-ms", "100", ...)``: a server on a free port, stopped on exit."""
    command = [sys.executable, "-m", "loadgen.calibration.server", "--port", "0", *args]
    if cpus:
        command = ["taskset", "-c", ",".join(str(c) for c in cpus), *command]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if "listening on" not in line:
            raise RuntimeError(f"calibration server did not start: {line}{process.stdout.read()[:2000]}")
        yield RunningServer(process, line.rsplit(" ", 1)[1].strip())
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()
