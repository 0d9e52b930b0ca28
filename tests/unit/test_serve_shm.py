"""Shared-memory segments a stack's dead engines leave (issue 21): removed only when they are the
stack's (seen held by its processes) and no process holds them any more; others' are never touched.
Real processes map real /dev/shm files here, as vLLM's ``SharedMemory`` does (shm_open + mmap)."""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.stack.shm import SHM_DIR, held_segments, remember, remove_orphans

HOLDER = """
import mmap, os, sys, time
fd = os.open("/dev/shm/" + sys.argv[1], os.O_CREAT | os.O_RDWR, 0o600)
os.ftruncate(fd, 4096)
view = mmap.mmap(fd, 4096)
print("ready", flush=True)
time.sleep(600)
"""


@pytest.fixture
def names() -> Iterator[list[str]]:
    made = [f"psm_m3test_{secrets.token_hex(4)}" for _ in range(3)]
    yield made
    for name in made:
        (SHM_DIR / name).unlink(missing_ok=True)


def _hold(name: str) -> subprocess.Popen[str]:
    process = subprocess.Popen([sys.executable, "-c", HOLDER, name], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    return process


def test_only_the_stacks_orphans_are_removed(names: list[str], tmp_path: Path) -> None:
    ours, still_held, foreign = names
    engine = _hold(ours)  # an engine of the stack
    survivor = _hold(still_held)  # another process of the stack, still alive
    other = _hold(foreign)  # someone else's engine
    try:
        assert held_segments([engine.pid, survivor.pid]) == {ours, still_held}
        assert remember(tmp_path, [engine.pid, survivor.pid]) == {ours, still_held}
        assert remove_orphans(tmp_path) == []  # everything is still held
        engine.kill()
        engine.wait()
        other.kill()
        other.wait()
        time.sleep(0.1)
        assert (SHM_DIR / ours).exists()  # a killed holder leaves its segment, as a killed engine does
        assert remove_orphans(tmp_path) == [ours]
        assert not (SHM_DIR / ours).exists()
        assert (SHM_DIR / still_held).exists()
        assert (SHM_DIR / foreign).exists()  # an orphan, but not the stack's
    finally:
        for process in (engine, survivor, other):
            if process.poll() is None:
                process.kill()
                process.wait()
    assert remove_orphans(tmp_path) == [still_held]
    assert not (tmp_path / "shm-segments.json").exists()
