"""Prometheus export of the client metrics from one Locust process (master or worker).

Each process serves its own registry on its own port; the master collects every process's address
and writes a file_sd target list (``write_file_sd``) that Prometheus watches. Names, help, labels and
buckets come from ``loadgen.metric_names``.
"""

from __future__ import annotations

import bisect
import json
import os
import subprocess
import sys
from collections import Counter as Tally
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.process_collector import ProcessCollector

from loadgen import metric_names as names
from loadgen.metrics_server import MULTIPROC_ENV
from loadgen.records import RequestRecord
from loadgen.timings import itl_s, schedule_lag_s, tpot_s, ttft_s


def _make(spec: names.MetricSpec, registry: CollectorRegistry) -> MetricWrapperBase:
    if spec.kind == "histogram":
        return Histogram(spec.name, spec.help, spec.labels, buckets=spec.buckets, registry=registry)
    if spec.kind == "counter":
        return Counter(spec.name, spec.help, spec.labels, registry=registry)
    # multiprocess mode (one process per directory): the value itself, no pid label
    return Gauge(spec.name, spec.help, spec.labels, registry=registry, multiprocess_mode="sum")


_served: dict[str, int] = {}  # directory -> its server's port


def _child_server(directory: str, host: str, port: int) -> int:
    """Start ``loadgen.metrics_server`` for ``directory`` once per process (a local run's controller and
    worker share it: one target, no series twice); its port."""
    if directory not in _served:
        child = subprocess.Popen(
            [sys.executable, "-m", "loadgen.metrics_server", directory, str(os.getpid()), host, str(port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
        )
        assert child.stdout is not None
        line = child.stdout.readline().decode().strip()
        if not line.isdigit():
            child.kill()
            raise RuntimeError(f"the metrics server for {directory} did not start (exit {child.wait()})")
        _served[directory] = int(line)
    return _served[directory]


class ClientMetrics:
    """The metric objects of one process, and how a finished record feeds them."""

    def __init__(self, run_id: str, export_itl: bool = True) -> None:
        self.run_id = run_id
        self.export_itl = export_itl
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total: generator CPU
        self.m: dict[str, Any] = {spec.name: _make(spec, self.registry) for spec in names.ALL}
        self.port: int | None = None

    def serve(self, host: str, port: int) -> int:
        """Serve this process's metrics on ``host:port`` (0: any free port); returns the port. Under
        ``PROMETHEUS_MULTIPROC_DIR`` (a Locust process that ``m3bench load run`` started) a child process
        serves them (``loadgen.metrics_server``), once per process, so no scrape runs on this loop."""
        if os.environ.get(MULTIPROC_ENV):
            self.port = _child_server(os.environ[MULTIPROC_ENV], host, port)
        else:
            server, _ = start_http_server(port, addr=host, registry=self.registry)
            self.port = int(server.server_port)
        return self.port

    def observe(self, record: RequestRecord) -> None:
        labels = (record.model, record.language, record.stage, record.phase, self.run_id)
        m = self.m
        m[names.REQUESTS.name].labels(*labels, record.status).inc()
        ttft = ttft_s(record)
        if ttft is not None:
            m[names.TTFT.name].labels(*labels).observe(ttft)
        if record.status == "ok":
            m[names.E2E.name].labels(*labels).observe((record.end_ns - record.sent_ns) / 1e9)
        tpot = tpot_s(record)
        if tpot is not None:
            m[names.TPOT.name].labels(*labels).observe(tpot)
        if self.export_itl and len(record.chunk_offsets_ns) > 1:
            observe_many(m[names.ITL.name].labels(*labels), itl_s(record))
        lag = schedule_lag_s(record)
        if lag is not None:
            m[names.SCHEDULE_LAG.name].labels(*labels).observe(max(0.0, lag))
        if record.output_tokens:
            m[names.OUTPUT_TOKENS.name].labels(*labels).inc(record.output_tokens)
        if record.prompt_tokens:
            m[names.PROMPT_TOKENS.name].labels(*labels).inc(record.prompt_tokens)
        if record.first_token_read_delay_ns is not None:
            m[names.READ_DELAY.name].labels(self.run_id).observe(record.first_token_read_delay_ns / 1e9)

    def graded(self, record: RequestRecord) -> None:
        labels = (record.model, record.language, record.stage, record.phase, self.run_id)
        self.m[names.GRADED.name].labels(*labels, record.grade).inc()

    def inflight(self, model: str, delta: int) -> None:
        self.m[names.INFLIGHT.name].labels(model, self.run_id).inc(delta)

    def target_rate(self, stage: str, rate: float) -> None:
        self.m[names.TARGET_RATE.name].labels(stage, self.run_id).set(rate)

    def target_concurrency(self, stage: str, users: float) -> None:
        self.m[names.CONCURRENCY.name].labels(stage, self.run_id).set(users)

    def loop_lag(self, seconds: float) -> None:
        self.m[names.LOOP_LAG.name].labels(self.run_id).observe(seconds)


def observe_many(histogram: Any, values: list[float]) -> None:
    """``observe`` for many values at once: one increment per touched bucket, not per value.

    Uses prometheus_client's histogram internals (``_upper_bounds``, ``_buckets``, ``_sum``), which
    have been stable for years; falls back to one ``observe`` per value if they change.
    """
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for value in values:
            histogram.observe(value)
        return
    counts = Tally(bisect.bisect_left(bounds, value) for value in values)
    for index, count in counts.items():
        buckets[min(index, len(buckets) - 1)].inc(count)
    total.inc(sum(values))


def write_file_sd(path: Path, targets: list[str], labels: dict[str, str]) -> None:
    """Prometheus file_sd JSON, written atomically (Prometheus may read it at any moment)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    content: list[dict[str, Any]] = [
        {"targets": sorted(set(targets)), "labels": {"job": names.JOB_NAME, **labels}}
    ]
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
    temporary.replace(path)
