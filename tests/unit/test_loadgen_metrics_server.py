"""A Locust process's metrics rendered by a child process (loadgen.metrics_server): the same series as
in-process serving, no scrape on the generator's own loop, and no server left when the process ends."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from loadgen.exporter import ClientMetrics
from loadgen.metrics_server import MULTIPROC_ENV
from tests.support.records import record

REPO = Path(__file__).resolve().parents[2]

# What a Locust process does: gevent's monkey-patching first, then the metrics, then serving them.
PROCESS = """
import sys
from gevent import monkey
monkey.patch_all()
from loadgen.exporter import ClientMetrics
from tests.unit.test_loadgen_metrics_server import feed
metrics = ClientMetrics("run1")
feed(metrics)
port = metrics.serve("127.0.0.1", 0)
assert metrics.serve("127.0.0.1", 0) == port  # a local run's controller and worker: one server
print(port, flush=True)
sys.stdin.readline()
"""


def feed(metrics: ClientMetrics) -> None:
    """One graded record, an in-flight request and a target rate: every kind of metric."""
    r = record(first_token_read_delay_ns=50_000)
    metrics.observe(r)
    r.grade = "pass"
    metrics.graded(r)
    metrics.inflight("m", 1)
    metrics.target_rate("s0", 2.5)


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("m3bench_") and not sample.name.endswith("_created")
    }


def _in_process() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    from prometheus_client import generate_latest

    metrics = ClientMetrics("run1")
    feed(metrics)
    registry: CollectorRegistry = metrics.registry
    return _samples(generate_latest(registry).decode())


def test_child_serves_the_same_series_and_ends_with_the_process(tmp_path: Path) -> None:
    values = tmp_path / "run" / "local"  # loadgen.run's layout: a root, one directory per Locust process
    values.mkdir(parents=True)
    env = {**os.environ, MULTIPROC_ENV: str(values), "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-c", PROCESS], cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        served = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        assert _samples(served) == _in_process()
        assert "process_cpu_seconds_total" in served  # the Locust process's CPU, as before
        listeners = {
            c.pid
            for c in psutil.net_connections("tcp")
            if c.laddr and c.laddr.port == port and c.status == "LISTEN"
        }
        children = {child.pid for child in psutil.Process(process.pid).children()}
        assert listeners
        assert listeners <= children  # rendered by the child, never on the process's own loop
        assert process.pid not in listeners
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(timeout=10)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(psutil.pid_exists(pid) for pid in children):
        time.sleep(0.1)
    assert not [
        pid for pid in children if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"
    ]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (tmp_path / "run").exists():
        time.sleep(0.1)
    assert not (tmp_path / "run").exists()  # the values directory and its empty root are removed
