"""Every port a local Ray cluster and its Serve endpoint use, fixed and derived from one base, so two
clusters on one machine (two engineers, or a test beside a demo) never meet.

Node ``i`` (0 is the head) owns ``base + 20*i .. base + 20*i + 19`` for its named ports and
``base + 200 + 100*i .. + 99`` for its worker processes. The Serve HTTP port is separate. Ray's
HAProxy mode adds the head's HAProxy exporter and stats ports, the Python proxy's fallback ports and
the replicas' direct-ingress ports, all in ``base + 151 .. base + 199`` (the block stays below
``base + 1000``, so plans 1000 apart never share a port).
"""

from __future__ import annotations

import contextlib
import errno
import socket
from dataclasses import dataclass

NODE_STRIDE = 20
WORKER_BASE_OFFSET = 200
WORKER_PORTS_PER_NODE = 100
MAX_NODES = 8
DEFAULT_PORT_BASE = 26300
DEFAULT_HTTP_PORT = 8000
HAPROXY_OFFSET = 151  # exporter, stats, fallback HTTP, fallback gRPC
DIRECT_INGRESS_OFFSET = 160  # 20 HTTP ports, then 20 gRPC ports
DIRECT_INGRESS_PORTS = 20


class PortInUseError(RuntimeError):
    """A port the stack needs is taken; the message names it and what to do."""


@dataclass(frozen=True)
class NodePorts:
    metrics_export: int
    dashboard_agent_listen: int
    dashboard_agent_grpc: int
    runtime_env_agent: int
    node_manager: int
    object_manager: int
    min_worker: int
    max_worker: int

    def named(self) -> dict[str, int]:
        return {
            "metrics export": self.metrics_export,
            "dashboard agent": self.dashboard_agent_listen,
            "dashboard agent gRPC": self.dashboard_agent_grpc,
            "runtime-env agent": self.runtime_env_agent,
            "node manager": self.node_manager,
            "object manager": self.object_manager,
        }

    def start_args(self) -> list[str]:
        return [
            f"--metrics-export-port={self.metrics_export}",
            f"--dashboard-agent-listen-port={self.dashboard_agent_listen}",
            f"--dashboard-agent-grpc-port={self.dashboard_agent_grpc}",
            f"--runtime-env-agent-port={self.runtime_env_agent}",
            f"--node-manager-port={self.node_manager}",
            f"--object-manager-port={self.object_manager}",
            f"--min-worker-port={self.min_worker}",
            f"--max-worker-port={self.max_worker}",
        ]


@dataclass(frozen=True)
class PortPlan:
    base: int = DEFAULT_PORT_BASE
    http: int = DEFAULT_HTTP_PORT

    def __post_init__(self) -> None:
        top = self.base + WORKER_BASE_OFFSET + WORKER_PORTS_PER_NODE * MAX_NODES
        if self.base < 1024 or top > 65535:
            raise ValueError(
                f"port base {self.base} must leave {top - self.base} ports below 65536, from 1024"
            )
        if not 1 <= self.http <= 65535:
            raise ValueError(f"HTTP port {self.http} is not a port")

    @property
    def gcs(self) -> int:
        return self.base

    @property
    def dashboard(self) -> int:
        return self.base + 1

    @property
    def client_server(self) -> int:
        return self.base + 2

    def node(self, index: int) -> NodePorts:
        if not 0 <= index < MAX_NODES:
            raise ValueError(f"at most {MAX_NODES} nodes per local cluster")
        first = self.base + NODE_STRIDE * index + 3
        workers = self.base + WORKER_BASE_OFFSET + WORKER_PORTS_PER_NODE * index
        return NodePorts(first, first + 1, first + 2, first + 3, first + 4, first + 5, workers, workers + 99)

    @property
    def haproxy_metrics(self) -> int:
        """HAProxy's Prometheus exporter (``RAY_SERVE_HAPROXY_METRICS_PORT``, ``/metrics``)."""
        return self.base + HAPROXY_OFFSET

    @property
    def haproxy_stats(self) -> int:
        return self.base + HAPROXY_OFFSET + 1

    @property
    def fallback_proxy_http(self) -> int:
        """Where Ray's Python proxy listens while HAProxy holds the Serve HTTP port."""
        return self.base + HAPROXY_OFFSET + 2

    @property
    def fallback_proxy_grpc(self) -> int:
        return self.base + HAPROXY_OFFSET + 3

    @property
    def direct_ingress_http(self) -> tuple[int, int]:
        """First and last port of the replicas' own HTTP listeners under HAProxy."""
        first = self.base + DIRECT_INGRESS_OFFSET
        return first, first + DIRECT_INGRESS_PORTS - 1

    @property
    def direct_ingress_grpc(self) -> tuple[int, int]:
        first = self.base + DIRECT_INGRESS_OFFSET + DIRECT_INGRESS_PORTS
        return first, first + DIRECT_INGRESS_PORTS - 1

    def haproxy_env(self) -> dict[str, str]:
        """Ray's variables that put HAProxy mode's ports inside this plan."""
        http_low, http_high = self.direct_ingress_http
        grpc_low, grpc_high = self.direct_ingress_grpc
        return {
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(self.haproxy_metrics),
            "RAY_SERVE_HAPROXY_STATS_PORT": str(self.haproxy_stats),
            "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(self.fallback_proxy_http),
            "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(self.fallback_proxy_grpc),
            "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(http_low),
            "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(http_high),
            "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": str(grpc_low),
            "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": str(grpc_high),
        }

    def head_args(self) -> list[str]:
        return [
            f"--port={self.gcs}",
            f"--dashboard-port={self.dashboard}",
            f"--ray-client-server-port={self.client_server}",
        ]

    def named(self, nodes: int) -> dict[str, int]:
        """Every fixed port of a cluster of ``nodes`` nodes (worker ranges excluded), by purpose."""
        ports = {"Serve HTTP": self.http, "Ray GCS": self.gcs, "Ray dashboard": self.dashboard}
        ports["Ray client server"] = self.client_server
        ports["HAProxy exporter"] = self.haproxy_metrics
        ports["HAProxy stats"] = self.haproxy_stats
        ports["Serve fallback proxy HTTP"] = self.fallback_proxy_http
        ports["Serve fallback proxy gRPC"] = self.fallback_proxy_grpc
        for i in range(nodes):
            where = "head" if i == 0 else f"node {i}"
            ports.update({f"{where} {k}": v for k, v in self.node(i).named().items()})
        return ports

    def check_free(self, nodes: int, include_http: bool = True) -> None:
        """Raise :class:`PortInUseError` for the first needed port that something else holds.

        Raise ``ValueError`` first when the HTTP port is one of the plan's own Ray ports: Ray would
        take it and Serve's proxy would fail to bind much later, mid-start.
        """
        if include_http:
            self._check_http_apart(nodes)
        for purpose, port in self.named(nodes).items():
            if purpose == "Serve HTTP" and not include_http:
                continue
            if not port_is_free(port):
                flag = "--http-port" if purpose == "Serve HTTP" else "--port-base"
                raise PortInUseError(
                    f"port {port} ({purpose}) is in use; choose another with {flag} or stop what holds it"
                )
        for i in range(nodes):
            node = self.node(i)
            busy = [p for p in range(node.min_worker, node.max_worker + 1) if not port_is_free(p)]
            if len(busy) > WORKER_PORTS_PER_NODE // 2:
                raise PortInUseError(
                    f"ports {node.min_worker}-{node.max_worker} (Ray workers) are mostly in use; "
                    "choose another --port-base"
                )

    def _check_http_apart(self, nodes: int) -> None:
        own = {port: purpose for purpose, port in self.named(nodes).items() if purpose != "Serve HTTP"}
        if self.http in own:
            raise ValueError(
                f"HTTP port {self.http} is also this stack's {own[self.http]} port (port base {self.base})"
            )
        low, high = self.direct_ingress_http[0], self.direct_ingress_grpc[1]
        if low <= self.http <= high:
            raise ValueError(
                f"HTTP port {self.http} lies in this stack's direct-ingress ports {low}-{high} "
                f"(port base {self.base})"
            )
        for i in range(nodes):
            node = self.node(i)
            if node.min_worker <= self.http <= node.max_worker:
                raise ValueError(
                    f"HTTP port {self.http} lies in this stack's Ray worker ports "
                    f"{node.min_worker}-{node.max_worker} (port base {self.base})"
                )


def port_is_free(port: int) -> bool:
    """True when nothing listens on ``port`` on any address (Ray binds most of its ports to all)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        # SO_REUSEADDR: a port in TIME_WAIT after a recent stop is free to listen on again.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))  # noqa: S104 - probing, closed at once
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True
