"""Where the CPU went during a load run: CPU seconds per process group, run queue, steal.

The load generator runs on the measured machine, so a run can say who used the cores while it measured:
the server's engines, its replicas, the ingress and proxy, Ray's own daemons, Prometheus, the generator,
the graders, and everything else on the host. ``CpuSampler`` reads ``/proc`` once a second from the
process that runs the load test (``loadgen.run.run_load``; never from a Locust process, so the sampling
never delays a read) and appends one row per interval to ``cpu.jsonl``; ``attribute`` cuts those rows
into the run's stages (``generator.jsonl`` says when each began) and gives each stage its totals.

Processes are told apart by their command lines only (this module must not import ``serving``); a
process nothing matches takes its parent's group (a grader's sandboxed child is a grader), and is
``other`` otherwise. Per sample:

* ``groups``: CPU seconds (user + system, all threads) each group used in the interval, from
  ``/proc/<pid>/stat``; a process that started and ended inside one interval is missed, and
  ``unattributed_s`` (machine busy time minus the groups' sum) says how much that was;
* ``busy_s``/``steal_s``/``idle_s``/``iowait_s``: the machine's own accounts (``/proc/stat``, all CPUs);
  steal is time the hypervisor gave this VM's CPUs to someone else;
* ``procs_running``: runnable tasks at the sample (``/proc/stat``; includes those on a CPU), the run
  queue a woken generator joins; ``loadavg1`` from ``/proc/loadavg``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GROUPS = (
    "vllm_engine",
    "llm_server",
    "ingress",
    "proxy",
    "ray_daemons",
    "prometheus",
    "generator",
    "grader",
    "m3bench",
    "other",
)
LABELS = {
    "vllm_engine": "vLLM engine cores",
    "llm_server": "LLMServer replicas",
    "ingress": "ingress (router)",
    "proxy": "HTTP proxy (Ray proxy / HAProxy)",
    "ray_daemons": "Ray daemons (GCS, raylet, dashboard, agents, controller)",
    "prometheus": "Prometheus",
    "generator": "load generator (Locust)",
    "grader": "graders",
    "m3bench": "m3bench orchestration (and this sampler)",
    "other": "other processes on the host",
}
CPU_FILE = "cpu.jsonl"
ATTRIBUTION_FILE = "cpu.json"
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
# Ray's own processes by command line (binaries and the Python scripts ``ray start`` runs).
_RAY_DAEMONS = (
    "gcs_server",
    "raylet",
    "dashboard/dashboard.py",
    "dashboard/agent.py",
    "runtime_env/agent",
    "log_monitor.py",
    "/ray/autoscaler/_private/monitor.py",
    "ray/_private/monitor.py",
    "ray::ServeController",
    "ray::IDLE",
    "ray::_",
    "ray/scripts/scripts.py",
    "bin/ray start",
)


def classify(cmdline: str) -> str | None:
    """The group of a process from its command line (NUL-separated arguments joined by spaces), or
    None when nothing here matches (the caller then asks the parent)."""
    text = cmdline.strip()
    if not text:
        return None
    if "EngineCore" in text or text.startswith("VLLM::"):  # VLLM::EngineCore, its VLLM::Worker processes
        return "vllm_engine"
    if text.startswith("ray::"):
        if "LLMServer" in text or "LLMDeployment" in text:
            return "llm_server"
        if "ProxyActor" in text or "HAProxy" in text:
            return "proxy"
        if text.startswith("ray::ServeReplica"):
            return "ingress"  # the OpenAI ingress/router and m3bench's info app
        return "ray_daemons"
    first = text.split(" ", 1)[0]
    if os.path.basename(first) == "haproxy":
        return "proxy"
    if os.path.basename(first).startswith("prometheus"):
        return "prometheus"
    if "grader_process" in text:
        return "grader"
    if "locust" in text and ("locustfile" in text or "m3bench-config" in text):
        return "generator"
    if any(marker in text for marker in _RAY_DAEMONS):
        return "ray_daemons"
    return None


@dataclass
class _Proc:
    key: tuple[int, int]  # (pid, start time): a reused pid is a new process
    ppid: int
    ticks: int
    cmdline: str


def _read_proc(pid: int) -> _Proc | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    # "pid (comm) state ppid ..." where comm may hold spaces and parentheses: split after the last ")".
    rest = raw[raw.rfind(")") + 2 :].split()
    try:
        ppid, utime, stime, start = int(rest[1]), int(rest[11]), int(rest[12]), int(rest[19])
    except (IndexError, ValueError):
        return None
    return _Proc((pid, start), ppid, utime + stime, "")


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            data = f.read()
    except OSError:
        return ""
    if not data:  # kernel threads
        try:
            with open(f"/proc/{pid}/comm", "rb") as f:
                return "[" + f.read().decode("utf-8", "replace").strip() + "]"
        except OSError:
            return ""
    return data.replace(b"\0", b" ").decode("utf-8", "replace").strip()


def _machine() -> dict[str, float]:
    """Totals of /proc/stat's cpu line (seconds) and its run-queue counters."""
    out: dict[str, float] = {}
    with open("/proc/stat", encoding="ascii") as f:
        for line in f:
            if line.startswith("cpu "):
                v = [int(x) / _TICK for x in line.split()[1:]]
                user, nice, system, idle, iowait, irq, softirq, steal = (v + [0.0] * 8)[:8]
                out |= {
                    "busy": user + nice + system + irq + softirq,
                    "idle": idle,
                    "iowait": iowait,
                    "steal": steal,
                }
            elif line.startswith(("procs_running", "procs_blocked")):
                key, value = line.split()
                out[key] = float(value)
    with open("/proc/loadavg", encoding="ascii") as f:
        out["loadavg1"] = float(f.read().split()[0])
    return out


class CpuSampler:
    """A daemon thread that appends one row per ``interval_s`` to ``path`` until ``stop``."""

    def __init__(self, path: Path, interval_s: float = 1.0) -> None:
        self.path, self.interval_s = path, interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # process -> group, for this sample only: a process renames itself (a Ray worker starts as
        # ray::IDLE and becomes a replica; vLLM sets VLLM::EngineCore after start), so each sample asks again
        self._groups: dict[tuple[int, int], str] = {}
        self._ticks: dict[tuple[int, int], int] = {}
        self._machine: dict[str, float] = {}
        self._last_ns = 0
        self.self_pid = os.getpid()
        self.error: str | None = None

    def start(self) -> CpuSampler:
        if not Path("/proc/stat").is_file():
            self.error = "no /proc: CPU attribution needs Linux"
            return self
        self._sample(write=False)
        self._thread = threading.Thread(target=self._loop, name="m3bench-cpu-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
            try:
                self._sample(write=True)  # the last partial interval
            except OSError as e:
                self.error = str(e)

    def __enter__(self) -> CpuSampler:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self._sample(write=True)
            except OSError as e:  # a full disk must not end the load run
                self.error = str(e)

    def _group(self, proc: _Proc, table: dict[int, _Proc]) -> str:
        known = self._groups.get(proc.key)
        if known is not None:
            return known
        pid = proc.key[0]
        group = "m3bench" if pid == self.self_pid else classify(_cmdline(pid))
        if group is None:
            parent = table.get(proc.ppid)
            group = self._group(parent, table) if parent is not None and proc.ppid > 1 else "other"
        self._groups[proc.key] = group
        return group

    def _sample(self, write: bool) -> None:
        now_ns = time.time_ns()
        machine = _machine()
        table: dict[int, _Proc] = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                proc = _read_proc(int(name))
                if proc is not None:
                    table[proc.key[0]] = proc
        groups = dict.fromkeys(GROUPS, 0.0)
        ticks: dict[tuple[int, int], int] = {}
        for proc in table.values():
            ticks[proc.key] = proc.ticks
            before = self._ticks.get(proc.key)
            if before is None and self._ticks:
                before = 0  # started during the interval: all its time is new
            if before is not None and proc.ticks > before:
                groups[self._group(proc, table)] += (proc.ticks - before) / _TICK
        previous, self._machine, self._ticks = self._machine, machine, ticks
        last_ns, self._last_ns = self._last_ns, now_ns
        self._groups = {}
        if not write or not previous:
            return
        busy = machine["busy"] - previous["busy"]
        row = {
            "t_wall_ns": now_ns,
            "dt_s": round((now_ns - last_ns) / 1e9, 3),
            "busy_s": round(busy, 3),
            "idle_s": round(machine["idle"] - previous["idle"], 3),
            "iowait_s": round(machine["iowait"] - previous["iowait"], 3),
            "steal_s": round(machine["steal"] - previous["steal"], 3),
            "procs_running": int(machine.get("procs_running", 0)),
            "procs_blocked": int(machine.get("procs_blocked", 0)),
            "loadavg1": machine["loadavg1"],
            "groups": {g: round(v, 3) for g, v in groups.items() if v},
            "unattributed_s": round(max(busy - sum(groups.values()), 0.0), 3),
        }
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


def read_samples(path: Path) -> list[dict[str, Any]]:
    rows = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue  # a line cut by a crash
    return rows


@dataclass(frozen=True)
class Window:
    stage: str
    start_ns: int
    end_ns: int


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarize_window(rows: Iterable[dict[str, Any]], window: Window) -> dict[str, Any]:
    """Totals of the samples whose interval's midpoint lies inside ``window`` (a row covers the ``dt_s``
    seconds before its stamp)."""
    chosen = [r for r in rows if window.start_ns < r["t_wall_ns"] - float(r["dt_s"]) * 0.5e9 <= window.end_ns]
    groups = dict.fromkeys(GROUPS, 0.0)
    for r in chosen:
        for g, v in r["groups"].items():
            groups[g] = groups.get(g, 0.0) + float(v)
    seconds = sum(
        float(r["busy_s"]) + float(r["idle_s"]) + float(r["iowait_s"]) + float(r["steal_s"]) for r in chosen
    )
    wall = sum(float(r["dt_s"]) for r in chosen)
    running = [int(r["procs_running"]) for r in chosen]
    steal = sum(float(r["steal_s"]) for r in chosen)
    busy = sum(float(r["busy_s"]) for r in chosen)
    return {
        "stage": window.stage,
        "samples": len(chosen),
        "wall_s": round(wall, 1),
        "cpu_s": {g: round(v, 2) for g, v in groups.items()},
        "cores": {g: round(v / wall, 3) if wall else None for g, v in groups.items()},
        "unattributed_s": round(sum(float(r["unattributed_s"]) for r in chosen), 2),
        "machine_busy_fraction": round(busy / seconds, 3) if seconds else None,
        "steal_fraction": round(steal / seconds, 4) if seconds else None,
        "procs_running": {
            "mean": round(sum(running) / len(running), 2) if running else None,
            "p99": _percentile(running, 0.99) if running else None,
            "max": max(running) if running else None,
        },
        "loadavg1_max": max((float(r["loadavg1"]) for r in chosen), default=None),
    }


def stage_windows(run_dir: Path, measured: dict[str, tuple[float, float | None]]) -> list[Window]:
    """Each stage's measured window from ``generator.jsonl``: from its start + warmup to start + warmup +
    measure (``measured``: stage name -> (warmup_s, measure_s or None)), cut at the next stage's start
    or the drain; a stage measured by request count runs to the next stage."""
    starts: list[tuple[str, int]] = []
    end_ns: int | None = None
    for row in read_samples(run_dir / "generator.jsonl"):
        if row.get("event") == "stage_start":
            starts.append((str(row["name"]), int(row["start_wall_ns"])))
        elif row.get("event") in ("drain", "stop_signal") and end_ns is None:
            end_ns = time.time_ns() if "t_wall_ns" not in row else int(row["t_wall_ns"])
    windows = []
    for i, (name, start) in enumerate(starts):
        nxt = starts[i + 1][1] if i + 1 < len(starts) else end_ns
        warmup, measure = measured.get(name, (0.0, None))
        begin = start + int(warmup * 1e9)
        end = begin + int(measure * 1e9) if measure is not None else None
        if nxt is not None:
            end = min(end, nxt) if end is not None else nxt
        if end is None:
            end = begin + 3600 * 10**9
        windows.append(Window(name, begin, end))
    return windows


def attribute(run_dir: Path, measured: dict[str, tuple[float, float | None]]) -> dict[str, Any]:
    """Per-stage attribution of a run directory's ``cpu.jsonl``; also written to ``cpu.json``."""
    rows = read_samples(run_dir / CPU_FILE)
    stages = [summarize_window(rows, w) for w in stage_windows(run_dir, measured)]
    whole = (
        summarize_window(rows, Window("run", rows[0]["t_wall_ns"] - 10**9, rows[-1]["t_wall_ns"]))
        if rows
        else None
    )
    out = {
        "schema": "m3bench.cpu-attribution/1",
        "cpus": os.cpu_count(),
        "groups": LABELS,
        "stages": stages,
        "run": whole,
        "how": __doc__.split("\n\n", 1)[1].strip() if __doc__ else "",
    }
    (run_dir / ATTRIBUTION_FILE).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return out


def attribute_plans(run_dir: Path, plans: Iterable[Any]) -> dict[str, Any]:
    """``attribute`` with each stage's measured window taken from its ``loadgen.schedule.StagePlan``."""
    measured = {
        p.name: (float(p.warmup_s), None if p.measure_requests is not None else p.measure_s) for p in plans
    }
    return attribute(run_dir, measured)
