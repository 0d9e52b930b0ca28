"""``m3bench dashboards``: build, verify, render and push the Grafana dashboards; run a local Prometheus."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from observability.prometheus import DEFAULT_RAY_TEMP_DIR, PrometheusClient, PrometheusError, RunWindow
from observability.verify import Window, run_span

app = typer.Typer(
    no_args_is_help=True,
    help="Prometheus rules and Grafana dashboards as code: build, verify, render, push; local Prometheus.",
)


def _window(window: Path, run: str | None, prometheus: str | None) -> tuple[Window, PrometheusClient]:
    """A run window file -> (query window with template variable values, Prometheus client); with
    ``run``, the window narrows to where that run's client series exist."""
    try:
        recorded = RunWindow.load(window)
    except PrometheusError as e:
        raise typer.BadParameter(str(e), param_hint="--window") from None
    client = PrometheusClient(prometheus or recorded.prometheus_url or "http://127.0.0.1:9090")
    variables = {"run": run or ".*", "model": ".*", "language": ".*"}
    query_window = Window(recorded.start, recorded.end or time.time(), variables)
    if run:
        try:
            query_window = run_span(client, query_window, run)
        except (PrometheusError, ValueError) as e:
            raise typer.BadParameter(str(e), param_hint="--run") from None
    return query_window, client


@app.command("build")
def build_command(
    check: Annotated[
        bool, typer.Option("--check", help="Fail if a generated file is stale; write nothing")
    ] = False,
    dashboards_dir: Annotated[Path | None, typer.Option(help="Where json/ and provisioning/ go")] = None,
    deploy_dir: Annotated[Path | None, typer.Option(help="Where prometheus.yml and rules/ go")] = None,
) -> None:
    """Generate dashboard JSON, Grafana provisioning, prometheus.yml and the rule files from code."""
    from observability import deploy
    from observability.dashboards import build

    if not deploy.IN_SOURCE_TREE and (dashboards_dir is None or deploy_dir is None):
        raise typer.BadParameter("not a source checkout: pass --dashboards-dir and --deploy-dir")
    targets = [
        (deploy.generated_dashboards(), dashboards_dir or build.DASHBOARDS_DIR),
        (deploy.generated(), deploy_dir or deploy.DEPLOY_DIR),
    ]
    for uid, document in build.build_all().items():
        problems = build.validate(document)
        if problems:
            raise typer.BadParameter(f"dashboard {uid} fails the SDK schema: {problems[0]}")
    if check:
        stale = [str(root / path) for files, root in targets for path in deploy.stale(files, root)]
        if stale:
            typer.echo(
                f"error: stale generated files (run `m3bench dashboards build`): {', '.join(stale)}", err=True
            )
            raise typer.Exit(1)
        typer.echo("generated files are up to date")
        return
    for files, root in targets:
        for path in deploy.write(files, root):
            typer.echo(f"wrote {path}")


@app.command("verify")
def verify_command(
    window: Annotated[Path, typer.Option(help="prometheus_window.json of a run (or its results directory)")],
    run: Annotated[str | None, typer.Option(help="Run id(s) for $run (regex); default all")] = None,
    prometheus: Annotated[str | None, typer.Option(help="Prometheus URL (default: the window's)")] = None,
) -> None:
    """Run every panel query and recording rule against Prometheus over a run's time range."""
    from observability import verify
    from observability.dashboards import build

    query_window, client = _window(window, run, prometheus)
    try:
        outcomes = verify.check_panels(client, build.build_all(), query_window)
        outcomes += verify.check_rules(client, query_window)
        problems = verify.failures(outcomes) + verify.quantile_order(client, query_window)
    except PrometheusError as e:
        raise typer.BadParameter(str(e)) from None
    typer.echo(f"{len(outcomes)} queries, {len(problems)} problems")
    for problem in problems:
        typer.echo(f"  {problem}")
    if problems:
        raise typer.Exit(1)


@app.command("render")
def render_command(
    window: Annotated[Path, typer.Option(help="prometheus_window.json of a run (or its results directory)")],
    out: Annotated[Path, typer.Option(help="Directory for the PNGs")] = Path("docs/images/panels"),
    run: Annotated[str | None, typer.Option(help="Run id(s) for $run (regex); default all")] = None,
    prometheus: Annotated[str | None, typer.Option(help="Prometheus URL (default: the window's)")] = None,
    every_panel: Annotated[
        bool, typer.Option("--all", help="Every panel, not one key panel per dashboard")
    ] = False,
) -> None:
    """Draw dashboard panels as PNGs from Prometheus range queries (matplotlib; no Grafana needed)."""
    from observability import render
    from observability.dashboards import build

    query_window, client = _window(window, run, prometheus)
    try:
        paths = render.render_dashboards(
            client, build.build_all(), query_window, out, every_panel=every_panel
        )
    except PrometheusError as e:
        raise typer.BadParameter(str(e)) from None
    for path in paths:
        typer.echo(f"wrote {path}")


@app.command("push")
def push_command(
    url: Annotated[str, typer.Option(help="Grafana base URL, e.g. http://127.0.0.1:3000")],
    token_file: Annotated[
        Path | None, typer.Option(help="File holding the API token (else $M3BENCH_GRAFANA_TOKEN)")
    ] = None,
    folder: Annotated[str, typer.Option(help="Grafana folder uid")] = "m3bench",
) -> None:
    """Create or overwrite the dashboards in a Grafana (token from the environment or a file, never argv)."""
    from observability import push
    from observability.dashboards import build

    try:
        pushed = push.push(url, push.read_token(token_file), build.build_all(), folder)
    except push.PushError as e:
        raise typer.BadParameter(str(e)) from None
    typer.echo(f"pushed {', '.join(pushed)} to {url} (folder {folder})")


@app.command("prometheus")
def prometheus_command(
    data_dir: Annotated[Path, typer.Option(help="Run-scoped data directory (TSDB, config, targets)")],
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1")] = 9090,
    ray_temp_dir: Annotated[
        Path, typer.Option(help="Ray's temp dir (its service-discovery file)")
    ] = DEFAULT_RAY_TEMP_DIR,
    results_dir: Annotated[Path | None, typer.Option(help="Where prometheus_window.json goes")] = None,
) -> None:
    """Run a local Prometheus in the foreground until Ctrl-C; the run window is recorded on exit."""
    from observability.prometheus import PrometheusConfig, PrometheusError, PrometheusServer

    server = PrometheusServer(
        PrometheusConfig(ray_temp_dir=ray_temp_dir), data_dir, port, results_dir=results_dir or data_dir
    )
    try:
        server.start()
    except PrometheusError as e:
        raise typer.BadParameter(str(e)) from None
    typer.echo(
        f"Prometheus at {server.url}; load generators list their processes in "
        f"{server.loadgen_sd_dir}/loadgen-<run id>.json (profile generator.file_sd_path)"
    )
    try:
        while server.process is not None and server.process.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    typer.echo(f"stopped; window in {(results_dir or data_dir) / 'prometheus_window.json'}")
