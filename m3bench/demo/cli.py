"""The ``m3bench demo`` command."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console

from m3bench.demo.settings import PRESETS, DemoSettings

err = Console(stderr=True)


def demo(  # noqa: PLR0917 - Typer options
    preset: Annotated[
        str, typer.Option(help="full (the README's run) or quick (the CI end-to-end run).")
    ] = "full",
    results: Annotated[Path, typer.Option(help="Parent directory of the run's results.")] = Path("results"),
    models: Annotated[
        list[str] | None, typer.Option("--model", help="Embedded models to sweep (repeat).")
    ] = None,
    concurrency: Annotated[
        list[int] | None, typer.Option(help="Closed-loop levels (repeat); fixes them instead of probing.")
    ] = None,
    levels: Annotated[
        str | None, typer.Option(help="probe (levels placed around the knee a quick probe finds) or fixed.")
    ] = None,
    priority: Annotated[
        str | None,
        typer.Option(
            help="The load generator's priority: realtime (SCHED_FIFO; root), high (nice -10), default."
        ),
    ] = None,
    nodes: Annotated[int | None, typer.Option(help="Ray nodes on this machine.")] = None,
    ray_metrics_interval_ms: Annotated[
        int | None, typer.Option(help="How often Ray's processes export metrics (ms).")
    ] = None,
    replica_cpu_quota: Annotated[
        float | None,
        typer.Option(help="Cap each vLLM engine at this many cores (CPU cgroup; root); 0: uncapped."),
    ] = None,
    measure_s: Annotated[float | None, typer.Option(help="Measured seconds per level.")] = None,
    warmup_s: Annotated[float | None, typer.Option(help="Warm-up seconds per level.")] = None,
    ramp_s: Annotated[
        float | None,
        typer.Option(help="A level's new streams start spread over this many seconds (0: at once)."),
    ] = None,
    drain_measured: Annotated[
        bool | None,
        typer.Option(
            "--drain-measured/--no-drain-measured",
            help="Hold each level's load until its measured requests have ended (default: on).",
        ),
    ] = None,
    ingress: Annotated[
        str | None,
        typer.Option(
            help="haproxy (Ray's high-throughput mode: HAProxy, each model streaming directly) or proxy "
            "(Ray Serve's Python proxy and ingress)."
        ),
    ] = None,
    port_base: Annotated[int | None, typer.Option(help="First of the Ray cluster's ports.")] = None,
    http_port: Annotated[int | None, typer.Option(help="Port of the OpenAI-compatible endpoint.")] = None,
    scale: Annotated[
        bool, typer.Option(help="Also sweep one INT4 model at 2 replicas (planner check).")
    ] = True,
    accuracy: Annotated[
        bool,
        typer.Option(
            help="Accuracy phase: each model asked every accuracy task once at one stream (natural "
            "output lengths), one INT4 model again at the highest concurrency."
        ),
    ] = True,
    search: Annotated[
        list[str] | None,
        typer.Option(
            help="After the sweeps, SLO-search this served model (repeat): '<model>' at one replica, "
            "'<model>-x2' at two; the report gives R* with its interval."
        ),
    ] = None,
    accuracy_problems: Annotated[
        int | None, typer.Option(help="Problems per language in the accuracy phase (the demo set's first).")
    ] = None,
) -> None:
    """Build the embedded models and task set, serve them on a local Ray cluster, probe and sweep load with
    Locust, grade, and write records, summaries, dashboards and a capacity-planning report."""
    if preset not in PRESETS:
        raise typer.BadParameter(f"unknown preset {preset!r} (expected {' or '.join(PRESETS)})")
    values: dict[str, Any] = {**PRESETS[preset], "results_root": results}
    if models:
        values["models"] = models
        int4 = next((m for m in models if not m.endswith("bf16")), None)
        if scale and DemoSettings().scale_model not in models:
            values["scale_model"] = int4
        if DemoSettings().saturation_model not in models:
            values["saturation_model"] = int4 or models[0]
    if port_base is not None:
        values["serve_port_base"] = port_base
    if http_port is not None:
        values["http_port"] = http_port
    if not scale:
        values["scale_model"] = None
    if concurrency:
        values["concurrencies"] = concurrency
        values["levels"] = "fixed"
    if levels is not None:
        values["levels"] = levels
    if priority is not None:
        values["generator_priority"] = priority
    if nodes is not None:
        values["nodes"] = nodes
    if ray_metrics_interval_ms is not None:
        values["ray_metrics_interval_ms"] = ray_metrics_interval_ms
    if replica_cpu_quota is not None:
        values["replica_cpu_quota"] = replica_cpu_quota or None
    for key, value in (("measure_s", measure_s), ("warmup_s", warmup_s), ("ramp_s", ramp_s)):
        if value is not None:
            values[key] = value
    if ingress is not None:
        values["ingress"] = ingress
    if drain_measured is not None:
        values["drain_measured"] = drain_measured
    values["accuracy"] = accuracy
    if search:
        values["search_models"] = search
    if accuracy_problems is not None:
        values["accuracy_problems_per_language"] = accuracy_problems
    try:
        settings = DemoSettings.model_validate(values)
    except ValidationError as e:
        detail = e.errors()[0]
        where = ".".join(map(str, detail["loc"]))
        message = str(detail["msg"]).removeprefix("Value error, ")
        raise typer.BadParameter(f"{where}: {message}" if where else message) from None

    from m3bench.demo.display import DemoDisplay
    from m3bench.demo.run import Demo

    def _terminate(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM stops the demo the way Ctrl-C does: everything started is stopped

    signal.signal(signal.SIGTERM, _terminate)
    t0 = time.monotonic()
    display = DemoDisplay(err)  # a live panel; every line goes to <run>/demo.log
    run = Demo(settings, display.say, display)
    try:
        with display:
            out = run.run()
    except KeyboardInterrupt:
        err.print(f"[red]interrupted[/]: everything started was stopped; records kept in {run.results}")
        raise typer.Exit(130) from None
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__  # one line, never a traceback
        err.print(f"[red]error[/]: {type(e).__name__}: {first} (partial results in {run.results})")
        raise typer.Exit(1) from None
    err.print(f"[bold green]done[/] in {time.monotonic() - t0:.0f} s: {out}/report/report.html")
