"""The stack's pieces that need no services: port plans and the in-use check, the scoped process
finder behind `serve down`, the state file, logical CPU sizing, and the CLI's one-line errors."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from serving.catalog import load_catalog
from serving.stack import PortInUseError, PortPlan, StackState
from serving.stack.cluster import MARKER_ENV, LocalRayCluster, NodeSpec, cluster_processes, end_processes
from serving.stack.ports import port_is_free
from serving.stack.stack import logical_cpus

REPO = Path(__file__).resolve().parents[2]


def test_port_plan_ports_are_distinct() -> None:
    plan = PortPlan(base=40000, http=40999)
    named = plan.named(nodes=3)
    assert len(set(named.values())) == len(named)
    ranges = [range(plan.node(i).min_worker, plan.node(i).max_worker + 1) for i in range(3)]
    fixed = set(named.values())
    for r in ranges:
        assert not fixed & set(r)
    assert not set(ranges[0]) & set(ranges[1])
    with pytest.raises(ValueError, match="port base"):
        PortPlan(base=80)


@pytest.fixture
def listener() -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def test_port_in_use_is_named(listener: int) -> None:
    assert not port_is_free(listener)
    with pytest.raises(
        PortInUseError, match=rf"port {listener} \(Serve HTTP\) is in use; choose another with --http-port"
    ):
        PortPlan(base=20000, http=listener).check_free(nodes=1)  # below the ephemeral ports


@pytest.mark.parametrize(
    ("http", "what"), [(40001, "Ray dashboard"), (40205, "Ray worker ports 40200-40299")]
)
def test_http_port_inside_the_own_block_is_refused(http: int, what: str) -> None:
    with pytest.raises(ValueError, match=f"HTTP port {http} .*{what}"):
        PortPlan(base=40000, http=http).check_free(nodes=1)


def test_scoped_finder_ends_only_marked_processes(tmp_path: Path) -> None:
    env = {**os.environ, MARKER_ENV: "unit-test-cluster"}
    ours = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        found = {p.pid for p in cluster_processes(tmp_path / "no-such-ray-dir", "unit-test-cluster")}
        assert ours.pid in found
        assert other.pid not in found
        assert os.getpid() not in found
        assert end_processes([psutil.Process(ours.pid)], grace_s=5) == 1
        assert ours.wait(timeout=5) is not None
        assert other.poll() is None
    finally:
        for proc in (ours, other):
            proc.kill()
            proc.wait()


def test_cluster_state_round_trip(tmp_path: Path) -> None:
    cluster = LocalRayCluster(
        Path("/tmp/m3t-x"), PortPlan(42000, 42999), [NodeSpec(4, {"replica_slot": 1.0})]
    )
    again = LocalRayCluster.from_state(cluster.to_state())
    assert again == cluster
    assert cluster.service_discovery_file == Path("/tmp/m3t-x/prom_metrics_service_discovery.json")
    with pytest.raises(ValueError, match="too long"):
        LocalRayCluster(tmp_path / ("x" * 60), PortPlan(), [NodeSpec(2)])
    state = StackState(
        catalog_file=None,
        catalog_name="c",
        models=["a"],
        endpoint="http://127.0.0.1:1",
        ray_address="127.0.0.1:2",
        dashboard_url=None,
        apps=["m3bench"],
        started_cluster=True,
        cluster=cluster.to_state(),
    )
    state.save(tmp_path)
    assert StackState.load(tmp_path) == state
    StackState.remove(tmp_path)
    assert StackState.load(tmp_path) is None


def test_logical_cpus_cover_replicas_and_ingress() -> None:
    two = load_catalog(REPO / "deploy/models/embedded-cpu.yaml").select(
        ["tiny-llava-awq", "tiny-qwen2vl-awq"]
    )
    assert logical_cpus(two) >= 1 + 2 * 2 + 2  # ingress + (actor + engine bundle) per replica + slack
    assert logical_cpus(two) > (os.cpu_count() or 2) - 1


def _m3bench(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str) -> str:
    """Run ``m3bench ARGS`` in this process through its real entry point; the one ``error:`` line."""
    from m3bench.cli import main

    monkeypatch.setattr(sys, "argv", ["m3bench", *args])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code not in (0, None)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_cli_errors_are_one_line(
    tmp_path: Path, listener: int, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("M3BENCH_STATE_DIR", str(tmp_path))
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "name: b\nstream_batching_interval_ms: 0\nmodels:\n  - id: x\n    source: o/m\n", encoding="utf-8"
    )
    line = _m3bench(capsys, monkeypatch, "serve", "up", "--catalog", str(broken))
    assert "models.0.architecture: Field required" in line

    missing = tmp_path / "missing.yaml"
    missing.write_text(
        "name: m\nstream_batching_interval_ms: 0\nmodels:\n  - {id: g, source: ./nowhere/grace,"
        " architecture: LlavaForConditionalGeneration, quantization: awq}\n",
        encoding="utf-8",
    )
    line = _m3bench(capsys, monkeypatch, "serve", "up", "--catalog", str(missing))
    assert "model 'g': model directory" in line
    assert "nowhere/grace does not exist" in line

    catalog = str(REPO / "deploy/models/embedded-cpu.yaml")
    args = ("serve", "up", "--catalog", catalog, "--http-port", str(listener), "--port-base", "43000")
    line = _m3bench(capsys, monkeypatch, *args)
    assert f"port {listener} (Serve HTTP) is in use" in line
    assert StackState.load(tmp_path) is None  # nothing was left behind


def test_ray_sees_gpus_only_for_a_gpu_catalog() -> None:
    plan = PortPlan(42000, 42150)
    cpu_only = LocalRayCluster(Path("/tmp/m3t-g"), plan, [NodeSpec(4)])
    assert "--num-gpus=0" in cpu_only.start_command(0, cpu_only.nodes[0])
    gpu = LocalRayCluster(Path("/tmp/m3t-g"), plan, [NodeSpec(4, gpus=None)])
    assert not any(a.startswith("--num-gpus") for a in gpu.start_command(0, gpu.nodes[0]))
    restored = LocalRayCluster.from_state(gpu.to_state())
    assert restored.nodes[0].gpus is None
