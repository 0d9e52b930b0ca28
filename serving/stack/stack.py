"""``ServeStack``: everything one catalog needs, up and down. Starts a local Ray cluster (or uses an
existing one), deploys the catalog's applications, waits until every replica answers, and records the
state so ``status`` and ``down`` work from another process. ``down`` stops only what ``up`` started.

    with ServeStack(Path("deploy/models/embedded-cpu.yaml"), only=["tiny-llava-awq"]) as stack:
        ...  # stack.endpoint serves /v1/chat/completions and /m3bench/info
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from benchmark.checkout import git_sha
from serving.app import (
    INFO_APP_NAME,
    INFO_PATH,
    INFO_ROUTE_PREFIX,
    ResolvedModel,
    build_info_app,
    build_llm_app,
    engine_arguments,
    llm_apps,
    model_endpoints,
    resolve_models,
    server_info,
)
from serving.catalog import Catalog, CatalogError, load_catalog
from serving.mode import ModeError, apply_to_process, local_env, mode_env, socket_dir
from serving.stack.cluster import LocalRayCluster, NodeSpec
from serving.stack.ports import PortPlan
from serving.stack.shm import remember, remove_orphans
from serving.stack.smoke import chat_body, image_data_url, stream_chat
from serving.stack.state import StackState, default_state_dir, write_info

Progress = Callable[[str], None]
POLL_S = 2.0
STILL_S = 30.0  # while nothing changes, `serve up` still says where it stands this often
# A Prometheus file_sd list of HAProxy's exporter beside Ray's own list in the cluster's temp dir
# (observability.prometheus scrapes both; the name is repeated there, which imports nothing of this).
HAPROXY_SD_FILE = "m3bench_haproxy_sd.json"


class ServeError(RuntimeError):
    """The stack could not come up or be reached; the message is one line that says what to do."""


@dataclass
class StackConfig:
    address: str | None = None  # an existing Ray cluster; None starts a local one
    ports: PortPlan = field(default_factory=PortPlan)
    nodes: int = 1  # nodes of the local cluster, head included
    cpus_per_node: int | None = None  # logical CPUs per node; None: enough for the catalog
    node_resources: dict[str, float] = field(default_factory=dict)  # given to every local node
    temp_dir: Path | None = None
    state_dir: Path | None = None
    ready_timeout_s: float = 900.0
    env: dict[str, str] = field(default_factory=dict)  # every local-cluster process (RAY_SERVE_*, ...)


def logical_cpus(catalog: Catalog) -> int:
    """Logical CPUs a one-node cluster needs: the ingress, and per replica its actor plus one per
    engine worker bundle. Ray schedules by these, so a 2-core machine gets more than it has."""
    need = 1.0
    for entry in catalog.models:
        per_worker = entry.placement.bundle.get("CPU", 1.0) if entry.placement else 1.0
        need += entry.fixed_replicas * (1 + entry.tensor_parallel_size * per_worker)
    return max(os.cpu_count() or 2, math.ceil(need) + 2)


class ServeStack:
    def __init__(
        self,
        catalog: Catalog | Path,
        *,
        only: list[str] | None = None,
        config: StackConfig | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.catalog_file = catalog.resolve() if isinstance(catalog, Path) else None
        loaded = load_catalog(catalog) if isinstance(catalog, Path) else catalog
        self.catalog = loaded.select(only)
        self.config = config or StackConfig()
        self.state_dir = self.config.state_dir or default_state_dir()
        self.say: Progress = progress or (lambda _m: None)
        self.state: StackState | None = None
        self.info: dict[str, Any] = {}
        self.mode_env: dict[str, str] = {}

    @property
    def endpoint(self) -> str:
        if self.state is None:
            raise ServeError("the stack is not up")
        return self.state.endpoint

    def endpoint_for(self, model: str) -> str:
        """The OpenAI base URL of ``model``: the endpoint, or ``<endpoint>/<id>`` when direct streaming
        gives each of several models its own application."""
        if self.state is None:
            raise ServeError("the stack is not up")
        return self.state.model_endpoints.get(model, self.state.endpoint)

    def __enter__(self) -> ServeStack:
        self.up()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.down()

    def up(self) -> StackState:
        """Bring everything up; on any failure (Ctrl-C included) stop what was started and raise."""
        previous = StackState.load(self.state_dir)
        if previous is not None and stack_alive(previous):
            raise ServeError(
                f"a stack is already up at {previous.endpoint} (state in {self.state_dir}); "
                "run `m3bench serve down` first or pass another --state-dir"
            )
        StackState.remove(self.state_dir)
        if self.config.address is None:  # fail before the slow steps (building models, starting Ray)
            self.config.ports.check_free(self.config.nodes)
        base_dir = self.catalog_file.parent if self.catalog_file else None
        self.say(f"checking catalog {self.catalog.name!r} ({len(self.catalog.models)} models)")
        resolve_models(self.catalog, base_dir, build=False)  # a wrong source fails before the mode
        self._apply_mode()
        models = resolve_models(self.catalog, base_dir, build=True)
        try:
            self._start_cluster()
            self._deploy(models)
        except BaseException:
            self.down()
            raise
        assert self.state is not None
        return self.state

    @property
    def temp_dir(self) -> Path:
        return self.config.temp_dir or Path(f"/tmp/m3bench-ray-{self.config.ports.base}")  # noqa: S108 - short: sockets

    def _apply_mode(self) -> None:
        """The catalog's serving mode as Ray's variables, for ``ray start`` (a local cluster) and for
        this process, which builds the application. ``--env`` overrides them."""
        cfg = self.config
        try:
            if cfg.address is None:
                haproxy_dir = self.temp_dir / "haproxy"
                sockets = socket_dir(cfg.ports.base)
                env = local_env(self.catalog, haproxy_dir, sockets, cfg.ports.haproxy_env())
                if self.catalog.ingress == "haproxy":
                    haproxy_dir.mkdir(parents=True, exist_ok=True)
                    sockets.mkdir(parents=True, exist_ok=True)
            else:  # the cluster's own `ray start` must carry them too: `m3bench serve env` prints them
                env = mode_env(self.catalog, maxconn=None)
            self.mode_env = {**env, **cfg.env}
            apply_to_process(self.mode_env)
        except ModeError as e:
            raise ServeError(str(e)) from None
        self.say(f"serving mode: {self.catalog.serving_mode}")

    def _start_cluster(self) -> None:
        cfg = self.config
        cluster = None
        if cfg.address is None:
            cpus = cfg.cpus_per_node or logical_cpus(self.catalog)
            # A CPU-only catalog hides GPUs from Ray (vLLM-CPU must not see one); else Ray detects them.
            gpus = 0 if all(m.accelerator == "cpu" for m in self.catalog.models) else None
            nodes = [NodeSpec(cpus, dict(cfg.node_resources), gpus) for _ in range(cfg.nodes)]
            cluster = LocalRayCluster(self.temp_dir, cfg.ports, nodes, env=dict(self.mode_env))
            self.state = self._new_state(cluster.address, cluster.dashboard_url, cluster)
            self.state.save(self.state_dir)  # before starting: an interrupted start can still be stopped
            cluster.start(self.say)
            self._write_haproxy_targets()
        else:
            self.state = self._new_state(cfg.address, None, None)
            self.state.save(self.state_dir)

    def _new_state(self, address: str, dashboard: str | None, cluster: LocalRayCluster | None) -> StackState:
        return StackState(
            catalog_file=str(self.catalog_file) if self.catalog_file else None,
            catalog_name=self.catalog.name,
            models=[m.id for m in self.catalog.models],
            endpoint=f"http://127.0.0.1:{self.config.ports.http}",
            ray_address=address,
            dashboard_url=dashboard,
            apps=[],
            started_cluster=cluster is not None,
            cluster=cluster.to_state() if cluster else None,
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )

    def _deploy(self, models: list[ResolvedModel]) -> None:
        import ray
        from ray import serve

        state = self.state
        assert state is not None
        engine_args: dict[str, dict[str, Any]] = {}
        for model in models:
            try:
                engine_args[model.entry.id] = engine_arguments(self.catalog, model)
            except ValueError as e:
                raise CatalogError(f"model {model.entry.id!r}: {str(e).splitlines()[0]}") from None
        ray.init(address=state.ray_address, logging_level=logging.ERROR, log_to_driver=False)
        for name in ("ray.serve", "ray.llm"):  # their INFO lines (deployment options) would drown progress
            logging.getLogger(name).setLevel(logging.WARNING)
        try:
            if state.started_cluster:  # an autoscaling cluster (--address) may add the node later
                check_accelerators(self.catalog, ray.cluster_resources())  # type: ignore[no-untyped-call]
            serve.start(
                http_options={"host": "127.0.0.1", "port": self.config.ports.http}, proxy_location="HeadOnly"
            )
            state.endpoint = _actual_endpoint(state.endpoint)
            apps = llm_apps(self.catalog)
            state.model_endpoints = model_endpoints(self.catalog, state.endpoint)
            taken = {a.name for a in apps} | {INFO_APP_NAME}
            taken &= set(serve.status().applications)
            if taken and not state.started_cluster:
                raise ServeError(
                    f"application {sorted(taken)[0]!r} already runs on {state.ray_address}; not touching it"
                )
            self.info = server_info(
                self.catalog,
                models,
                catalog_file=self.catalog_file,
                endpoint=state.endpoint,
                ray_address=state.ray_address,
                engine_args=engine_args,
                git_sha=git_sha(),
                mode_env=self.mode_env,
                haproxy_metrics=self._haproxy_metrics_url(),
            )
            write_info(self.state_dir, self.info)
            self.say(f"deploying {', '.join(state.models)} ({self.catalog.serving_mode})")
            state.apps = [a.name for a in apps] + [INFO_APP_NAME]
            state.save(self.state_dir)
            by_id = {m.entry.id: m for m in models}
            targets = [
                serve.RunTarget(
                    build_llm_app(self.catalog, [by_id[i] for i in a.model_ids]),
                    name=a.name,
                    route_prefix=a.route_prefix,
                )
                for a in apps
            ]
            targets.append(
                serve.RunTarget(build_info_app(self.info), name=INFO_APP_NAME, route_prefix=INFO_ROUTE_PREFIX)
            )
            serve.run_many(
                targets, wait_for_ingress_deployment_creation=False, wait_for_applications_running=False
            )
            self._wait_ready(state.apps)
        finally:
            ray.shutdown()
        check_endpoint(state.endpoint, state.models, state.model_endpoints)
        self._warm_up(state.model_endpoints)
        state.ready = True
        state.save(self.state_dir)
        if state.started_cluster and state.cluster is not None:  # the engines' /dev/shm segments
            remember(self.state_dir, [p.pid for p in LocalRayCluster.from_state(state.cluster).processes()])
        served = ", ".join(f"{m} at {url}/v1" for m, url in state.model_endpoints.items())
        self.say(f"ready: {served}; info at {state.endpoint}{INFO_PATH}")

    def _write_haproxy_targets(self) -> None:
        """HAProxy's exporter as a file_sd list (empty without HAProxy), for Prometheus."""
        targets = []
        if self.catalog.ingress == "haproxy":
            port = self.config.ports.haproxy_metrics
            targets = [{"targets": [f"127.0.0.1:{port}"], "labels": {"component": "haproxy"}}]
        path = self.temp_dir / HAPROXY_SD_FILE
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text(json.dumps(targets) + "\n", encoding="utf-8")
        temporary.replace(path)

    def _haproxy_metrics_url(self) -> str | None:
        if self.catalog.ingress != "haproxy" or self.config.address is not None:
            return None
        return f"http://127.0.0.1:{self.config.ports.haproxy_metrics}/metrics"

    def _warm_up(self, endpoints: dict[str, str]) -> None:
        """One image + text streaming request per model: proves the path end to end and takes the
        engine's first-request costs (processor and kernel warm-up) out of any measurement."""
        image = image_data_url()
        for model, endpoint in endpoints.items():
            result = stream_chat(endpoint, chat_body(model, image, max_tokens=8), timeout_s=300)
            if not result.ok:
                raise ServeError(f"model {model!r} does not answer an image chat request: {result.error}")
            self.say(f"warm-up {model}: first token after {result.ttft_s or 0:.2f} s")

    def _wait_ready(self, names: list[str]) -> None:
        from ray import serve

        start = time.monotonic()
        last, said = "", 0.0
        while True:
            apps = serve.status().applications
            parts, running = [], True
            for name in names:
                app = apps.get(name)
                if app is None:
                    parts.append(f"{name}: submitted")
                    running = False
                    continue
                if str(app.status.value) in ("DEPLOY_FAILED", "UNHEALTHY"):
                    raise ServeError(f"{name} failed to deploy: {_short(app.message, app.deployments)}")
                running = running and str(app.status.value) == "RUNNING"
                for deployment, overview in app.deployments.items():
                    counts = {
                        str(getattr(k, "value", k)): n for k, n in (overview.replica_states or {}).items()
                    }
                    parts.append(f"{deployment} {counts.get('RUNNING', 0)}/{sum(counts.values())} running")
            if running:
                return
            text = "; ".join(parts)
            elapsed = time.monotonic() - start
            if text != last or elapsed - said >= STILL_S:
                # unchanged for a while: say why, in Ray's words (e.g. a replica no node can place)
                why = "" if text != last else _waiting_reason(apps, names)
                self.say(f"[{elapsed:4.0f} s] {text}{f' ({why})' if why else ''}")
                last, said = text, elapsed
            if elapsed > self.config.ready_timeout_s:
                raise ServeError(
                    f"not ready after {elapsed:.0f} s ({text}); see the Ray logs or raise --timeout"
                )
            time.sleep(POLL_S)

    def down(self) -> None:
        state = self.state or StackState.load(self.state_dir)
        if state is not None:
            stop_stack(state, self.state_dir, self.say)
        self.state = None


def check_accelerators(catalog: Catalog, resources: dict[str, float]) -> None:
    """Every GPU model's ``accelerator`` is a type some node of the cluster has: Ray places a replica only
    on a node with ``accelerator_type:<type>``, and otherwise waits for one for ever (an H200 catalog on an
    H100 machine sat at 0/1 running for 6 minutes)."""
    present = sorted(k.split(":", 1)[1] for k in resources if k.startswith("accelerator_type:"))
    for model in catalog.models:
        if model.accelerator != "cpu" and f"accelerator_type:{model.accelerator}" not in resources:
            has = ", ".join(present) or "no GPU type"
            raise ServeError(
                f"model {model.id!r} asks for accelerator {model.accelerator!r}, but this cluster has {has}: "
                "set the catalog's accelerator to what the machine has"
            )


def _waiting_reason(apps: dict[str, Any], names: list[str]) -> str:
    """The newest message Ray gives for a deployment that is not running yet (e.g. no node can place it)."""
    messages = [
        str(getattr(d, "message", "") or "")
        for name in names
        if (app := apps.get(name)) is not None
        for d in app.deployments.values()
    ]
    lines = [" ".join(m.split()) for m in messages if m.strip()]
    return lines[-1][:300] if lines else ""


def _short(message: str, deployments: dict[str, Any]) -> str:
    texts = [message] + [str(getattr(d, "message", "")) for d in deployments.values()]
    lines = [ln.strip() for t in texts for ln in t.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "Error" in ln or "error" in ln]
    return (errors[-1] if errors else lines[-1] if lines else "no message")[:300]


def _actual_endpoint(wanted: str) -> str:
    """The endpoint Serve really listens on (an existing Serve keeps its own HTTP options)."""
    from ray.serve.context import _get_global_client

    client = _get_global_client()
    if client is None:
        return wanted
    http = client.http_config
    host = "127.0.0.1" if http.host in ("0.0.0.0", "::", "") else http.host  # noqa: S104
    return f"http://{host}:{http.port}" if http.port else wanted


def _get_json(url: str, timeout_s: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - our own endpoint
        return json.loads(response.read())


def check_endpoint(endpoint: str, models: list[str], endpoints: dict[str, str] | None = None) -> None:
    """Every model is listed at its base URL (``endpoints``; default: all at ``endpoint``) and the info
    route answers; an HTTP error is reported, not retried."""
    where = endpoints or dict.fromkeys(models, endpoint)
    listed: dict[str, set[str]] = {}
    try:
        for url in sorted(set(where.values())):
            listed[url] = {m["id"] for m in _get_json(f"{url}/v1/models")["data"]}
        _get_json(f"{endpoint}{INFO_PATH}")
    except urllib.error.HTTPError as e:
        raise ServeError(f"{e.url} answered HTTP {e.code}: {e.read()[:200]!r}") from None
    except (urllib.error.URLError, OSError, ValueError, KeyError) as e:
        raise ServeError(f"{endpoint} does not answer as expected: {e}") from None
    for model in models:
        url = where.get(model, endpoint)
        if model not in listed.get(url, set()):
            raise ServeError(f"{url}/v1/models lacks {model!r}")


def stack_alive(state: StackState) -> bool:
    if state.started_cluster and state.cluster is not None:
        return LocalRayCluster.from_state(state.cluster).is_running()
    try:
        _get_json(f"{state.endpoint}{INFO_PATH}", timeout_s=3)
    except (urllib.error.URLError, OSError, ValueError):
        return False
    return True


def stop_stack(state: StackState, state_dir: Path, say: Progress | None = None) -> None:
    """Stop exactly what ``up`` started: the whole local cluster, or only our applications."""
    report = say or (lambda _m: None)
    if state.started_cluster and state.cluster is not None:
        cluster = LocalRayCluster.from_state(state.cluster)
        remember(state_dir, [p.pid for p in cluster.processes()])  # then remove_orphans below
        count = cluster.stop()  # HAProxy included: it names the cluster's temp dir and carries its marker
        left = cluster.processes()
        if left:
            count += cluster.stop(grace_s=5)
        shutil.rmtree(socket_dir(cluster.ports.base), ignore_errors=True)  # HAProxy's sockets
        report(f"stopped the local Ray cluster ({count} processes)")
        removed = remove_orphans(state_dir)
        if removed:
            report(f"removed {len(removed)} shared-memory segments its engines left in /dev/shm")
    elif state.apps:
        import ray
        from ray import serve

        ray.init(address=state.ray_address, logging_level=logging.ERROR, log_to_driver=False)
        try:
            for name in state.apps:
                serve.delete(name)
            report(f"deleted {', '.join(state.apps)} from {state.ray_address}")
        finally:
            ray.shutdown()
    StackState.remove(state_dir)
