"""Execution grading (pass@1): run the answer and the task's tests in two sandboxes joined by pipes.

One grade = two short-lived sandboxed interpreters (see ``sandbox``):

* the *answer* process loads the prelude (the problem's own trusted code) and the extracted answer, then
  serves calls of the entry point;
* the *harness* process loads the prelude and the tests, binds the entry point's name to a proxy that
  forwards calls to the answer process, runs the tests and writes the verdict, with a nonce that only it
  received, to a pipe only it holds.

The parent enforces the wall-clock limit, kills both process groups whatever happens, and maps exit
statuses (CPU limit, memory, crash) to a verdict with a reason. Everything is per call: no state is
shared between grades, so any number of processes may grade at once.
"""

from __future__ import annotations

import contextlib
import marshal
import math
import os
import secrets
import select
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

from benchmark.grading import _hardening, _wire, sandbox
from benchmark.grading.result import Verdict

STARTUP_GRACE_S = 1.0
RESULT_LIMIT_BYTES = 64 * 1024
OUTPUT_LIMIT_BYTES = 1024 * 1024
TMPFS_BYTES = 16 * 1024 * 1024
_SIGNAL_REASONS: dict[int, str] = {
    signal.SIGXCPU: "hit the CPU time limit",
    signal.SIGKILL: "was killed (SIGKILL: memory or a limit)",
    signal.SIGSEGV: "crashed (SIGSEGV, e.g. a C stack overflow)",
    signal.SIGSYS: "made a forbidden system call (SIGSYS)",
    signal.SIGABRT: "aborted (SIGABRT)",
    signal.SIGXFSZ: "hit the file size limit",
}


@dataclass(frozen=True)
class Limits:
    timeout_s: float
    memory_mb: int

    @property
    def cpu_s(self) -> int:
        return math.ceil(self.timeout_s) + 1


@cache
def _script(runner: str) -> str:
    here = Path(__file__).parent
    parts = [(here / name).read_text(encoding="utf-8") for name in ("_wire.py", "_hardening.py", runner)]
    return "\n\n".join(parts)


@cache
def _compiled(runner: str) -> bytes:
    """The runner compiled once per grader process (loaded with marshal by the same interpreter)."""
    return marshal.dumps(compile(_script(runner), f"<m3bench {runner}>", "exec"))


def _exit_reason(returncode: int | None, mode: sandbox.SandboxMode) -> tuple[Verdict, str]:
    """Verdict and words for how a runner ended (bwrap reports a signal as 128 + signo)."""
    if returncode is None:
        return "error", "did not end"
    signo = (
        -returncode if returncode < 0 else (returncode - 128 if mode == "bwrap" and returncode > 128 else 0)
    )
    if signo:
        reason = _SIGNAL_REASONS.get(signo, f"was killed by signal {signo}")
        return ("timeout" if signo == signal.SIGXCPU else "error"), reason
    return "error", f"exited with status {returncode}"


def _read_result(fd: int, deadline: float) -> bytes | None:
    """Everything the harness wrote before closing, or None at the deadline."""
    data = bytearray()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        poller = select.poll()  # poll, not select: fine with descriptor numbers above 1024
        poller.register(fd, select.POLLIN | select.POLLHUP)
        if not poller.poll(max(1, int(remaining * 1000))):
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            return bytes(data)
        data += chunk
        if len(data) > RESULT_LIMIT_BYTES:
            return bytes(data[:RESULT_LIMIT_BYTES])


def _kill(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    process.wait()


def _tail(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - 300))
            return handle.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


def _spawn(launch: sandbox.Launch, output: Path, stdin: int, fds: tuple[int, ...]) -> subprocess.Popen[bytes]:
    with output.open("wb") as sink:
        return subprocess.Popen(
            launch.argv,
            stdin=stdin,
            stdout=sink,
            stderr=subprocess.STDOUT,
            pass_fds=fds,
            cwd=launch.cwd,
            env=launch.env,
            user=launch.uid,
            group=launch.uid,
            extra_groups=[] if launch.uid is not None else None,
            start_new_session=True,
            close_fds=True,
        )


@cache
def _bwrap_filter() -> bytes | None:
    """The seccomp program bwrap installs (None on architectures without a syscall table)."""
    arch = os.uname().machine
    return _hardening.program_bytes(arch, None) if arch in _hardening.SYSCALLS else None


@dataclass
class _Runner:
    launch: sandbox.Launch
    output: Path
    stdin: int
    fds: tuple[int, ...]  # handed to the child
    own_fds: tuple[int, ...]  # opened for it here; closed once it started


def _prepare(
    mode: sandbox.SandboxMode,
    role: Literal["answer", "harness"],
    root: Path,
    payload: dict[str, object],
    *,
    fds: tuple[int, ...],
    stdin: int,
) -> _Runner:  # fmt: skip
    """Write the runner's payload and build its command (bwrap gets the filter on its own descriptor)."""
    directory, work = root / role, root / f"{role}-work"
    directory.mkdir(mode=0o700)
    work.mkdir(mode=0o700)
    program = _bwrap_filter() if mode == "bwrap" else None
    seccomp = "self" if mode == "rlimit" else ("bwrap" if program else "none")
    (directory / "payload.bin").write_bytes(_wire.encode_value({**payload, "seccomp": seccomp}))
    runner = "_answer_runner.py" if role == "answer" else "_test_harness.py"
    (directory / "runner.bin").write_bytes(_compiled(runner))
    seccomp_fd = None
    if program is not None:
        (root / f"{role}.bpf").write_bytes(program)
        seccomp_fd = os.open(root / f"{role}.bpf", os.O_RDONLY)
    launch = sandbox.launch(
        mode,
        role=role,
        script=_script(runner),
        script_args=["/task/payload.bin", *map(str, fds)],
        compiled="/task/runner.bin",
        payload_dir=directory,
        work_dir=work,
        tmpfs_bytes=TMPFS_BYTES,
        seccomp_fd=seccomp_fd,
    )
    own = (seccomp_fd,) if seccomp_fd is not None else ()
    return _Runner(launch, root / f"{role}.out", stdin, fds + own, own)


def run_tests(
    prelude: str, program: str, tests: str, entry_point: str, limits: Limits
) -> tuple[Verdict, str]:
    """Grade ``program`` against ``tests``; returns (verdict, detail)."""
    mode = sandbox.resolve_mode()
    nonce = secrets.token_hex(16)
    common = {"memory_mb": limits.memory_mb, "cpu_s": limits.cpu_s, "file_bytes": OUTPUT_LIMIT_BYTES,
              "prelude": prelude, "entry_point": entry_point}  # fmt: skip
    root = Path(tempfile.mkdtemp(prefix="m3bench-grade-"))
    processes: list[subprocess.Popen[bytes]] = []
    fds: list[int] = []
    try:
        root.chmod(0o711)
        call_r, call_w = os.pipe()
        reply_r, reply_w = os.pipe()
        result_r, result_w = os.pipe()
        nonce_r, nonce_w = os.pipe()
        fds = [call_r, call_w, reply_r, reply_w, result_r, result_w, nonce_r, nonce_w]
        runners = [
            _prepare(
                mode,
                "answer",
                root,
                {**common, "code": program},
                fds=(call_r, reply_w),
                stdin=subprocess.DEVNULL,
            ),
            _prepare(
                mode,
                "harness",
                root,
                {**common, "tests": tests},
                fds=(call_w, reply_r, result_w),
                stdin=nonce_r,
            ),
        ]
        fds += [fd for runner in runners for fd in runner.own_fds]
        started = time.monotonic()
        processes += [_spawn(r.launch, r.output, r.stdin, r.fds) for r in runners]
        for fd in [fd for fd in fds if fd not in (result_r, nonce_w)]:
            os.close(fd)
        fds = [result_r, nonce_w]
        os.write(nonce_w, (nonce + "\n").encode("ascii"))
        os.close(nonce_w)
        fds = [result_r]
        raw = _read_result(result_r, started + limits.timeout_s + STARTUP_GRACE_S)
        return _interpret(raw, nonce=nonce, processes=processes, mode=mode, limits=limits, root=root)
    finally:
        for process in processes:
            _kill(process)
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        shutil.rmtree(root, ignore_errors=True)


def _interpret(
    raw: bytes | None,
    *,
    nonce: str,
    processes: list[subprocess.Popen[bytes]],
    mode: sandbox.SandboxMode,
    limits: Limits,
    root: Path,
) -> tuple[Verdict, str]:
    answer, harness = processes
    if raw is None:
        return "timeout", f"no verdict within {limits.timeout_s:g} s (wall clock)"
    if not raw:
        with contextlib.suppress(subprocess.TimeoutExpired):
            harness.wait(timeout=1.0)
        verdict, reason = _exit_reason(harness.poll(), mode)
        tail = _tail(root / "harness.out")
        return verdict, f"test harness ended without a verdict: {reason}" + (f" ({tail})" if tail else "")
    try:
        message = _wire.decode_value(raw)
        verdict, detail = message["verdict"], str(message["detail"])  # type: ignore[index]
        if message["nonce"] != nonce or verdict not in ("pass", "fail", "error", "timeout"):  # type: ignore[index]
            raise ValueError("nonce or verdict mismatch")
    except (_wire.WireError, ValueError, KeyError, TypeError):
        return "error", "test harness wrote an invalid verdict"
    if detail.startswith("died:"):
        with contextlib.suppress(subprocess.TimeoutExpired):
            answer.wait(timeout=1.0)
        verdict, reason = _exit_reason(answer.poll(), mode)
        tail = _tail(root / "answer.out")
        phase = detail.removeprefix("died:").strip()
        detail = f"answer process {reason} {phase}" + (f"; its output ends: {tail[-200:]}" if tail else "")
    return verdict, detail
