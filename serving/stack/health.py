"""What a running stack looks like from outside: its endpoint's answers and, through the Ray
dashboard's REST API, every Serve replica with its state, node and process id. ``health`` reports per
model the replicas running and wanted and whether any is restarting; a model with none running makes
the stack unhealthy (``serve status`` exits 1), whatever the endpoint's model list says."""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
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


RESTARTING = ("STARTING", "UPDATING", "RECOVERING", "STOPPING", "PENDING_MIGRATION")


@dataclass(frozen=True)
class ModelReplicas:
    """One served model as Ray Serve sees it: replicas running and wanted, and what the rest do."""

    model: str
    deployment: str | None  # "<app>/<deployment>", None when Serve has no deployment for it
    running: int
    wanted: int | None
    states: dict[str, int]
    status: str | None  # the deployment's status (HEALTHY, UNHEALTHY, UPDATING, ...)
    nodes: int  # distinct nodes of the running replicas

    @property
    def condition(self) -> str:
        if self.deployment is None:
            return "not deployed"
        if self.running == 0:
            return "DOWN (no replica running)"
        if self.status == "UNHEALTHY":
            return "unhealthy"
        if any(self.states.get(state) for state in RESTARTING) or self.status in ("UPDATING", "UPSCALING"):
            return "restarting"
        if self.wanted is not None and self.running < self.wanted:
            return "degraded"
        return "ok"

    def line(self) -> str:
        wanted = "?" if self.wanted is None else str(self.wanted)
        others = ", ".join(f"{n} {s.lower()}" for s, n in sorted(self.states.items()) if s != "RUNNING" and n)
        return (
            f"{self.running}/{wanted} replicas running on {self.nodes} node(s)"
            + (f" ({others})" if others else "")
            + (f"; {self.condition}" if self.condition != "ok" else "")
        )


def model_replicas(details: dict[str, Any], models: list[str]) -> dict[str, ModelReplicas]:
    """Per served model, from Ray's Serve details: its deployment is ``LLMServer:<model>`` (or any
    deployment named ``...:<model>``) in any application."""
    found: dict[str, ModelReplicas] = {}
    deployments = [
        (f"{app_name}/{name}", name, deployment)
        for app_name, app in (details.get("applications") or {}).items()
        for name, deployment in (app.get("deployments") or {}).items()
    ]
    for model in models:
        match = [d for d in deployments if d[1] == f"LLMServer:{model}"] or [
            d for d in deployments if d[1].endswith(f":{model}")
        ]
        if not match:
            found[model] = ModelReplicas(model, None, 0, None, {}, None, 0)
            continue
        full, _, deployment = match[0]
        states: dict[str, int] = {}
        nodes: set[str] = set()
        for replica in deployment.get("replicas") or []:
            state = str(replica.get("state"))
            states[state] = states.get(state, 0) + 1
            if state == "RUNNING" and replica.get("node_id"):
                nodes.add(str(replica["node_id"]))
        wanted = deployment.get("target_num_replicas")
        found[model] = ModelReplicas(
            model,
            full,
            states.get("RUNNING", 0),
            int(wanted) if isinstance(wanted, int) else None,
            states,
            str(deployment.get("status")) if deployment.get("status") else None,
            len(nodes),
        )
    return found


def alive_nodes(dashboard_url: str, timeout_s: float = 10.0) -> int:
    """Ray nodes in state ALIVE (the state API's node list)."""
    data = _get_json(f"{dashboard_url}/api/v0/nodes?limit=1000", timeout_s)
    rows = data.get("data", {}).get("result", {}).get("result", [])
    return sum(1 for row in rows if row.get("state") == "ALIVE")


def health(state: StackState, timeout_s: float = 5.0) -> dict[str, Any]:
    """Endpoint, cluster, and per model its replicas running and wanted. ``healthy`` only when the
    endpoint lists every model and every model has at least one replica running."""
    report: dict[str, Any] = {
        "endpoint": state.endpoint,
        "catalog": state.catalog_file or state.catalog_name,
        "models": state.models,
        "ray_address": state.ray_address,
        "dashboard": state.dashboard_url,
        "cluster": "existing (not started by m3bench)",
        "healthy": False,
        "deployments": {},
        "replicas": {},
    }
    problems: list[str] = []
    if state.started_cluster and state.cluster is not None:
        cluster = LocalRayCluster.from_state(state.cluster)
        count = len(cluster.processes())
        nodes = len(state.cluster["nodes"])
        report["cluster"] = f"local, {nodes} node(s), {count} processes" if count else "local, NOT RUNNING"
    endpoint_ok = False
    try:
        listed: set[str] = set()  # direct streaming: each model may have its own base URL
        for url in sorted(set(state.model_endpoints.values()) or {state.endpoint}):
            listed |= {m["id"] for m in _get_json(f"{url}/v1/models", timeout_s)["data"]}
        _get_json(f"{state.endpoint}{INFO_PATH}", timeout_s)
        missing = sorted(set(state.models) - listed)
        endpoint_ok = not missing and state.ready
        if missing:
            problems.append(f"/v1/models lacks {missing}")
        elif not state.ready:
            problems.append("`serve up` has not finished (or failed before readiness)")
    except (urllib.error.URLError, OSError, ValueError, KeyError) as e:
        problems.append(f"{state.endpoint} does not answer: {e}")
    replicas_ok = False
    if state.dashboard_url:
        try:
            details = serve_details(state.dashboard_url, timeout_s)
            per_model = model_replicas(details, state.models)
            for model, seen in per_model.items():
                report["replicas"][model] = {**asdict(seen), "condition": seen.condition}
                if seen.deployment is not None:
                    report["deployments"][seen.deployment] = seen.line()
            down = sorted(model for model, seen in per_model.items() if seen.running == 0)
            if down:
                problems.append(f"no replica running for {', '.join(down)}")
            replicas_ok = not down
            with contextlib.suppress(urllib.error.URLError, OSError, ValueError, KeyError, AttributeError):
                alive = alive_nodes(state.dashboard_url, timeout_s)
                report["nodes_alive"] = alive
                if state.started_cluster and state.cluster is not None:
                    nodes = len(state.cluster["nodes"])
                    report["cluster"] += f", {alive}/{nodes} node(s) alive"
        except (urllib.error.URLError, OSError, ValueError, KeyError) as e:
            problems.append(f"Ray dashboard does not answer: {e}")
    else:
        replicas_ok = endpoint_ok  # no dashboard to ask (an existing cluster): the endpoint must do
    report["healthy"] = endpoint_ok and replicas_ok
    if problems:
        report["problem"] = "; ".join(problems)
    return report
