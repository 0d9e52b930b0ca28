"""Clock helpers of the calibration server: kernel receive stamps, scheduling priority, timer slack."""

from __future__ import annotations

import ctypes
import os
import socket
import struct
import time

_now = time.perf_counter_ns
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
CMSG_SPACE = socket.CMSG_SPACE(16)


def arrival_ns(ancillary: list[tuple[int, int, bytes]]) -> int:
    """Kernel receive stamp (CLOCK_REALTIME) moved onto perf_counter_ns; now if there is none."""
    now = _now()
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            seconds, nanos = struct.unpack_from("qq", data)
            stamp = int(seconds) * 1_000_000_000 + int(nanos) - (time.time_ns() - _now())
            return min(stamp, now)
    return now


def raise_priority() -> str:
    """SCHED_FIFO priority 10 where permitted, else nice -10; returns what was applied.

    The process sleeps between deadlines, so it takes little CPU; the kernel's RT throttling
    (sched_rt_runtime_us) still bounds it if it ever spun.
    """
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(10))
        return "SCHED_FIFO:10"
    except (PermissionError, OSError, AttributeError):
        pass
    try:
        os.nice(-10)
        return "nice:-10"
    except OSError:
        return "default"


def reduce_timer_slack() -> None:
    """Ask for 1 ns timer slack (default 50 us) so ``select`` wakes close to its timeout."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(29, 1, 0, 0, 0)  # PR_SET_TIMERSLACK
    except (OSError, AttributeError):
        pass
