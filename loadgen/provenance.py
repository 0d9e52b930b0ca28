"""What a result file says about itself: versions, git commit, host, generator layout."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

_DISTRIBUTIONS = ("m3bench", "locust", "gevent", "prometheus-client", "pydantic", "numpy")


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def git_sha(start: Path | None = None) -> str | None:
    root = start or Path(__file__).resolve().parent.parent
    try:
        done = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def describe() -> dict[str, Any]:
    return {
        "versions": {name: _version(name) for name in _DISTRIBUTIONS},
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "git_sha": git_sha(),
    }
