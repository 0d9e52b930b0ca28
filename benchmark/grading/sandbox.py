"""How a sandboxed Python process is started: bubblewrap when it works, layered process limits otherwise.

Modes (``M3BENCH_SANDBOX``): ``auto`` (default: bwrap if a probe sandbox starts, else ``rlimit`` with a
warning), ``bwrap`` (required; grading errors out when it cannot start) and ``rlimit`` (forced fallback).

``bwrap``: new user, pid, network, ipc, uts and cgroup namespaces; uid 65534 with no capabilities; a root
made of read-only ``/usr`` and the interpreter's own prefix (its site-packages hidden), a private
size-limited tmpfs ``/tmp`` as working directory and the payload directory read-only at ``/task``. The
grader's files, the network, other processes and the host's ``/tmp`` are not there at all.

``rlimit``: the same runner-side layers (rlimits, seccomp, non-dumpable, death signal) in a new session,
``python -I -S`` with a scrubbed environment and a private working directory; when the grader runs as
root the answer and the harness also run as two different unprivileged uids. Files readable by everyone
stay readable in this mode: prefer bwrap.
"""

from __future__ import annotations

import functools
import logging
import os
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

SandboxMode = Literal["bwrap", "rlimit"]
ANSWER_UID = 65534
HARNESS_UID = 65533
SANDBOX_UID = 65534
_BOOTSTRAP = "import marshal,sys;exec(marshal.loads(open(sys.argv.pop(1),'rb').read()))"


class SandboxUnavailableError(RuntimeError):
    """``M3BENCH_SANDBOX=bwrap`` was asked for and bubblewrap cannot start a sandbox here."""


@dataclass(frozen=True)
class Launch:
    """Everything ``subprocess.Popen`` needs for one sandboxed runner."""

    argv: list[str]
    cwd: str | None
    env: dict[str, str] | None
    uid: int | None


def sandbox_python() -> Path:
    """The interpreter the sandbox runs (the grader's own base interpreter unless overridden)."""
    override = os.environ.get("M3BENCH_SANDBOX_PYTHON")
    return Path(override).resolve() if override else Path(sys.executable).resolve()


def _reachable_by_others(path: Path) -> bool:
    """Whether an unprivileged uid can execute ``path`` (every parent searchable by 'other')."""
    if not path.exists() or not path.stat().st_mode & stat.S_IXOTH:
        return False
    return all(parent.stat().st_mode & stat.S_IXOTH for parent in path.parents)


def _unprivileged_python() -> Path:
    """For the rlimit mode as root: the interpreter, or the system one if the uids cannot reach it."""
    python = sandbox_python()
    if _reachable_by_others(python):
        return python
    system = Path("/usr/bin/python3").resolve()
    if _reachable_by_others(system):
        return system
    raise SandboxUnavailableError(
        f"{python} is not reachable by an unprivileged uid; set M3BENCH_SANDBOX_PYTHON"
    )


def _python_prefix(python: Path) -> Path:
    return python.parent.parent


def _bwrap_argv(python: Path, payload_dir: Path, tmpfs_bytes: int) -> list[str]:
    argv = [
        "bwrap",
        "--unshare-all",
        "--unshare-user",
        "--uid", str(SANDBOX_UID),
        "--gid", str(SANDBOX_UID),
        "--hostname", "sandbox",
        "--die-with-parent",
        "--new-session",
        "--cap-drop", "ALL",
        "--clearenv",
        "--setenv", "PATH", "/usr/bin:/bin",
        "--setenv", "HOME", "/tmp",  # noqa: S108 - the sandbox's own tmpfs
        "--ro-bind", "/usr", "/usr",
    ]  # fmt: skip
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        path = Path(top)
        if path.is_symlink():
            argv += ["--symlink", os.readlink(path), top]
        elif path.is_dir():
            argv += ["--ro-bind", top, top]
    argv += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    prefix = _python_prefix(python)
    if not str(prefix).startswith("/usr/"):
        argv += ["--ro-bind", str(prefix), str(prefix)]
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for hidden in (prefix / "lib" / version / "site-packages", Path("/usr/lib/python3/dist-packages")):
        if hidden.is_dir():
            argv += ["--tmpfs", str(hidden)]
    argv += [
        "--proc", "/proc",
        "--dev", "/dev",
        "--perms", "1777", "--size", str(tmpfs_bytes), "--tmpfs", "/tmp",  # noqa: S108 - private tmpfs
        "--ro-bind", str(payload_dir), "/task",
        "--chdir", "/tmp",  # noqa: S108 - inside the sandbox
    ]  # fmt: skip
    return argv


def _interpreter_argv(python: Path, script: str) -> list[str]:
    return [str(python), "-I", "-S", "-B", "-X", "utf8", "-c", script]


@functools.cache
def _bwrap_works(python: str) -> str | None:
    """None when a probe sandbox runs; otherwise why not (cached per process and interpreter)."""
    with tempfile.TemporaryDirectory(prefix="m3bench-probe-") as probe_dir:
        argv = _bwrap_argv(Path(python), Path(probe_dir), 1 << 20) + _interpreter_argv(Path(python), "pass")
        try:
            done = subprocess.run(
                argv, capture_output=True, timeout=30, check=False, stdin=subprocess.DEVNULL
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{type(exc).__name__}: {exc}"
    if done.returncode != 0:
        return done.stderr.decode("utf-8", "replace").strip()[-300:] or f"exit status {done.returncode}"
    return None


def resolve_mode() -> SandboxMode:
    """Which sandbox this process uses now (see the module docstring)."""
    wanted = os.environ.get("M3BENCH_SANDBOX", "auto").strip().lower()
    if wanted == "rlimit":
        return "rlimit"
    if wanted not in ("auto", "bwrap"):
        raise SandboxUnavailableError(f"M3BENCH_SANDBOX={wanted!r}: expected auto, bwrap or rlimit")
    problem = _bwrap_works(str(sandbox_python()))
    if problem is None:
        return "bwrap"
    if wanted == "bwrap":
        raise SandboxUnavailableError(f"bubblewrap cannot start a sandbox here: {problem}")
    _warn_fallback(problem)
    return "rlimit"


@functools.cache
def _warn_fallback(problem: str) -> None:
    log.warning("bubblewrap unavailable (%s); grading with the weaker rlimit sandbox", problem)


def launch(
    mode: SandboxMode,
    *,
    role: Literal["answer", "harness"],
    script: str,
    script_args: list[str],
    payload_dir: Path,
    work_dir: Path,
    tmpfs_bytes: int,
    seccomp_fd: int | None = None,
    compiled: str | None = None,
) -> Launch:
    """The command for one runner. ``script_args`` name the payload as ``/task/...`` in either mode.

    ``compiled`` names (under ``/task/``) the script already compiled and marshalled by this very
    interpreter; it is used instead of the source when the sandbox runs the same interpreter, which
    saves compiling ~500 lines at every start.
    """
    python = sandbox_python()
    if mode == "rlimit" and os.geteuid() == 0:
        python = _unprivileged_python()
    if compiled is not None and python == Path(sys.executable).resolve():
        script_args = [compiled, *script_args]
        script = _BOOTSTRAP
    if mode == "bwrap":
        argv = _bwrap_argv(python, payload_dir, tmpfs_bytes)
        if seccomp_fd is not None:
            argv += ["--seccomp", str(seccomp_fd)]
        argv += _interpreter_argv(python, script)
        return Launch(argv + script_args, cwd=None, env=None, uid=None)
    args = [
        arg.replace("/task/", f"{payload_dir}/", 1) if arg.startswith("/task/") else arg
        for arg in script_args
    ]
    uid = None
    if os.geteuid() == 0:
        uid = ANSWER_UID if role == "answer" else HARNESS_UID
        for path in (payload_dir, work_dir):
            os.chown(path, uid, uid)
            for child in path.iterdir():
                os.chown(child, uid, uid)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(work_dir), "LANG": "C.UTF-8"}
    return Launch(_interpreter_argv(python, script) + args, cwd=str(work_dir), env=env, uid=uid)
