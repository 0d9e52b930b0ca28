"""The source checkout m3bench runs from: its git commit, which a result records beside its figures.

Both the load generator (``loadgen.provenance``) and the server (``serving.stack``) stamp their output
with it and may import nothing of each other, so it lives here, in the part both build on.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def git_sha() -> str | None:
    """``git rev-parse HEAD`` of m3bench's checkout; None outside git, without git, or when git does not
    answer within 5 s."""
    try:
        done = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None
