"""Live grading off the event loop: a small pool of grader processes fed through pipes.

gevent-cooperative: pipes are gevent file objects, so waiting for a verdict never blocks the loop that
times streams. Each grader process grades one answer at a time; a grader that hangs past the task's
own timeout (plus a margin) is killed and restarted, and that answer's verdict is ``timeout``.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import gevent
from gevent import subprocess as gsubprocess
from gevent.queue import Queue

from loadgen.grader_process import encode_frame, read_frame

log = logging.getLogger(__name__)
Callback = Callable[[str, str, float], None]  # verdict, detail, duration_s
_MARGIN_S = 30.0


class GradingPool:
    def __init__(self, processes: int, function: str) -> None:
        self.function = function
        self.jobs: Queue[tuple[int, Any, str, float, Callback] | None] = Queue()
        self.ids = itertools.count()
        self.pending = 0
        # Started now, before any stage: forking a large process can stall the event loop.
        self.greenlets = [gevent.spawn(self._serve, self._start()) for _ in range(processes)]

    def _start(self) -> gsubprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        return gsubprocess.Popen(
            [sys.executable, "-m", "loadgen.grader_process", self.function],
            stdin=gsubprocess.PIPE,
            stdout=gsubprocess.PIPE,
            env=env,
        )

    def submit(self, task: Any, answer: str, timeout_s: float, callback: Callback) -> None:
        self.pending += 1
        self.jobs.put((next(self.ids), task, answer, timeout_s + _MARGIN_S, callback))

    def _serve(self, process: gsubprocess.Popen[bytes] | None) -> None:
        while (job := self.jobs.get()) is not None:
            job_id, task, answer, limit_s, callback = job
            verdict, detail, duration = "error", "", 0.0
            try:
                if process is None or process.poll() is not None:
                    process = self._start()
                assert process.stdin is not None
                assert process.stdout is not None
                with gevent.Timeout(limit_s):
                    process.stdin.write(encode_frame((job_id, task, answer)))
                    process.stdin.flush()
                    reply = read_frame(process.stdout)  # type: ignore[arg-type]
                if reply is None:
                    detail = "grader process exited"
                    process = None
                else:
                    _, verdict, detail, duration = reply
            except gevent.Timeout:
                verdict, detail, duration = "timeout", f"grader did not answer within {limit_s:g} s", limit_s
                _kill(process)
                process = None
            except OSError as exc:
                detail = f"grader process failed: {exc}"
                _kill(process)
                process = None
            self.pending -= 1
            try:
                callback(verdict, detail, duration)
            except Exception:
                log.exception("grade callback failed")
        _kill(process, graceful=True)

    def drain(self, timeout_s: float) -> bool:
        """Wait until every submitted answer has its verdict; False on timeout."""
        with gevent.Timeout(timeout_s, False):
            while self.pending:
                gevent.sleep(0.05)
        return self.pending == 0

    def close(self) -> None:
        for _ in self.greenlets:
            self.jobs.put(None)
        gevent.joinall(self.greenlets, timeout=5)


def _kill(process: gsubprocess.Popen[bytes] | None, graceful: bool = False) -> None:
    if process is None or process.poll() is not None:
        return
    try:
        if graceful and process.stdin is not None:
            process.stdin.close()
            process.wait(timeout=2)
            return
    except (OSError, gsubprocess.TimeoutExpired):
        pass
    process.kill()
    process.wait()
