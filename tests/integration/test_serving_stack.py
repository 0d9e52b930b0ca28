"""The real serving stack, driven through the CLI: `m3bench serve up --nodes 2` starts a Ray cluster
of its own (head and worker as separate `ray start` processes with their own logical CPUs and one
`replica_slot` each, own temp dir and ports), Ray Serve LLM hosts two tiny INT4 VLMs on vLLM's CPU
backend behind one OpenAI endpoint: tiny-llava-awq once, tiny-qwen2vl-awq twice (one replica per
node). One stack serves the whole module (engines take minutes to start on 2 cores); `serve down`
must leave no process behind. The replica-kill test runs last because it disturbs the stack."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from serving.stack import StackState
from serving.stack.cluster import LocalRayCluster
from serving.stack.health import replicas
from serving.stack.smoke import StreamResult, chat_body, image_data_url, stream_chat
from tests.support.load import m3bench as support_m3bench
from tests.support.ports import free_port_plan
from tests.support.stack import Up

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
CATALOG = REPO / "deploy/models/embedded-cpu-2node.yaml"
LLAVA, QWEN = "tiny-llava-awq", "tiny-qwen2vl-awq"
MODELS = [LLAVA, QWEN]
METRICS_INTERVAL = "RAY_metrics_report_interval_ms"  # Ray's own (lower-case) name; default 10 s
COUNTER = "ray_serve_deployment_request_counter_total"


def m3bench(*args: str, timeout_s: float = 900) -> subprocess.CompletedProcess[str]:
    return support_m3bench(*args, timeout_s=timeout_s, env={**os.environ, METRICS_INTERVAL: "1000"})


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    state_dir = tmp_path_factory.mktemp("serve-state")
    plan = free_port_plan(30000, 45000, nodes=2)
    base = plan.base
    up = [
        *("serve", "up", "--catalog", str(CATALOG), "--nodes", "2", "--cpus-per-node", "5"),
        *("--node-resources", json.dumps({"replica_slot": 1}), "--port-base", str(base)),
        *("--http-port", str(plan.http), "--state-dir", str(state_dir), "--timeout", "720"),
    ]
    state = None
    try:
        done = m3bench(*up)
        print(done.stderr[-4000:])
        state = StackState.load(state_dir)
        assert done.returncode == 0, done.stderr[-2000:]
        assert state is not None
        assert done.stdout.strip() == state.endpoint
        yield Up(state, state_dir)
    finally:
        stopped = m3bench("serve", "down", "--state-dir", str(state_dir), timeout_s=240)
        print(stopped.stderr[-1000:])
        if state is not None and state.cluster is not None:
            assert not LocalRayCluster.from_state(state.cluster).processes(), "serve down left processes"
        shutil.rmtree(f"/tmp/m3bench-ray-{base}", ignore_errors=True)


def request(model: str, max_tokens: int = 16) -> dict[str, Any]:
    body = chat_body(model, image_data_url(), max_tokens)
    body["ignore_eos"] = True  # a fixed number of tokens, whatever the random weights say
    return body


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_two_models_stream_image_and_text_at_once(stack: Up) -> None:
    results: dict[str, StreamResult] = {}

    def run(model: str) -> None:
        results[model] = stream_chat(stack.endpoint, request(model), timeout_s=180)

    threads = [threading.Thread(target=run, args=(m,)) for m in MODELS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for model in MODELS:
        result = results[model]
        assert result.ok, result.error
        assert result.usage is not None
        assert result.usage["completion_tokens"] == 16
        assert result.usage["prompt_tokens"] > 20  # the image's tokens are in the prompt
        assert result.chunks >= 2  # streamed, not one block
        served = {json.loads(e)["model"] for e in result.events if e != "[DONE]"}
        assert served == {model}  # routed by name
    assert {m["id"] for m in get_json(f"{stack.endpoint}/v1/models")["data"]} == set(MODELS)
    assert stream_chat(stack.endpoint, request("no-such-model")).status == 404


def test_info_route_and_cli_status(stack: Up) -> None:
    info = get_json(f"{stack.endpoint}/m3bench/info")
    assert info["stream_batching_interval_ms"] == 0
    assert [m["id"] for m in info["models"]] == MODELS
    for model in info["models"]:
        assert Path(model["engine_args"]["model"]).is_dir()
        assert model["engine_args"]["max_model_len"] == 2048
    assert info["versions"]["ray"] == "2.60.0"
    assert info["catalog_sha256"]
    assert json.loads((stack.state_dir / "serve-info.json").read_text()) == info
    done = m3bench("serve", "status", "--json", "--state-dir", str(stack.state_dir), timeout_s=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["healthy"] is True
    assert report["deployments"][f"m3bench/LLMServer:{QWEN}"] == "2/2 replicas running on 2 node(s)"
    assert report["deployments"][f"m3bench/LLMServer:{LLAVA}"].startswith("1/1 replicas running")


def test_replicas_on_both_nodes_serve_requests(stack: Up) -> None:
    import ray

    ray.init(address=stack.state.ray_address, logging_level="ERROR", log_to_driver=False)
    try:
        alive = [n for n in ray.nodes() if n["Alive"]]
    finally:
        ray.shutdown()
    assert len(alive) == 2
    assert all(n["Resources"].get("replica_slot") == 1.0 for n in alive)
    servers = [r for r in replicas(stack.dashboard) if r.deployment == f"LLMServer:{QWEN}"]
    assert [r.state for r in servers] == ["RUNNING", "RUNNING"]
    assert {r.node_id for r in servers} == {n["NodeID"] for n in alive}  # one replica on each node
    results: list[StreamResult] = []

    def client() -> None:
        for _ in range(3):
            results.append(stream_chat(stack.endpoint, request(QWEN, max_tokens=8), timeout_s=180))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 12
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    by_replica = requests_by_replica(stack.cluster, QWEN)
    assert len([n for n in by_replica.values() if n > 0]) == 2, by_replica  # both replicas served


def requests_by_replica(cluster: LocalRayCluster, model: str) -> dict[str, float]:
    """Ray Serve's per-replica request counters, read from every node's metrics exporter."""
    counts: dict[str, float] = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        counts = {}
        for port in cluster.metrics_ports:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
                text = reply.read().decode()
            for line in text.splitlines():
                if line.startswith(COUNTER + "{") and f'deployment="LLMServer:{model}"' in line:
                    replica = line.split('replica="', 1)[1].split('"', 1)[0]
                    counts[replica] = counts.get(replica, 0.0) + float(line.rsplit(" ", 1)[1])
        if len([n for n in counts.values() if n > 0]) >= 2:
            break
        time.sleep(2)
    return counts


def total(client: Any, metric: str) -> float:
    return sum(float(s["value"][1]) for s in client.query(f"sum({metric})"))


def test_ray_metrics_reach_prometheus(stack: Up, tmp_path: Path) -> None:
    from observability.prometheus import PrometheusConfig, PrometheusServer, free_port

    assert stack.cluster.service_discovery_file.exists()
    ttft = "ray_vllm_time_to_first_token_seconds_count"
    served = "ray_serve_num_http_requests_total"
    config = PrometheusConfig(ray_temp_dir=stack.cluster.temp_dir)
    with PrometheusServer(config, tmp_path / "prometheus", free_port()) as prom:
        prom.client.wait_for(ttft, timeout_s=90)  # the warm-up requests of `serve up`
        prom.client.wait_for(served, timeout_s=90)
        before = {m: total(prom.client, m) for m in (ttft, served)}
        for model in MODELS:
            for _ in range(2):
                assert stream_chat(stack.endpoint, request(model, max_tokens=4)).ok
        after = before
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            after = {m: total(prom.client, m) for m in (ttft, served)}
            if after[ttft] >= before[ttft] + 4 and after[served] >= before[served] + 4:
                break
            time.sleep(2)
        assert after[ttft] >= before[ttft] + 4, (before, after)
        assert after[served] >= before[served] + 4, (before, after)
        assert set(MODELS) <= {s["metric"]["model_name"] for s in prom.client.query(ttft)}
        scraped = {t["labels"]["instance"] for t in prom.client.targets() if t["labels"]["job"] == "ray"}
        assert len(scraped) >= 2  # both nodes' exporters, found through Ray's service-discovery file


def test_killed_replica_restarts_and_nothing_hangs(stack: Up) -> None:
    (victim,) = [r for r in replicas(stack.dashboard) if r.deployment == f"LLMServer:{LLAVA}"]
    assert victim.pid is not None
    records: list[tuple[float, float, StreamResult]] = []
    stop = threading.Event()
    timeout_s = 300.0

    def client() -> None:
        while not stop.is_set():
            sent = time.monotonic()
            result = stream_chat(stack.endpoint, request(LLAVA, max_tokens=48), timeout_s=timeout_s)
            records.append((sent, time.monotonic(), result))
            if not result.ok:
                time.sleep(0.5)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(6)  # steady load
    killed_at = time.monotonic()
    os.kill(victim.pid, signal.SIGKILL)
    during = stream_chat(stack.endpoint, request(QWEN, max_tokens=8), timeout_s=120)
    recovered_at = None
    while time.monotonic() < killed_at + 480:
        if len([r for sent, _, r in records if sent > killed_at + 1 and r.ok]) >= 3:
            recovered_at = time.monotonic()
            break
        time.sleep(2)
    stop.set()
    for thread in threads:
        thread.join(timeout=timeout_s + 10)
    assert not any(t.is_alive() for t in threads), "a client hung"
    assert recovered_at is not None, "no request succeeded after the replica restarted"
    in_flight = [r for sent, ended, r in records if sent < killed_at < ended]
    assert in_flight, "no request was in flight at the kill"
    assert all(not r.ok for r in in_flight)  # client-side errors (cut streams), not silent successes
    assert all(r.e2e_s < timeout_s for _, _, r in records)  # ended by the server, not by client timeouts
    assert during.ok, during.error  # the other model kept serving meanwhile
    (restarted,) = [r for r in replicas(stack.dashboard) if r.deployment == f"LLMServer:{LLAVA}"]
    assert restarted.pid != victim.pid
    assert restarted.state == "RUNNING"
    outcomes = sorted({(r.status, (r.error or "")[:40]) for r in in_flight})
    print(
        f"kill -> 3 successes after {recovered_at - killed_at:.0f} s; {len(in_flight)} in flight: {outcomes}"
    )


def _haproxy_processes(temp_dir: str) -> list[int]:
    import psutil

    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        command = " ".join(process.info["cmdline"] or [])
        if (process.info["name"] or "").startswith("haproxy") and temp_dir + "/" in command:
            found.append(process.pid)
    return found


def test_haproxy_direct_streaming_stack(tmp_path: Path) -> None:
    """Ray's high-throughput mode on its own one-node stack (after the shared one is down): two models,
    each its own direct-streaming application under /<id>; HAProxy (started by Ray, sized and placed by
    m3bench) answers on the Serve port, exports metrics on the plan's port, is listed for Prometheus,
    and `serve down` ends it."""
    from observability.prometheus import HAPROXY_SD_FILE
    from serving.mode import fd_limit, haproxy_maxconn

    catalog = tmp_path / "haproxy.yaml"
    data = yaml.safe_load(CATALOG.read_text())
    data.update(name="haproxy-direct", ingress="haproxy", direct_streaming=True)
    for entry in data["models"]:
        entry.update(replicas=1, placement=None)
    catalog.write_text(yaml.safe_dump(data))
    state_dir = tmp_path / "state"
    plan = free_port_plan(30000, 45000)
    up = [
        *("serve", "up", "--catalog", str(catalog), "--port-base", str(plan.base)),
        *("--http-port", str(plan.http), "--state-dir", str(state_dir), "--timeout", "720"),
    ]
    temp_dir = f"/tmp/m3bench-ray-{plan.base}"
    try:
        done = m3bench(*up)
        print(done.stderr[-3000:])
        assert done.returncode == 0, done.stderr[-2000:]
        assert "serving mode: haproxy+direct-streaming" in done.stderr
        state = StackState.load(state_dir)
        assert state is not None
        assert state.model_endpoints == {m: f"{state.endpoint}/{m}" for m in MODELS}
        for model, url in state.model_endpoints.items():
            assert [m["id"] for m in get_json(f"{url}/v1/models")["data"]] == [model]
            result = stream_chat(url, request(model, max_tokens=8), timeout_s=180)
            assert result.ok, result.error
            assert result.usage is not None
            assert result.usage["completion_tokens"] == 8
        info = get_json(f"{state.endpoint}/m3bench/info")
        assert info["serving_mode"]["label"] == "haproxy+direct-streaming"
        maxconn = str(haproxy_maxconn(fd_limit()))  # serve up ran with this process's limit
        assert info["serving_mode"]["env"]["RAY_SERVE_HAPROXY_MAXCONN"] == maxconn
        pids = _haproxy_processes(temp_dir)
        assert pids, "no HAProxy of this stack"
        with urllib.request.urlopen(f"http://127.0.0.1:{plan.haproxy_metrics}/metrics", timeout=10) as r:
            metrics = r.read().decode()
        assert "haproxy_backend_http_requests_total" in metrics
        targets = json.loads((Path(temp_dir) / HAPROXY_SD_FILE).read_text())
        assert targets[0]["targets"] == [f"127.0.0.1:{plan.haproxy_metrics}"]
    finally:
        stopped = m3bench("serve", "down", "--state-dir", str(state_dir), timeout_s=240)
        print(stopped.stderr[-1000:])
        left = _haproxy_processes(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert not left, f"serve down left HAProxy {left}"
