"""Limits on a sandboxed runner, applied before any untrusted code runs (stdlib only).

Sent into the sandbox as source text (after ``_wire``), so it imports only the standard library, and
lazily: ``ctypes`` only when this process must install its own filter (the rlimit mode). Layers, each of
which holds even when another is missing:

* resource limits: address space, CPU seconds, file size, open files, no core dumps;
* a seccomp filter: no fork/vfork/new processes (threads stay allowed), no sockets, no ptrace or
  cross-process memory access, no namespaces/mounts/bpf/io_uring/keyrings, no signals to other
  processes. Calls it blocks fail with EPERM; a foreign syscall ABI kills the process. Under bwrap the
  grader hands the program to ``bwrap --seccomp`` (installed just before bwrap execs Python, so exec
  itself must stay allowed there; the PID namespace already hides every other process). Without bwrap
  the runner installs it itself and also forbids exec and signals to any other pid;
* without bwrap also ``PR_SET_PDEATHSIG`` (die with the grader) and ``PR_SET_DUMPABLE=0`` (no ptrace,
  no /proc/<pid>/fd from other processes of the same uid).
"""

import os
import resource
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

# fmt: off
_DENIED = (
    "fork", "vfork", "execve", "execveat", "socket", "socketpair", "ptrace", "process_vm_readv",
    "process_vm_writev", "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "bpf",
    "io_uring_setup", "io_uring_enter", "io_uring_register", "keyctl", "add_key", "request_key",
    "perf_event_open", "userfaultfd", "kexec_load", "init_module", "finit_module", "delete_module",
    "reboot", "swapon", "swapoff", "sethostname", "setdomainname", "acct", "quotactl",
    "open_by_handle_at", "name_to_handle_at", "personality", "tkill",
)
SYSCALLS = {
    "x86_64": {
        "fork": 57, "vfork": 58, "execve": 59, "execveat": 322, "socket": 41, "socketpair": 53,
        "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "unshare": 272, "setns": 308,
        "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161, "bpf": 321,
        "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "keyctl": 250,
        "add_key": 248, "request_key": 249, "perf_event_open": 298, "userfaultfd": 323, "kexec_load": 246,
        "init_module": 175, "finit_module": 313, "delete_module": 176, "reboot": 169, "swapon": 167,
        "swapoff": 168, "sethostname": 170, "setdomainname": 171, "acct": 163, "quotactl": 179,
        "open_by_handle_at": 304, "name_to_handle_at": 303, "personality": 135, "tkill": 200,
        "clone": 56, "clone3": 435, "kill": 62, "tgkill": 234,
    },
    "aarch64": {  # no fork/vfork: libc forks with clone
        "execve": 221, "execveat": 281, "socket": 198, "socketpair": 199, "ptrace": 117,
        "process_vm_readv": 270, "process_vm_writev": 271, "unshare": 97, "setns": 268, "mount": 40,
        "umount2": 39, "pivot_root": 41, "chroot": 51, "bpf": 280, "io_uring_setup": 425,
        "io_uring_enter": 426, "io_uring_register": 427, "keyctl": 219, "add_key": 217,
        "request_key": 218, "perf_event_open": 241, "userfaultfd": 282, "kexec_load": 104,
        "init_module": 105, "finit_module": 273, "delete_module": 106, "reboot": 142, "swapon": 224,
        "swapoff": 225, "sethostname": 161, "setdomainname": 162, "acct": 89, "quotactl": 60,
        "open_by_handle_at": 265, "name_to_handle_at": 264, "personality": 92, "tkill": 130,
        "clone": 220, "clone3": 435, "kill": 129, "tgkill": 131,
    },
}
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
# fmt: on


def filter_program(arch: str, own_pid: int | None) -> list[tuple[int, int, int, int]]:
    """The BPF program; ``own_pid=None`` builds the variant bwrap installs (exec allowed, no pid rules)."""
    table, audit_arch = SYSCALLS[arch], _AUDIT_ARCH[arch]
    clone, clone3, kill, tgkill = table["clone"], table["clone3"], table["kill"], table["tgkill"]
    denied = [name for name in _DENIED if own_pid is not None or name not in ("execve", "execveat")]
    eperm = _RET_ERRNO | 1
    prog: list[tuple[int, int, int, int]] = [
        (_LD_W_ABS, 0, 0, 4),
        (_JEQ_K, 1, 0, audit_arch),
        (_RET_K, 0, 0, _RET_KILL_PROCESS),
        (_LD_W_ABS, 0, 0, 0),
    ]
    if arch == "x86_64":  # x32 ABI numbers carry bit 30
        prog += [(_JGE_K, 0, 1, 0x40000000), (_RET_K, 0, 0, _RET_KILL_PROCESS)]
    for name in denied:
        if name in table:
            prog += [(_JEQ_K, 0, 1, table[name]), (_RET_K, 0, 0, eperm)]
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
    if own_pid is None:  # bwrap: the PID namespace holds no other process; plain kill is not needed
        return [*prog, (_JEQ_K, 0, 1, kill), (_RET_K, 0, 0, eperm), (_RET_K, 0, 0, _RET_ALLOW)]
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


def program_bytes(arch: str, own_pid: int | None) -> bytes:
    """The program as ``struct sock_filter`` array (what ``bwrap --seccomp FD`` reads)."""
    return b"".join(struct.pack("=HBBI", *ins) for ins in filter_program(arch, own_pid))


def _install_own_filter() -> str:
    import ctypes

    arch = os.uname().machine
    libc = ctypes.CDLL(None, use_errno=True)

    def prctl(option: int, arg: object) -> None:
        if libc.prctl(option, arg, 0, 0, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"prctl({option}) failed: {os.strerror(err)}")

    prctl(_PR_SET_PDEATHSIG, 9)  # SIGKILL, without importing signal (enum: ~5 ms)
    prctl(_PR_SET_DUMPABLE, 0)
    if arch not in SYSCALLS:
        return f"seccomp skipped ({arch})"
    raw = program_bytes(arch, os.getpid())
    buffer = ctypes.create_string_buffer(raw, len(raw))

    class _SockFprog(ctypes.Structure):
        _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))

    fprog = _SockFprog(len(raw) // 8, ctypes.addressof(buffer))
    prctl(_PR_SET_NO_NEW_PRIVS, 1)
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp filter refused: {os.strerror(err)}")
    return "pdeathsig+nondumpable+seccomp"


def harden(memory_mb: int, cpu_s: int, file_bytes: int, seccomp: str) -> str:
    """Apply the layers; ``seccomp`` is ``"self"`` (install here) or ``"bwrap"`` (already installed)."""
    applied = [_install_own_filter() if seccomp == "self" and sys.platform.startswith("linux") else seccomp]
    limits = {
        resource.RLIMIT_AS: memory_mb * 1024 * 1024,
        resource.RLIMIT_CPU: cpu_s,
        resource.RLIMIT_FSIZE: file_bytes,
        resource.RLIMIT_NOFILE: 64,
        resource.RLIMIT_CORE: 0,
    }
    for which, value in limits.items():
        _soft, hard = resource.getrlimit(which)
        target = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(which, (target, target))
    applied.append("rlimits")
    return "+".join(applied)
