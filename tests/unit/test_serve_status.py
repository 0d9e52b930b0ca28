"""`serve status` tells the truth per model (issue 21): replicas running and wanted, restarting or down,
nodes of running replicas only. Ray's dashboard REST API and the endpoint are stood in for by a local
HTTP server answering with the documents Ray 2.60 returns (shapes from ray.serve.schema); the real
stack is in tests/integration/test_failures_serving.py."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from serving.app import INFO_PATH
from serving.stack.health import health, model_replicas
from serving.stack.state import StackState

LLAVA = "tiny-llava-awq"


def _details(replicas: list[dict[str, Any]], status: str = "HEALTHY", wanted: int = 1) -> dict[str, Any]:
    return {
        "applications": {
            "m3bench": {
                "deployments": {
                    "OpenAiIngress": {"status": "HEALTHY", "target_num_replicas": 1, "replicas": []},
                    f"LLMServer:{LLAVA}": {
                        "status": status,
                        "target_num_replicas": wanted,
                        "replicas": replicas,
                    },
                }
            },
            "m3bench-info": {"deployments": {"M3benchInfo": {"status": "HEALTHY", "replicas": []}}},
        }
    }


def test_an_engine_restart_is_down_not_healthy_and_counts_no_phantom_node() -> None:
    details = _details(
        [
            {"replica_id": "old", "state": "STOPPING", "node_id": "node-a", "pid": 11},
            {"replica_id": "new", "state": "STARTING", "node_id": None, "pid": None},
        ],
        status="UNHEALTHY",
    )
    seen = model_replicas(details, [LLAVA])[LLAVA]
    assert (seen.running, seen.wanted, seen.nodes) == (0, 1, 0)
    assert seen.condition == "DOWN (no replica running)"
    assert (
        seen.line() == "0/1 replicas running on 0 node(s) (1 starting, 1 stopping); DOWN (no replica running)"
    )


def test_running_replicas_count_their_distinct_nodes() -> None:
    details = _details(
        [
            {"replica_id": "a", "state": "RUNNING", "node_id": "node-a"},
            {"replica_id": "b", "state": "RUNNING", "node_id": "node-a"},
        ],
        wanted=2,
    )
    seen = model_replicas(details, [LLAVA, "absent"])
    assert seen[LLAVA].line() == "2/2 replicas running on 1 node(s)"
    assert seen[LLAVA].condition == "ok"
    assert seen["absent"].condition == "not deployed"
    restarting = model_replicas(
        _details(
            [
                {"replica_id": "a", "state": "RUNNING", "node_id": "node-a"},
                {"replica_id": "b", "state": "STARTING", "node_id": None},
            ],
            status="UPDATING",
            wanted=2,
        ),
        [LLAVA],
    )[LLAVA]
    assert restarting.line() == "1/2 replicas running on 1 node(s) (1 starting); restarting"


@pytest.fixture
def fake_ray() -> Iterator[tuple[str, dict[str, Any]]]:
    documents: dict[str, Any] = {
        "/v1/models": {"data": [{"id": LLAVA}]},
        INFO_PATH: {"models": [LLAVA]},
        "/api/v0/nodes?limit=1000": {
            "data": {"result": {"result": [{"node_id": "node-a", "state": "ALIVE"}]}}
        },
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(documents.get(self.path, {})).encode()
            self.send_response(200 if self.path in documents else 404)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", documents
    finally:
        server.shutdown()
        server.server_close()


def _state(url: str) -> StackState:
    return StackState(
        catalog_file=None,
        catalog_name="c",
        models=[LLAVA],
        endpoint=url,
        ray_address="127.0.0.1:1",
        dashboard_url=url,
        apps=["m3bench"],
        started_cluster=False,
        ready=True,
    )


def test_health_is_false_while_the_endpoint_still_lists_a_model_without_replicas(
    fake_ray: tuple[str, dict[str, Any]],
) -> None:
    url, documents = fake_ray
    documents["/api/serve/applications/"] = _details(
        [{"replica_id": "a", "state": "RUNNING", "node_id": "node-a"}]
    )
    report = health(_state(url))
    assert report["healthy"] is True, report.get("problem")
    assert report["nodes_alive"] == 1
    documents["/api/serve/applications/"] = _details(
        [{"replica_id": "b", "state": "STARTING", "node_id": None}], status="UNHEALTHY"
    )
    report = health(_state(url))
    assert report["healthy"] is False
    assert report["problem"] == f"no replica running for {LLAVA}"
    assert report["replicas"][LLAVA]["condition"] == "DOWN (no replica running)"
    assert report["deployments"][f"m3bench/LLMServer:{LLAVA}"].startswith("0/1 replicas running on 0 node(s)")
