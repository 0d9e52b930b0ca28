"""Limits a sandboxed runner applies to itself before any untrusted code runs (stdlib only).

Sent into the sandbox as source text (after ``_wire``), so it imports only the standard library.
Layers, each of which holds even when another is missing:

* resource limits: address space, CPU seconds, file size, open files, no core dumps;
* ``PR_SET_PDEATHSIG`` (die with the grader) and ``PR_SET_DUMPABLE=0`` (no ptrace, no /proc/<pid>/fd
  from other processes of the same uid);
* a seccomp filter: no fork/vfork/new processes (threads stay allowed), no exec, no sockets, no ptrace
  or cross-process memory access, no namespaces/mounts/bpf/io_uring/keyrings, no signals to other
  processes. Calls it blocks fail with EPERM; a foreign syscall ABI kills the process.
"""

import ctypes
import os
import resource
import signal
import struct
import sys

_PR_SET_PDEATHSIG = 1
_PR_SET_DUMPABLE = 4
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_RET_KILL_PROCESS = 0x80000000
_RET_ERRNO = 0x00050000
_RET_ALLOW = 0x7FFF0000
_CLONE_THREAD = 0x00010000
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JSET_K = 0x45
_JGE_K = 0x35
_RET_K = 0x06

# arch -> (AUDIT_ARCH value, denied syscalls, clone, clone3, kill, tkill, tgkill)
_ARCHES = {
    "x86_64": (
        0xC000003E,
        (57, 58, 59, 322, 41, 53, 101, 310, 311, 272, 308, 165, 166, 155, 161, 321, 425, 426, 427, 250,
         248, 249, 298, 323, 246, 175, 313, 176, 169, 167, 168, 170, 171, 163, 179, 304, 303, 135),
        56, 435, 62, 200, 234,
    ),
    "aarch64": (
        0xC00000B7,
        (221, 281, 198, 199, 117, 270, 271, 97, 268, 40, 39, 41, 51, 280, 425, 426, 427, 219, 217, 218,
         241, 282, 104, 105, 273, 106, 142, 224, 225, 161, 162, 89, 60, 265, 264, 92),
        220, 435, 129, 130, 131,
    ),
}


def _filter_program(arch: str, own_pid: int) -> list[tuple[int, int, int, int]]:
    audit_arch, denied, clone, clone3, kill, tkill, tgkill = _ARCHES[arch]
    eperm = _RET_ERRNO | 1
    prog: list[tuple[int, int, int, int]] = [
        (_LD_W_ABS, 0, 0, 4),
        (_JEQ_K, 1, 0, audit_arch),
        (_RET_K, 0, 0, _RET_KILL_PROCESS),
        (_LD_W_ABS, 0, 0, 0),
    ]
    if arch == "x86_64":  # x32 ABI numbers carry bit 30
        prog += [(_JGE_K, 0, 1, 0x40000000), (_RET_K, 0, 0, _RET_KILL_PROCESS)]
    for nr in (*denied, tkill):
        prog += [(_JEQ_K, 0, 1, nr), (_RET_K, 0, 0, eperm)]
    # clone3 passes its flags behind a pointer: say ENOSYS so libc falls back to clone(2).
    prog += [(_JEQ_K, 0, 1, clone3), (_RET_K, 0, 0, _RET_ERRNO | 38)]
    # clone(2) only for threads (CLONE_THREAD in the flags, argument 0).
    prog += [
        (_JEQ_K, 0, 4, clone),
        (_LD_W_ABS, 0, 0, 16),
        (_JSET_K, 0, 1, _CLONE_THREAD),
        (_RET_K, 0, 0, _RET_ALLOW),
        (_RET_K, 0, 0, eperm),
    ]
    # kill/tgkill only aimed at this process (or its own group, pid 0, for kill).
    prog += [
        (_LD_W_ABS, 0, 0, 0),
        (_JEQ_K, 0, 5, kill),
        (_LD_W_ABS, 0, 0, 16),
        (_JEQ_K, 2, 0, own_pid),
        (_JEQ_K, 1, 0, 0),
        (_RET_K, 0, 0, eperm),
        (_RET_K, 0, 0, _RET_ALLOW),
        (_LD_W_ABS, 0, 0, 0),
        (_JEQ_K, 0, 3, tgkill),
        (_LD_W_ABS, 0, 0, 16),
        (_JEQ_K, 1, 0, own_pid),
        (_RET_K, 0, 0, eperm),
        (_RET_K, 0, 0, _RET_ALLOW),
    ]
    return prog


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _prctl(libc: ctypes.CDLL, option: int, arg: object) -> None:
    if libc.prctl(option, arg, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}) failed: {os.strerror(err)}")


def harden(memory_mb: int, cpu_s: int, file_bytes: int) -> str:
    """Apply every layer to the calling process; returns what was applied, for the verdict detail."""
    applied = []
    if sys.platform.startswith("linux"):
        libc = _libc()
        _prctl(libc, _PR_SET_PDEATHSIG, signal.SIGKILL)
        _prctl(libc, _PR_SET_DUMPABLE, 0)
        applied.append("pdeathsig,nondumpable")
        applied.append(_install_filter(libc))
    limits = {
        resource.RLIMIT_AS: memory_mb * 1024 * 1024,
        resource.RLIMIT_CPU: cpu_s,
        resource.RLIMIT_FSIZE: file_bytes,
        resource.RLIMIT_NOFILE: 64,
        resource.RLIMIT_CORE: 0,
    }
    for which, value in limits.items():
        soft, hard = resource.getrlimit(which)
        target = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(which, (target, target))
    applied.append("rlimits")
    return "+".join(applied)


def _install_filter(libc: ctypes.CDLL) -> str:
    arch = os.uname().machine
    if arch not in _ARCHES:
        return f"seccomp skipped ({arch})"
    prog = _filter_program(arch, os.getpid())
    raw = b"".join(struct.pack("=HBBI", *ins) for ins in prog)
    buffer = ctypes.create_string_buffer(raw, len(raw))

    class _SockFprog(ctypes.Structure):
        _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))

    fprog = _SockFprog(len(prog), ctypes.addressof(buffer))
    _prctl(libc, _PR_SET_NO_NEW_PRIVS, 1)
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp filter refused: {os.strerror(err)}")
    return "seccomp"
