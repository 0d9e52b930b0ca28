"""One replica = a fixed slice of a core: each vLLM engine's model process in its own CPU cgroup with a quota.

The planner assumes replicas are independent units: N replicas carry N times one. On a 2-core machine
an uncapped engine takes a whole core at saturation, so two of them leave nothing for the serving path
and the load generator, and the 2-replica sweep measures the machine, not two replicas. Capping each
engine at ``quota`` cores (a CFS quota: ``quota`` x period of CPU time per period) makes a replica a
unit that exists twice on this machine, the way a GPU replica is one GPU.

cgroup v1 (``/sys/fs/cgroup/cpu``) or v2 (``/sys/fs/cgroup`` with the ``cpu`` controller); needs root
(or a delegated cgroup). Without it ``EngineSlices.apply`` returns why, and the demo runs uncapped and
says so. Every group made here is removed again (its processes moved back to the root group first).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from loadgen.cpu_attribution import classify

V1 = Path("/sys/fs/cgroup/cpu")
V2 = Path("/sys/fs/cgroup")
PERIOD_US = 20_000  # short: a capped engine waits at most (1 - quota) x 20 ms at a time


def _title(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        )
    except OSError:
        return ""


def engine_groups(among: set[int] | None = None) -> list[list[int]]:
    """Each vLLM engine's processes: its ``VLLM::EngineCore`` and that core's ``VLLM::Worker`` children
    (the CPU backend runs the model in the worker while the core busy-polls, with sched_yield, on their
    shared-memory queue: both must share one cap, or an idle-looking spin takes the other replica's
    CPU). On the host, or among ``among`` (one cluster's processes)."""
    titles = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (among is None or int(name) in among):
            title = _title(int(name))
            if classify(title) == "vllm_engine":
                titles[int(name)] = title
    workers = [pid for pid, title in titles.items() if title.startswith("VLLM::Worker")]
    cores = sorted(pid for pid, title in titles.items() if "EngineCore" in title)
    return [[core, *sorted(w for w in workers if _ppid(w) == core)] for core in cores]


def _ppid(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rfind(")") + 2 :].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


class EngineSlices:
    def __init__(self, name: str, quota_cores: float) -> None:
        self.name, self.quota = name, quota_cores
        self.groups: list[Path] = []
        self.root: Path | None = None
        self.v2 = False

    def _base(self) -> Path | None:
        if (V1 / "cpu.cfs_quota_us").is_file():
            return V1
        controllers = V2 / "cgroup.controllers"
        if controllers.is_file() and "cpu" in controllers.read_text().split():
            self.v2 = True
            return V2
        return None

    def apply(self, engines: list[list[int]]) -> str | None:
        """Put each engine's processes in one capped group of its own; None on success, else why not."""
        base = self._base()
        if base is None:
            return "no CPU cgroup controller here"
        try:
            self.root = base / self.name
            self.root.mkdir(exist_ok=True)
            if self.v2:
                (base / "cgroup.subtree_control").write_text("+cpu")
                (self.root / "cgroup.subtree_control").write_text("+cpu")
            for pids in engines:
                group = self.root / f"engine-{pids[0]}"
                group.mkdir(exist_ok=True)
                self.groups.append(group)
                quota = int(self.quota * PERIOD_US)
                if self.v2:
                    (group / "cpu.max").write_text(f"{quota} {PERIOD_US}")
                else:
                    (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
                    (group / "cpu.cfs_quota_us").write_text(str(quota))
                for pid in pids:
                    (group / "cgroup.procs").write_text(str(pid))
        except OSError as e:
            self.remove()
            return f"cannot use CPU cgroups ({e.strerror or e})"
        return None

    def set_quota(self, cores: float | None) -> None:
        """Re-cap every group at ``cores`` (None: uncapped, the group stays) — best effort."""
        quota_us = None if cores is None else int(cores * PERIOD_US)
        for group in self.groups:
            with contextlib.suppress(OSError):
                if self.v2:
                    (group / "cpu.max").write_text(f"{'max' if quota_us is None else quota_us} {PERIOD_US}")
                else:
                    (group / "cpu.cfs_quota_us").write_text(str(-1 if quota_us is None else quota_us))

    def remove(self) -> None:
        """Move every process back to the root group and delete the groups (best effort)."""
        base = V2 if self.v2 else V1
        for group in self.groups:
            try:
                for pid in (group / "cgroup.procs").read_text().split():
                    try:
                        (base / "cgroup.procs").write_text(pid)
                    except OSError:
                        continue  # it exited meanwhile
                group.rmdir()
            except OSError:
                continue
        self.groups.clear()
        if self.root is not None:
            with contextlib.suppress(OSError):
                self.root.rmdir()
            self.root = None
