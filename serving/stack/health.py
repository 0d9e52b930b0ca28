"""What a running stack looks like from outside: its endpoint's answers and, through the Ray
dashboard's REST API, every Serve replica with its state, node and process id."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from serving.app import INFO_PATH
from serving.stack.cluster import LocalRayCluster
from serving.stack.state import StackState


@dataclass(frozen=True)
class Replica:
    app: str
    deployment: str
    replica_id: str
    state: str
    node_id: str
    pid: int | None


def _get_json(url: str, timeout_s: float) -> Any:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - local services
        return json.loads(response.read())


def serve_details(dashboard_url: str, timeout_s: float = 10.0) -> dict[str, Any]:
    """Ray's own view of Serve (``GET /api/serve/applications/``)."""
    data: dict[str, Any] = _get_json(f"{dashboard_url}/api/serve/applications/", timeout_s)
    return data


def replicas(dashboard_url: str, timeout_s: float = 10.0) -> list[Replica]:
    found = []
    for app_name, app in (serve_details(dashboard_url, timeout_s).get("applications") or {}).items():
        for deployment_name, deployment in (app.get("deployments") or {}).items():
            for r in deployment.get("replicas") or []:
                found.append(
                    Replica(
                        app_name,
                        deployment_name,
                        r["replica_id"],
                        r["state"],
                        r.get("node_id") or "",
                        r.get("pid"),
                    )
                )
    return found


def health(state: StackState, timeout_s: float = 5.0) -> dict[str, Any]:
    """Endpoint, cluster and per-deployment replica counts; ``healthy`` when every model answers."""
    report: dict[str, Any] = {
        "endpoint": state.endpoint,
        "catalog": state.catalog_file or state.catalog_name,
        "models": state.models,
        "ray_address": state.ray_address,
        "dashboard": state.dashboard_url,
        "cluster": "existing (not started by m3bench)",
        "healthy": False,
        "deployments": {},
    }
    if state.started_cluster and state.cluster is not None:
        cluster = LocalRayCluster.from_state(state.cluster)
        count = len(cluster.processes())
        nodes = len(state.cluster["nodes"])
        report["cluster"] = f"local, {nodes} node(s), {count} processes" if count else "local, NOT RUNNING"
    try:
        listed = {m["id"] for m in _get_json(f"{state.endpoint}/v1/models", timeout_s)["data"]}
        _get_json(f"{state.endpoint}{INFO_PATH}", timeout_s)
        missing = sorted(set(state.models) - listed)
        report["healthy"] = not missing and state.ready
        if missing:
            report["problem"] = f"/v1/models lacks {missing}"
        elif not state.ready:
            report["problem"] = "`serve up` has not finished (or failed before readiness)"
    except (urllib.error.URLError, OSError, ValueError, KeyError) as e:
        report["problem"] = f"{state.endpoint} does not answer: {e}"
    if state.dashboard_url:
        try:
            by_deployment: dict[str, list[Replica]] = {}
            for replica in replicas(state.dashboard_url, timeout_s):
                by_deployment.setdefault(f"{replica.app}/{replica.deployment}", []).append(replica)
            for name, group in by_deployment.items():
                running = sum(r.state == "RUNNING" for r in group)
                nodes = len({r.node_id for r in group})
                report["deployments"][name] = f"{running}/{len(group)} replicas running on {nodes} node(s)"
        except (urllib.error.URLError, OSError, ValueError, KeyError) as e:
            report.setdefault("problem", f"Ray dashboard does not answer: {e}")
    return report
