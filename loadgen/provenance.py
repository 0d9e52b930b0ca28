"""What a result file says about itself: versions, git commit, host, generator layout."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any

from benchmark.checkout import git_sha

_DISTRIBUTIONS = ("m3bench", "locust", "gevent", "prometheus-client", "pydantic", "numpy")


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def describe() -> dict[str, Any]:
    return {
        "versions": {name: _version(name) for name in _DISTRIBUTIONS},
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "git_sha": git_sha(),
    }
