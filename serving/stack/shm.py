"""Shared-memory segments of a local stack: vLLM's engines create POSIX segments in /dev/shm
(``psm_*``: its message queues and multimodal caches) and a killed engine never removes them.

Only segments that belong to the stack are ever removed: a segment belongs to it when one of the
stack's processes (``LocalRayCluster.processes``: the cluster's processes and all their descendants,
vLLM engine processes included) holds it open or mapped. Each time m3bench sees the stack (``serve up``
when ready, ``serve status``, ``serve down``) it adds what those processes hold to a ledger in the
state directory; a ledger segment that no process on the machine holds any more is an orphan of the
stack (its engine died) and is removed. Segments of other people's stacks are never in the ledger.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

SHM_DIR = Path("/dev/shm")  # noqa: S108 - POSIX shared memory lives here on Linux
LEDGER_FILE = "shm-segments.json"


def held_segments(pids: Iterable[int]) -> set[str]:
    """Names of /dev/shm files that these processes map or hold open (existing ones only)."""
    names: set[str] = set()
    prefix = f"{SHM_DIR}/"
    for pid in pids:
        proc = Path(f"/proc/{pid}")
        try:
            for line in (proc / "maps").read_text(encoding="utf-8", errors="replace").splitlines():
                fields = line.split(maxsplit=5)
                path = fields[5] if len(fields) == 6 else ""
                if path.startswith(prefix) and not path.endswith("(deleted)"):
                    names.add(path[len(prefix) :])
        except OSError:
            pass
        try:
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith(prefix) and not target.endswith("(deleted)"):
                    names.add(target[len(prefix) :])
        except OSError:
            pass
    return {name for name in names if "/" not in name and (SHM_DIR / name).exists()}


def _all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _ledger(state_dir: Path) -> set[str]:
    try:
        data = json.loads((state_dir / LEDGER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    return {str(name) for name in data} if isinstance(data, list) else set()


def remember(state_dir: Path, pids: Iterable[int]) -> set[str]:
    """Add the segments the stack's processes hold now to the ledger; returns the ledger."""
    ledger = _ledger(state_dir) | held_segments(pids)
    state_dir.mkdir(parents=True, exist_ok=True)
    temporary = state_dir / f".{LEDGER_FILE}.{os.getpid()}.tmp"
    temporary.write_text(json.dumps(sorted(ledger)), encoding="utf-8")
    temporary.replace(state_dir / LEDGER_FILE)
    return ledger


def remove_orphans(state_dir: Path) -> list[str]:
    """Remove every ledger segment that no process holds any more; the removed names. Segments that
    are gone already leave the ledger; those still held stay in it."""
    ledger = _ledger(state_dir)
    if not ledger:
        return []
    held = held_segments(_all_pids()) if any((SHM_DIR / n).exists() for n in ledger) else set()
    removed: list[str] = []
    for name in sorted(ledger):
        path = SHM_DIR / name
        if name in held or not path.exists():
            continue
        try:
            path.unlink()
            removed.append(name)
        except OSError:
            continue
    left = sorted(name for name in ledger if (SHM_DIR / name).exists())
    if left:
        (state_dir / LEDGER_FILE).write_text(json.dumps(left), encoding="utf-8")
    else:
        (state_dir / LEDGER_FILE).unlink(missing_ok=True)
    return removed
