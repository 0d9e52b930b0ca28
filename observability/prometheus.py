"""A local Prometheus for one run: generated config, run-scoped data directory, readiness, queries.

``PrometheusServer(config, data_dir, port).start()`` runs Debian's ``/usr/bin/prometheus`` (or the one
on PATH) bound to 127.0.0.1, writes its config and rule files under ``data_dir/config``, keeps its TSDB
in ``data_dir/tsdb`` and waits until ``/-/ready`` answers. It scrapes Ray through the service-discovery
file Ray's metrics agent writes, every Locust process through the file_sd target lists the load
generator writes (``loadgen.exporter.write_file_sd``), and itself. ``query``/``query_range`` go through
the HTTP API. ``RunWindow`` records a run's time range beside its results so a report can query
Prometheus for exactly that run later.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from loadgen.metric_names import JOB_NAME
from loadgen.profile import Slo
from observability import rules
from observability.prometheus_api import WINDOW_FILE, PrometheusClient, PrometheusError, RunWindow

__all__ = [
    "WINDOW_FILE",
    "PrometheusClient",
    "PrometheusConfig",
    "PrometheusError",
    "PrometheusServer",
    "RunWindow",
    "find_binary",
    "free_port",
    "port_is_free",
]

DEFAULT_BINARY = "/usr/bin/prometheus"
DEFAULT_RAY_TEMP_DIR = Path("/tmp/ray")  # noqa: S108 - Ray's own default
RAY_SD_FILE = "prom_metrics_service_discovery.json"  # ray._private.ray_constants
# HAProxy's exporter in Ray Serve's HAProxy mode (the port Ray configures, RAY_SERVE_HAPROXY_METRICS_PORT):
# `m3bench serve up` writes this file_sd list beside Ray's (serving.stack.stack.HAPROXY_SD_FILE).
HAPROXY_SD_FILE = "m3bench_haproxy_sd.json"
JOB_HAPROXY = "haproxy"
LOADGEN_SD_PATTERN = "loadgen*.json"
JOB_RAY = "ray"
JOB_PROMETHEUS = "prometheus"
JOB_LOADGEN = JOB_NAME  # the file_sd entries the load generator writes set it too


class PrometheusConfig(BaseModel):
    """What the generated prometheus.yml scrapes, and how often."""

    model_config = ConfigDict(extra="forbid")

    scrape_interval_s: float = Field(default=1.0, gt=0, description="Short, for short CPU runs.")
    evaluation_interval_s: float = Field(default=1.0, gt=0)
    ray_temp_dir: Path = Field(
        default=DEFAULT_RAY_TEMP_DIR,
        description="Ray writes <temp dir>/prom_metrics_service_discovery.json (a link to the session's).",
    )
    loadgen_sd_dir: Path | None = Field(
        default=None,
        description="Directory of load-generator file_sd lists (loadgen*.json); default <data_dir>/targets.",
    )
    loadgen_sd_files: list[Path] = Field(
        default_factory=list, description="More file_sd lists (glob allowed in the last segment)."
    )
    static_targets: dict[str, list[str]] = Field(
        default_factory=dict, description="job -> host:port targets (e.g. a bare vLLM server)."
    )
    rule_files: list[Path] = Field(default_factory=list, description="Extra rule files.")
    m3bench_rules: bool = Field(default=True, description="Load m3bench's generated recording/alert rules.")
    rule_window: str = Field(
        default="10s", pattern=r"^[0-9]+(ms|s|m|h)$", description="Rate window of the recording rules."
    )
    slo: Slo | None = Field(
        default=None, description="SLOs for the goodput rule (default: observability.rules)."
    )
    retention: str = "15d"

    def render(self, port: int, loadgen_sd_dir: Path, rule_files: list[Path]) -> str:
        interval = _duration(self.scrape_interval_s)
        scrape: list[dict[str, Any]] = [
            {"job_name": JOB_PROMETHEUS, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]},
            {
                "job_name": JOB_RAY,
                "file_sd_configs": [
                    {"files": [str(self.ray_temp_dir / RAY_SD_FILE)], "refresh_interval": "5s"}
                ],
            },
            {
                "job_name": JOB_HAPROXY,
                "file_sd_configs": [
                    {"files": [str(self.ray_temp_dir / HAPROXY_SD_FILE)], "refresh_interval": "5s"}
                ],
            },
            {
                # file_sd entries carry job="m3bench_loadgen" and run_id; honor_labels keeps the exporter's
                "job_name": JOB_LOADGEN,
                "honor_labels": True,
                "file_sd_configs": [
                    {
                        "files": [str(loadgen_sd_dir / LOADGEN_SD_PATTERN)]
                        + [str(p) for p in self.loadgen_sd_files],
                        "refresh_interval": "2s",
                    }
                ],
            },
        ]
        for job, targets in sorted(self.static_targets.items()):
            scrape.append({"job_name": job, "static_configs": [{"targets": list(targets)}]})
        document = {
            "global": {
                "scrape_interval": interval,
                "scrape_timeout": interval,
                "evaluation_interval": _duration(self.evaluation_interval_s),
            },
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": scrape,
        }
        return yaml.safe_dump(document, sort_keys=False)


def _duration(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"


def find_binary(binary: str | Path | None = None) -> Path:
    """The prometheus executable: the given path, /usr/bin/prometheus, or the one on PATH."""
    candidates = [str(binary)] if binary is not None else [DEFAULT_BINARY, "prometheus"]
    for candidate in candidates:
        found = shutil.which(candidate)
        if found:
            return Path(found)
    raise PrometheusError(
        f"prometheus binary not found (tried {', '.join(candidates)}); "
        "install it (Debian: apt-get install prometheus) or pass its path"
    )


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as probe:
        # as Prometheus binds (Go sets SO_REUSEADDR): a port left in TIME_WAIT by a stopped server is free
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class PrometheusServer:
    """One Prometheus process for one run; a context manager that stops it and records the window."""

    def __init__(
        self,
        config: PrometheusConfig | Path,
        data_dir: Path,
        port: int = 9090,
        *,
        host: str = "127.0.0.1",
        binary: str | Path | None = None,
        run_id: str | None = None,
        results_dir: Path | None = None,
    ) -> None:
        self.config = config
        self.data_dir = data_dir.resolve()
        self.port, self.host = port, host
        self.binary = binary
        self.run_id = run_id or self.data_dir.name
        self.results_dir = results_dir
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at: float | None = None
        self.stopped_at: float | None = None
        self.client = PrometheusClient(self.url)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def config_dir(self) -> Path:
        return self.data_dir / "config"

    @property
    def loadgen_sd_dir(self) -> Path:
        """Where a load generator run should write its file_sd list (``loadgen_sd_path``)."""
        if isinstance(self.config, PrometheusConfig) and self.config.loadgen_sd_dir is not None:
            return self.config.loadgen_sd_dir.resolve()
        return self.data_dir / "targets"

    def loadgen_sd_path(self, run_id: str) -> Path:
        """A path for ``Generator.file_sd_path`` that this Prometheus watches."""
        return self.loadgen_sd_dir / f"loadgen-{run_id}.json"

    def write_config(self) -> Path:
        if isinstance(self.config, Path):
            return self.config.resolve()
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.loadgen_sd_dir.mkdir(parents=True, exist_ok=True)
        rule_files = [p.resolve() for p in self.config.rule_files]
        if self.config.m3bench_rules:
            settings = rules.RuleSettings(window=self.config.rule_window)
            if self.config.slo is not None:
                settings = rules.RuleSettings(window=self.config.rule_window, slo=self.config.slo)
            rule_files += rules.write_rule_files(self.config_dir / "rules", settings)
        path = self.config_dir / "prometheus.yml"
        path.write_text(self.config.render(self.port, self.loadgen_sd_dir, rule_files), encoding="utf-8")
        return path

    def start(self, timeout_s: float = 30.0) -> PrometheusServer:
        if self.process is not None:
            raise PrometheusError("this Prometheus is already running")
        binary = find_binary(self.binary)
        if not port_is_free(self.host, self.port):
            raise PrometheusError(
                f"port {self.host}:{self.port} is in use (another Prometheus?); "
                "stop it or choose another port"
            )
        config_file = self.write_config()
        (self.data_dir / "tsdb").mkdir(parents=True, exist_ok=True)
        log_path = self.data_dir / "prometheus.log"
        command = [
            str(binary),
            f"--config.file={config_file}",
            f"--storage.tsdb.path={self.data_dir / 'tsdb'}",
            f"--storage.tsdb.retention.time={_retention(self.config)}",
            f"--web.listen-address={self.host}:{self.port}",
            "--web.enable-lifecycle",
            "--log.level=warn",
        ]
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.data_dir
            )
        self.started_at = time.time()
        self._wait_ready(timeout_s, log_path)
        self.record_window()
        return self

    def _wait_ready(self, timeout_s: float, log_path: Path) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:]
                self.process = None
                raise PrometheusError(f"prometheus exited at start: {' | '.join(tail)} (log: {log_path})")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response,  # noqa: S310
            ):
                if response.status == 200:
                    return
            time.sleep(0.1)
        self.stop()
        raise PrometheusError(f"prometheus not ready after {timeout_s:g}s (log: {log_path})")

    def reload(self) -> None:
        """Re-read config and rules (``/-/reload``; file_sd lists are watched without it)."""
        request = urllib.request.Request(f"{self.url}/-/reload", method="POST")  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=10):  # noqa: S310
                pass
        except (urllib.error.URLError, OSError) as e:
            raise PrometheusError(f"prometheus reload failed: {e}") from e

    def stop(self, timeout_s: float = 15.0) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self.stopped_at = time.time()
        self.record_window()

    def window(self) -> RunWindow:
        return RunWindow(
            run_id=self.run_id,
            start=self.started_at or time.time(),
            end=self.stopped_at,
            prometheus_url=self.url,
            data_dir=str(self.data_dir),
        )

    def record_window(self) -> None:
        if self.results_dir is not None:
            self.window().save(self.results_dir)

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        return self.client.query(promql, at)

    def query_range(self, promql: str, start: float, end: float, step: float = 1.0) -> list[dict[str, Any]]:
        return self.client.query_range(promql, start, end, step)

    def __enter__(self) -> PrometheusServer:
        return self.start() if self.process is None else self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()


def _retention(config: PrometheusConfig | Path) -> str:
    return config.retention if isinstance(config, PrometheusConfig) else "15d"
