"""A Ray cluster on this machine that m3bench starts and stops itself: a head and optional worker
nodes, each its own ``ray start`` with its own logical resources, all under one temp dir and one port
block (:mod:`serving.stack.ports`).

Stopping never uses ``ray stop``: that ends every Ray process of the user on the machine, including
other people's clusters. :meth:`LocalRayCluster.stop` ends exactly the processes of this cluster: those
whose command line names its temp dir, those carrying its marker in their environment (every process
``ray start`` spawns inherits it, vLLM engine processes included), and all their descendants.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from serving.stack.ports import PortPlan

MARKER_ENV = "M3BENCH_RAY_CLUSTER"
NODE_ENV = "M3BENCH_RAY_NODE"
OBJECT_STORE_BYTES = 512 * 1024 * 1024  # Serve moves small chunks; Ray's default takes 30% of RAM
SERVICE_DISCOVERY_FILE = "prom_metrics_service_discovery.json"
Progress = Callable[[str], None]


class ClusterError(RuntimeError):
    """The local Ray cluster could not start; the message says why and where the logs are."""


@dataclass(frozen=True)
class NodeSpec:
    """One node's logical resources: Ray schedules by these, not by the machine's cores."""

    cpus: int
    resources: dict[str, float] = field(default_factory=dict)
    gpus: int | None = 0  # None: let Ray detect the node's GPUs (a GPU catalog)


def ray_command() -> list[str]:
    script = Path(sys.executable).with_name("ray")
    return [str(script)] if script.exists() else [sys.executable, "-m", "ray.scripts.scripts"]


@dataclass
class LocalRayCluster:
    temp_dir: Path
    ports: PortPlan
    nodes: list[NodeSpec]
    cluster_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    env: dict[str, str] = field(default_factory=dict)  # added to every node's environment

    def __post_init__(self) -> None:
        if not self.nodes:
            raise ValueError("a cluster needs at least its head node")
        # Unix socket paths under <temp>/session_<date>_<pid>/sockets/ must stay below 108 bytes.
        if len(str(self.temp_dir)) > 40:
            raise ValueError(
                f"Ray temp dir {self.temp_dir} is too long for Ray's socket paths (max 40 chars)"
            )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.ports.gcs}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.dashboard}"

    @property
    def service_discovery_file(self) -> Path:
        """Ray's Prometheus file_sd list (a link to the current session's copy)."""
        return self.temp_dir / SERVICE_DISCOVERY_FILE

    @property
    def metrics_ports(self) -> list[int]:
        return [self.ports.node(i).metrics_export for i in range(len(self.nodes))]

    def start(self, progress: Progress | None = None) -> None:
        """Start the head, then each worker node; on any failure stop what started and raise."""
        say = progress or (lambda _m: None)
        self.ports.check_free(len(self.nodes), include_http=True)
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        try:
            for index, node in enumerate(self.nodes):
                where = "head" if index == 0 else f"worker node {index}"
                say(f"starting Ray {where} ({node.cpus} logical CPUs{_resources_text(node)})")
                self._ray_start(index, node)
        except BaseException:
            self.stop()
            raise

    def start_command(self, index: int, node: NodeSpec) -> list[str]:
        """The ``ray start`` command line of node ``index`` (0: the head)."""
        cmd = [*ray_command(), "start", f"--num-cpus={node.cpus}"]
        if node.gpus is not None:
            cmd.append(f"--num-gpus={node.gpus}")
        cmd += [f"--object-store-memory={OBJECT_STORE_BYTES}", "--disable-usage-stats"]
        if node.resources:
            cmd.append(f"--resources={json.dumps(node.resources)}")
        if index == 0:
            cmd += ["--head", f"--temp-dir={self.temp_dir}", "--include-dashboard=true"]
            cmd += ["--dashboard-host=127.0.0.1", *self.ports.head_args()]
        else:
            cmd.append(f"--address={self.address}")
        cmd += self.ports.node(index).start_args()
        return cmd

    def _ray_start(self, index: int, node: NodeSpec, attempts: int = 3) -> None:
        """``ray start`` one node. Ray gives a raylet 30 s to register with the GCS; on a loaded machine
        that can pass, so a failed start is cleaned up (that node's processes only) and retried."""
        cmd = self.start_command(index, node)
        env = {**os.environ, **self.env, MARKER_ENV: self.cluster_id, NODE_ENV: str(index)}
        env["RAY_USAGE_STATS_ENABLED"] = "0"
        detail = ""
        for _ in range(attempts):
            try:
                done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, check=False)
            except subprocess.TimeoutExpired:
                detail = "did not finish in 240 s"
            else:
                if done.returncode == 0:
                    return
                detail = _failure_line(done.stderr + done.stdout)
            end_processes(self._node_processes(index), grace_s=5)
            time.sleep(3)
        raise ClusterError(
            f"`ray start` for node {index} failed {attempts} times: {detail}; logs: {self.logs_dir}"
        )

    def _node_processes(self, index: int) -> list[psutil.Process]:
        def on_node(process: psutil.Process) -> bool:
            try:
                return bool(process.environ().get(NODE_ENV) == str(index))
            except (psutil.Error, OSError):
                return index == 0  # head processes that hide their environment: GCS, dashboard

        return [p for p in self.processes() if on_node(p)]

    @property
    def logs_dir(self) -> Path:
        return self.temp_dir / "session_latest" / "logs"

    def processes(self) -> list[psutil.Process]:
        return cluster_processes(self.temp_dir, self.cluster_id)

    def is_running(self) -> bool:
        return bool(self.processes())

    def stop(self, grace_s: float = 10.0) -> int:
        """End every process of this cluster (SIGTERM, then SIGKILL after ``grace_s``); the count."""
        return end_processes(self.processes(), grace_s)

    def remove_files(self) -> None:
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def to_state(self) -> dict[str, Any]:
        return {
            "temp_dir": str(self.temp_dir),
            "port_base": self.ports.base,
            "http_port": self.ports.http,
            "cluster_id": self.cluster_id,
            "nodes": [asdict(n) for n in self.nodes],
            "env": dict(self.env),
        }

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> LocalRayCluster:
        return cls(
            temp_dir=Path(data["temp_dir"]),
            ports=PortPlan(base=int(data["port_base"]), http=int(data["http_port"])),
            nodes=[NodeSpec(int(n["cpus"]), dict(n["resources"]), n.get("gpus", 0)) for n in data["nodes"]],
            cluster_id=str(data["cluster_id"]),
            env=dict(data.get("env") or {}),
        )


def _failure_line(output: str) -> str:
    """The line of ``ray start`` output that says why it failed (not its INFO chatter)."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    words = ("rror", "xception", "timed out")
    telling = [ln for ln in lines if " INFO " not in ln and any(w in ln for w in words)]
    return (telling[-1] if telling else lines[-1] if lines else "no output")[:300]


def _resources_text(node: NodeSpec) -> str:
    gpus = ", GPUs as detected" if node.gpus is None else f", {node.gpus} GPUs" if node.gpus else ""
    return gpus + "".join(f", {k}={v:g}" for k, v in sorted(node.resources.items()))


def _names_dir(arguments: list[str], directory: str) -> bool:
    return any(a == directory or a.endswith("=" + directory) or directory + "/" in a for a in arguments)


def _has_marker(process: psutil.Process, cluster_id: str) -> bool:
    try:
        return bool(process.environ().get(MARKER_ENV) == cluster_id)
    except (psutil.Error, OSError):
        return False


def cluster_processes(temp_dir: Path, cluster_id: str) -> list[psutil.Process]:
    """The processes of one local cluster and all their descendants (never this process)."""
    me = os.getpid()
    directory = str(temp_dir)
    roots: list[psutil.Process] = []
    for process in psutil.process_iter(["cmdline"]):
        if process.pid == me:
            continue
        arguments = process.info.get("cmdline") or []
        if _names_dir(arguments, directory) or _has_marker(process, cluster_id):
            roots.append(process)
    found = {p.pid: p for p in roots}
    for root in roots:
        try:
            for child in root.children(recursive=True):
                found.setdefault(child.pid, child)
        except psutil.Error:
            continue
    found.pop(me, None)
    return list(found.values())


def end_processes(processes: list[psutil.Process], grace_s: float) -> int:
    for process in processes:
        try:
            process.terminate()
        except psutil.Error:
            continue
    _, alive = psutil.wait_procs(processes, timeout=grace_s)
    for process in alive:
        try:
            process.kill()
        except psutil.Error:
            continue
    psutil.wait_procs(alive, timeout=5)
    return len(processes)
