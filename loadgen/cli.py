"""``m3bench load``: run load tests, recompute summaries, start the calibration server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from loadgen.profile import PROFILES_DIR, LoadgenError, RunConfig, load_profile

app = typer.Typer(
    no_args_is_help=True, help="Load generation: Locust replays a task set against an endpoint."
)


def _progress(status: dict[str, Any]) -> None:
    from loadgen.run import format_progress

    line = format_progress(status)
    if line is not None:
        typer.echo(line, err=True)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=2)


@app.command("run")
def run_command(  # noqa: PLR0917 - Typer options
    endpoint: Annotated[str, typer.Option(help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000")],
    tasks: Annotated[Path, typer.Option(help="Task-set directory (tasks.jsonl + images/)")],
    models: Annotated[str, typer.Option(help="Comma-separated served model names")],
    profile: Annotated[
        str, typer.Option(help="Profile: YAML file, built-in name, or inline YAML/JSON")
    ] = "smoke",
    out: Annotated[Path, typer.Option(help="Results root; the run gets its own directory")] = Path(
        "results/load"
    ),
    run_id: Annotated[str | None, typer.Option(help="Run id (default: timestamp)")] = None,
    workers: Annotated[int | None, typer.Option(help="Local Locust workers (0: one process)")] = None,
    web: Annotated[bool, typer.Option(help="Keep Locust's web UI open (autostarts, quits after)")] = False,
    seed: Annotated[int | None, typer.Option(help="Seed: same seed, same schedule and task draws")] = None,
    no_grading: Annotated[bool, typer.Option("--no-grading", help="Do not grade answers live")] = False,
    no_preflight: Annotated[bool, typer.Option("--no-preflight", help="Skip the endpoint checks")] = False,
) -> None:
    """Run a load test and write records, summaries and Prometheus targets."""
    from loadgen.run import run_load

    overrides: dict[str, Any] = {}
    if workers is not None:
        overrides["generator.workers"] = workers
    if web:
        overrides["generator.web_ui"] = True
    if seed is not None:
        overrides["seed"] = seed
    if no_grading:
        overrides["grading.enabled"] = False
    try:
        model_list = [m.strip() for m in models.split(",") if m.strip()]
        if not model_list:
            raise LoadgenError("--models names no model")
        config = RunConfig(
            endpoint=endpoint,
            tasks=tasks,
            models=model_list,
            profile=load_profile(profile, overrides),
            out_dir=out,
            run_id=run_id,
            preflight=not no_preflight,
        )
        result = run_load(config, progress=_progress)
    except LoadgenError as exc:
        raise _fail(str(exc)) from None
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)
    for stage in result.summary["stages"]:
        latency, throughput = stage["latency_s"], stage["throughput"]
        ttft = latency["ttft"]
        p50 = f"{ttft['p50'] * 1e3:.1f}" if ttft["p50"] is not None else "-"
        p99 = f"{ttft['p99'] * 1e3:.1f}" if ttft["p99"] is not None else "-"
        rps = throughput["requests_per_s"] or 0.0
        tps = throughput["output_tokens_per_s"] or 0.0
        valid = (
            ""
            if stage["generator"]["valid"]
            else "  INVALID: " + "; ".join(stage["generator"]["invalid_reasons"])
        )
        typer.echo(
            f"{stage['stage']}: {stage['counts']['measure_by_status']['ok']} ok, TTFT p50 {p50} ms "
            f"p99 {p99} ms, {rps:.2f} req/s, {tps:.1f} tok/s{valid}"
        )
    typer.echo(f"results: {result.run_dir}")


@app.command("summarize")
def summarize_command(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (holds records.jsonl)")],
    write: Annotated[bool, typer.Option(help="Rewrite summary.json")] = False,
) -> None:
    """Recompute a run's summaries from its records alone."""
    from loadgen.summary import summarize_run

    if not (run_dir / "records.jsonl").is_file():
        raise _fail(f"{run_dir} has no records.jsonl")
    summary = summarize_run(run_dir)
    text = json.dumps(summary, indent=2, default=str)
    if write:
        (run_dir / "summary.json").write_text(text + "\n", encoding="utf-8")
    typer.echo(text)


@app.command("check-profile")
def check_profile_command(
    profile: Annotated[str, typer.Argument(help="YAML file, built-in name or inline")],
) -> None:
    """Validate a profile and print its stages."""
    from loadgen.schedule import build_plans

    try:
        loaded = load_profile(profile)
    except LoadgenError as exc:
        raise _fail(str(exc)) from None
    for plan in build_plans(loaded):
        typer.echo(
            f"{plan.index}: {plan.name} {plan.mode} target={plan.target:g} warmup={plan.warmup_s:g}s "
            f"measure={plan.measure_s}s/{plan.measure_requests} req cooldown={plan.cooldown_s:g}s"
        )


@app.command("profiles")
def profiles_command() -> None:
    """List the built-in profiles."""
    for path in sorted(PROFILES_DIR.glob("*.yaml")):
        first = path.read_text(encoding="utf-8").splitlines()[0].lstrip("# ")
        typer.echo(f"{path.stem}: {first}")


@app.command("calibration-server")
def calibration_server_command(
    port: Annotated[int, typer.Option()] = 8100,
    ttft_ms: Annotated[float, typer.Option()] = 100.0,
    itl_ms: Annotated[float, typer.Option()] = 10.0,
    output_len: Annotated[int | None, typer.Option()] = None,
    models: Annotated[str, typer.Option()] = "calib",
) -> None:
    """Serve the programmed-timing calibration endpoint (blocks)."""
    from loadgen.calibration.server import main

    argv = ["--port", str(port), "--ttft-ms", str(ttft_ms), "--itl-ms", str(itl_ms), "--models", models]
    if output_len is not None:
        argv += ["--output-len", str(output_len)]
    main(argv)
