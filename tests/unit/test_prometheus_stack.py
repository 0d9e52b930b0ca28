"""The local Prometheus launcher: config generation (checked by promtool), run windows, start errors."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import yaml

from observability.prometheus import (
    JOB_LOADGEN,
    JOB_RAY,
    PrometheusConfig,
    PrometheusError,
    PrometheusServer,
    RunWindow,
    find_binary,
)

PROMTOOL = shutil.which("promtool")


def _server(tmp_path: Path, **config: object) -> PrometheusServer:
    return PrometheusServer(PrometheusConfig.model_validate(config), tmp_path / "prom", port=19999)


def test_config_scrapes_ray_loadgen_and_itself(tmp_path: Path) -> None:
    server = _server(tmp_path, ray_temp_dir=tmp_path / "ray", static_targets={"vllm": ["127.0.0.1:8000"]})
    document = yaml.safe_load(server.write_config().read_text())
    jobs = {job["job_name"]: job for job in document["scrape_configs"]}
    assert set(jobs) == {"prometheus", JOB_RAY, JOB_LOADGEN, "vllm", "haproxy"}
    # Ray Serve's HAProxy mode: `serve up` lists HAProxy's exporter beside Ray's list
    assert jobs["haproxy"]["file_sd_configs"][0]["files"] == [
        str(tmp_path / "ray" / "m3bench_haproxy_sd.json")
    ]
    assert jobs[JOB_RAY]["file_sd_configs"][0]["files"] == [
        str(tmp_path / "ray" / "prom_metrics_service_discovery.json")
    ]
    assert jobs[JOB_LOADGEN]["file_sd_configs"][0]["files"][0] == str(server.loadgen_sd_dir / "loadgen*.json")
    assert server.loadgen_sd_path("r1").parent == server.loadgen_sd_dir
    assert jobs["prometheus"]["static_configs"][0]["targets"] == ["127.0.0.1:19999"]
    assert document["global"]["scrape_interval"] == "1000ms"


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed")
def test_generated_config_passes_promtool(tmp_path: Path) -> None:
    config = _server(tmp_path).write_config()
    result = subprocess.run(
        [str(PROMTOOL), "check", "config", str(config)], check=False, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_run_window_round_trip(tmp_path: Path) -> None:
    window = RunWindow(
        run_id="r1", start=100.0, end=160.5, prometheus_url="http://127.0.0.1:9", data_dir="/d"
    )
    path = window.save(tmp_path / "results")
    assert RunWindow.load(path) == window
    assert RunWindow.load(tmp_path / "results") == window
    with pytest.raises(PrometheusError, match="cannot read"):
        RunWindow.load(tmp_path / "missing.json")


def test_missing_binary_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PrometheusError, match="binary not found"):
        find_binary(tmp_path / "no-such-prometheus")


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        server = PrometheusServer(
            PrometheusConfig(), tmp_path / "prom", port=port, binary=shutil.which("true")
        )
        with pytest.raises(PrometheusError, match="in use"):
            server.start()
