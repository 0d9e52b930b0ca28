"""``m3bench serve``: bring a catalog's models up on Ray Serve, show them, take them down, and write
the KubeRay manifest of the same catalog."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

try:  # typer >= 0.20 vendors click; m3bench.cli:main turns its exceptions into one line
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - older typer on real click
    from click import ClickException  # type: ignore[assignment]

if TYPE_CHECKING:
    from serving.stack import StackState

app = typer.Typer(no_args_is_help=True)
err = Console(stderr=True, soft_wrap=True)  # progress lines stay whole in logs

CatalogOpt = Annotated[Path, typer.Option("--catalog", "-c", help="Catalog YAML (deploy/models/*.yaml).")]
OnlyOpt = Annotated[list[str] | None, typer.Option("--only", help="Serve only these model ids (repeatable).")]
StateOpt = Annotated[
    Path | None,
    typer.Option("--state-dir", help="Where the stack's state lives (default $M3BENCH_CACHE/serve)."),
]


def _fail(message: str) -> NoReturn:
    raise ClickException(" ".join(message.split()))


def _quiet_vllm() -> None:
    # Only imported here to check arguments: its start-up notices (no Triton, no CUDA) are noise.
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    _vllm_logs_to_stderr()


def _vllm_logs_to_stderr() -> None:
    # vLLM logs to stdout by default; stdout carries results (the endpoint, manifests) for scripts.
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")


def _progress(message: str) -> None:
    err.print(f"[bold]serve[/]: {message}", highlight=False)


def _resources(text: str | None) -> dict[str, float]:
    if not text:
        return {}
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise TypeError
        return {str(k): float(v) for k, v in data.items()}
    except (ValueError, TypeError):
        raise typer.BadParameter(f"--node-resources wants a JSON object of numbers, got {text!r}") from None


def _env_pairs(pairs: list[str]) -> dict[str, str]:
    found = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--env wants KEY=VALUE, got {pair!r}")
        found[key] = value
    return found


@app.command()
def up(  # noqa: PLR0917 - Typer maps parameters to options
    catalog: CatalogOpt,
    only: OnlyOpt = None,
    address: Annotated[
        str | None,
        typer.Option("--address", help="Use this running Ray cluster (host:port) instead of starting one."),
    ] = None,
    http_port: Annotated[int, typer.Option(help="Serve's HTTP port (127.0.0.1).")] = 8000,
    port_base: Annotated[int, typer.Option(help="First of the local Ray cluster's fixed ports.")] = 26300,
    nodes: Annotated[int, typer.Option(min=1, max=8, help="Nodes of the local cluster, head included.")] = 1,
    cpus_per_node: Annotated[
        int | None, typer.Option(min=1, help="Logical CPUs per node (default: what the catalog needs).")
    ] = None,
    node_resources: Annotated[
        str | None, typer.Option(help="Custom resources on every node, JSON, e.g. '{\"replica_slot\": 1}'.")
    ] = None,
    env: Annotated[
        list[str] | None,
        typer.Option("--env", help="KEY=VALUE for every process of the local cluster (repeatable)."),
    ] = None,
    state_dir: StateOpt = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for every replica.")] = 900.0,
) -> None:
    """Start Ray (or use --address), deploy every catalog model, wait for them, print the endpoint."""
    _vllm_logs_to_stderr()
    from serving.catalog import CatalogError
    from serving.stack import (
        ClusterError,
        PortInUseError,
        PortPlan,
        ServeError,
        ServeStack,
        StackConfig,
        StateError,
    )

    try:
        config = StackConfig(
            address=address,
            ports=PortPlan(base=port_base, http=http_port),
            nodes=nodes,
            cpus_per_node=cpus_per_node,
            node_resources=_resources(node_resources),
            state_dir=state_dir,
            ready_timeout_s=timeout,
            env=_env_pairs(env or []),
        )
        stack = ServeStack(catalog, only=only, config=config, progress=_progress)
        state = stack.up()
    except (CatalogError, ServeError, ClusterError, PortInUseError, StateError, ValueError) as e:
        _fail(str(e))
    print(state.endpoint)


def _saved_state(state_dir: Path | None) -> tuple[Path, StackState | None]:
    """Where the stack's state lives, and the state ``up`` left there (None: no stack is up)."""
    from serving.stack import StackState, StateError, default_state_dir

    where = state_dir or default_state_dir()
    try:
        return where, StackState.load(where)
    except StateError as e:
        _fail(str(e))


@app.command()
def status(
    state_dir: StateOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the state and health as JSON.")] = False,
) -> None:
    """Show the stack ``up`` started: endpoint, cluster, per model the replicas running and wanted.
    Exit 1 when none is up, or when any model has no replica running. Removes the /dev/shm segments
    that dead engines of this stack left (serving/stack/shm.py)."""
    from serving.stack.health import health

    where, state = _saved_state(state_dir)
    if state is None:
        err.print(f"no stack is up (no state in {where})")
        raise typer.Exit(1)
    report = health(state)
    if state.started_cluster and state.cluster is not None:
        from serving.stack.cluster import LocalRayCluster
        from serving.stack.shm import remember, remove_orphans

        remember(where, [p.pid for p in LocalRayCluster.from_state(state.cluster).processes()])
        report["shm_removed"] = removed = remove_orphans(where)
        if removed:
            err.print(f"removed {len(removed)} shared-memory segments that dead engines of this stack left")
    if as_json:
        print(json.dumps(report, indent=2, default=str))
    else:
        _print_status(report)
    raise typer.Exit(0 if report["healthy"] else 1)


def _print_status(report: dict[str, Any]) -> None:
    table = Table("", "", show_header=False, box=None)
    for key in ("endpoint", "catalog", "models", "ray_address", "dashboard", "cluster", "healthy"):
        value = report.get(key)
        table.add_row(key, ", ".join(value) if isinstance(value, list) else str(value))
    for name, deployment in sorted(report.get("deployments", {}).items()):
        table.add_row(name, deployment)
    for model, seen in sorted(report.get("replicas", {}).items()):
        if seen.get("deployment") is None:
            table.add_row(model, "not deployed")
    if report.get("problem"):
        table.add_row("problem", str(report["problem"]))
    Console().print(table)


@app.command()
def down(
    state_dir: StateOpt = None,
    catalog: Annotated[
        Path | None,
        typer.Option("--catalog", "-c", help="Refuse unless the running stack serves this catalog."),
    ] = None,
) -> None:
    """Stop what ``up`` started: its own Ray cluster, or only its applications on an existing cluster."""
    from serving.stack import stop_stack

    where, state = _saved_state(state_dir)
    if state is None:
        err.print(f"nothing to stop (no state in {where})")
        return
    if catalog is not None and state.catalog_file != str(catalog.resolve()):
        _fail(f"the running stack serves {state.catalog_file}, not {catalog}; leave out --catalog to stop it")
    stop_stack(state, where, _progress)


@app.command()
def check(catalog: CatalogOpt, only: OnlyOpt = None) -> None:
    """Validate a catalog: fields, sources (building embedded models) and every vLLM engine argument."""
    _quiet_vllm()
    from serving.app import engine_arguments, resolve_models
    from serving.catalog import CatalogError, load_catalog

    try:
        loaded = load_catalog(catalog).select(only)
        models = resolve_models(loaded, catalog.resolve().parent, build=True)
        for model in models:
            try:
                engine_arguments(loaded, model)
            except ValueError as e:
                raise CatalogError(f"model {model.entry.id!r}: {str(e).splitlines()[0]}") from None
    except CatalogError as e:
        _fail(str(e))
    for model in models:
        print(f"{model.entry.id}: {model.source.kind} {model.source.location}")


@app.command("env")
def env_command(catalog: CatalogOpt) -> None:
    """Print the catalog's serving mode as `export` lines, for the `ray start` of a cluster that
    `serve up --address` deploys into (MAXCONN sized from this machine's descriptor limit)."""
    from serving.catalog import CatalogError, load_catalog
    from serving.mode import ModeError, fd_limit, haproxy_maxconn, mode_env

    try:
        loaded = load_catalog(catalog)
        maxconn = haproxy_maxconn(fd_limit()) if loaded.ingress == "haproxy" else None
        pairs = mode_env(loaded, maxconn=maxconn)
    except (CatalogError, ModeError) as e:
        _fail(str(e))
    err.print(f"serving mode: {loaded.serving_mode}")
    for key, value in pairs.items():
        print(f"export {key}={value}")


@app.command()
def kuberay(  # noqa: PLR0917
    catalog: CatalogOpt,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the manifest here (default: stdout).")
    ] = None,
    only: OnlyOpt = None,
    name: Annotated[str | None, typer.Option(help="RayService name (default: m3bench-<catalog>).")] = None,
    namespace: Annotated[str, typer.Option(help="Kubernetes namespace.")] = "default",
    image: Annotated[str | None, typer.Option(help="Container image with Ray Serve LLM and vLLM.")] = None,
) -> None:
    """Write a KubeRay RayService for the catalog, validated against the RayService CRD schema."""
    _quiet_vllm()
    from serving.catalog import CatalogError, load_catalog
    from serving.kuberay import DEFAULT_IMAGE, KubeRayError, render_manifest

    try:
        loaded = load_catalog(catalog).select(only)
        text = render_manifest(loaded, name=name, namespace=namespace, image=image or DEFAULT_IMAGE)
    except (CatalogError, KubeRayError) as e:
        _fail(str(e))
    if out is None:
        print(text, end="")
    else:
        out.write_text(text, encoding="utf-8")
        err.print(f"wrote {out}")
