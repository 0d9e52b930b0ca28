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
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from serving.app import (
    APP_NAME,
    INFO_APP_NAME,
    INFO_PATH,
    INFO_ROUTE_PREFIX,
    ResolvedModel,
    build_info_app,
    build_llm_app,
    engine_arguments,
    resolve_models,
    server_info,
)
from serving.catalog import Catalog, CatalogError, load_catalog
from serving.stack.cluster import LocalRayCluster, NodeSpec
from serving.stack.ports import PortPlan
from serving.stack.smoke import chat_body, image_data_url, stream_chat
from serving.stack.state import StackState, default_state_dir, write_info

Progress = Callable[[str], None]
POLL_S = 2.0


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

    @property
    def endpoint(self) -> str:
        if self.state is None:
            raise ServeError("the stack is not up")
        return self.state.endpoint

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
        models = resolve_models(self.catalog, base_dir, build=True)
        try:
            self._start_cluster()
            self._deploy(models)
        except BaseException:
            self.down()
            raise
        assert self.state is not None
        return self.state

    def _start_cluster(self) -> None:
        cfg = self.config
        cluster = None
        if cfg.address is None:
            cpus = cfg.cpus_per_node or logical_cpus(self.catalog)
            # A CPU-only catalog hides GPUs from Ray (vLLM-CPU must not see one); else Ray detects them.
            gpus = 0 if all(m.accelerator == "cpu" for m in self.catalog.models) else None
            nodes = [NodeSpec(cpus, dict(cfg.node_resources), gpus) for _ in range(cfg.nodes)]
            temp_dir = cfg.temp_dir or Path(f"/tmp/m3bench-ray-{cfg.ports.base}")  # noqa: S108 - short: sockets
            cluster = LocalRayCluster(temp_dir, cfg.ports, nodes, env=dict(cfg.env))
            self.state = self._new_state(cluster.address, cluster.dashboard_url, cluster)
            self.state.save(self.state_dir)  # before starting: an interrupted start can still be stopped
            cluster.start(self.say)
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
            serve.start(
                http_options={"host": "127.0.0.1", "port": self.config.ports.http}, proxy_location="HeadOnly"
            )
            state.endpoint = _actual_endpoint(state.endpoint)
            taken = {APP_NAME, INFO_APP_NAME} & set(serve.status().applications)
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
                git_sha=_git_sha(),
            )
            write_info(self.state_dir, self.info)
            batching = self.catalog.stream_batching_interval_ms
            self.say(f"deploying {', '.join(state.models)} (stream batching {batching:g} ms)")
            state.apps = [APP_NAME, INFO_APP_NAME]
            state.save(self.state_dir)
            serve.run_many(
                [
                    serve.RunTarget(build_llm_app(self.catalog, models), name=APP_NAME, route_prefix="/"),
                    serve.RunTarget(
                        build_info_app(self.info), name=INFO_APP_NAME, route_prefix=INFO_ROUTE_PREFIX
                    ),
                ],
                wait_for_ingress_deployment_creation=False,
                wait_for_applications_running=False,
            )
            self._wait_ready()
        finally:
            ray.shutdown()
        check_endpoint(state.endpoint, state.models)
        self._warm_up(state.endpoint, state.models)
        state.ready = True
        state.save(self.state_dir)
        served = ", ".join(state.models)
        self.say(f"ready: {state.endpoint}/v1 serves {served}; info at {state.endpoint}{INFO_PATH}")

    def _warm_up(self, endpoint: str, models: list[str]) -> None:
        """One image + text streaming request per model: proves the path end to end and takes the
        engine's first-request costs (processor and kernel warm-up) out of any measurement."""
        image = image_data_url()
        for model in models:
            result = stream_chat(endpoint, chat_body(model, image, max_tokens=8), timeout_s=300)
            if not result.ok:
                raise ServeError(f"model {model!r} does not answer an image chat request: {result.error}")
            self.say(f"warm-up {model}: first token after {result.ttft_s or 0:.2f} s")

    def _wait_ready(self) -> None:
        from ray import serve

        start = time.monotonic()
        last = ""
        while True:
            apps = serve.status().applications
            parts, running = [], True
            for name in (APP_NAME, INFO_APP_NAME):
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
            if text != last:
                self.say(f"[{elapsed:4.0f} s] {text}")
                last = text
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


def check_endpoint(endpoint: str, models: list[str]) -> None:
    """The endpoint lists every model and serves the info route; an HTTP error is reported, not retried."""
    try:
        listed = {m["id"] for m in _get_json(f"{endpoint}/v1/models")["data"]}
        _get_json(f"{endpoint}{INFO_PATH}")
    except urllib.error.HTTPError as e:
        raise ServeError(f"{e.url} answered HTTP {e.code}: {e.read()[:200]!r}") from None
    except (urllib.error.URLError, OSError, ValueError, KeyError) as e:
        raise ServeError(f"{endpoint} does not answer as expected: {e}") from None
    missing = sorted(set(models) - listed)
    if missing:
        raise ServeError(f"{endpoint}/v1/models lacks {missing}")


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
        count = cluster.stop()
        report(f"stopped the local Ray cluster ({count} processes)")
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


def _git_sha() -> str | None:
    root = Path(__file__).resolve().parents[2]
    try:
        done = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None
