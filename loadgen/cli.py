"""``m3bench load``: run load tests, recompute summaries, start the calibration server."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError

from loadgen.profile import PROFILES_DIR, LoadgenError, RunConfig, load_profile, validation_line

if TYPE_CHECKING:
    from loadgen.summary_model import StageSummary

app = typer.Typer(
    no_args_is_help=True, help="Load generation: Locust replays a task set against an endpoint."
)


def _progress(status: dict[str, Any]) -> None:
    from loadgen.run import format_progress

    line = format_progress(status)
    if line is not None:
        typer.echo(line, err=True)


def _ms(value: float | None) -> str:
    return f"{value * 1e3:.1f}" if value is not None else "-"


def stage_line(stage: StageSummary) -> str:
    """One line per stage: counts, TTFT, throughput over the measure window, validity with its cause."""
    ttft, throughput = stage.latency_s.ttft, stage.throughput
    rps = throughput.requests_per_s or 0.0
    tps = throughput.output_tokens_per_s or 0.0
    valid = "" if stage.generator.valid else "  INVALID: " + "; ".join(stage.generator.invalid_reasons)
    return (
        f"{stage.stage}: {stage.counts.ok} ok, TTFT p50 {_ms(ttft.p50)} ms p99 {_ms(ttft.p99)} ms, "
        f"{rps:.2f} req/s, {tps:.1f} tok/s{valid}"
    )


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=2)


def _run_config(  # noqa: PLR0917 - the options `load run` and `load search` share
    endpoint: str,
    tasks: Path,
    models: str,
    profile: str,
    overrides: dict[str, Any],
    out: Path,
    run_id: str | None,
    no_preflight: bool,
) -> RunConfig:
    """The RunConfig of `load run` and `load search` from their options (``models`` comma-separated,
    ``profile`` a file, built-in name or inline YAML); bad input is a one-line LoadgenError."""
    model_list = [m.strip() for m in models.split(",") if m.strip()]
    if not model_list:
        raise LoadgenError("--models names no model")
    loaded = load_profile(profile, overrides)
    try:
        return RunConfig(
            endpoint=endpoint,
            tasks=tasks,
            models=model_list,
            profile=loaded,
            out_dir=out,
            run_id=run_id,
            preflight=not no_preflight,
        )
    except ValidationError as exc:
        raise LoadgenError(validation_line(exc, "")) from None


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
    from loadgen.outcome import EXIT_GENERATOR_FAILED
    from loadgen.run import GeneratorFailedError, run_load

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
        config = _run_config(endpoint, tasks, models, profile, overrides, out, run_id, no_preflight)
        if config.profile.mode == "search":
            _run_search(config)
            return
        result = run_load(config, progress=_progress)
    except GeneratorFailedError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=EXIT_GENERATOR_FAILED) from None
    except LoadgenError as exc:
        raise _fail(str(exc)) from None
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)
    for stage in result.summary.stages:
        typer.echo(stage_line(stage))
    typer.echo(f"results: {result.run_dir}")
    if result.outcome is not None:  # the last line: counts by status, main cause, exit status
        typer.echo(result.outcome.line)
        raise typer.Exit(code=result.outcome.code)


def _run_search(config: RunConfig) -> None:
    """An SLO search (``mode: search``): probes, then R* with its interval; search.json in the run dir."""
    from loadgen.search import run_search

    report = run_search(config, say=lambda line: typer.echo(line, err=True))
    result = report.result
    assert result is not None
    low, high = result.interval
    shown = f"[{low:.4g}, {high:.4g})" if low is not None and high is not None else f"[{low}, {high})"
    typer.echo(f"search {result.status}: R* = {result.r_star} requests/s, interval {shown}; {result.note}")
    typer.echo(f"results: {config.out_dir / report.run_id / 'search.json'}")


@app.command("search")
def search_command(  # noqa: PLR0917 - Typer options
    endpoint: Annotated[str, typer.Option(help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000")],
    tasks: Annotated[Path, typer.Option(help="Task-set directory (tasks.jsonl + images/)")],
    models: Annotated[str, typer.Option(help="Comma-separated served model names")],
    profile: Annotated[str, typer.Option(help="A profile with mode: search (YAML file, built-in or inline)")],
    out: Annotated[Path, typer.Option(help="Results root; the search gets its own directory")] = Path(
        "results/load"
    ),
    run_id: Annotated[str | None, typer.Option(help="Search id (default: timestamp)")] = None,
    no_grading: Annotated[bool, typer.Option("--no-grading", help="Do not grade answers live")] = False,
    no_preflight: Annotated[bool, typer.Option("--no-preflight", help="Skip the endpoint checks")] = False,
) -> None:
    """SLO search: the highest open-loop rate meeting the profile's percentile targets, with its interval."""
    overrides: dict[str, Any] = {"grading.enabled": False} if no_grading else {}
    try:
        config = _run_config(endpoint, tasks, models, profile, overrides, out, run_id, no_preflight)
        if config.profile.mode != "search":
            raise LoadgenError(
                f"profile {profile} has mode: {config.profile.mode}; a search needs mode: search"
            )
        _run_search(config)
    except LoadgenError as exc:
        raise _fail(str(exc)) from None


@app.command("summarize")
def summarize_command(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (holds records.jsonl)")],
    write: Annotated[bool, typer.Option(help="Rewrite summary.json")] = False,
) -> None:
    """Recompute a run's summaries from its records alone."""
    from loadgen.summary import summarize_run

    if not (run_dir / "records.jsonl").is_file():
        raise _fail(f"{run_dir} has no records.jsonl")
    text = summarize_run(run_dir).to_json()
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
    if loaded.search is not None:
        spec = loaded.search
        targets = ", ".join(f"{t.metric} p{t.quantile * 100:g} <= {t.max_s:g}s" for t in spec.targets)
        typer.echo(
            f"search: {targets}; start {spec.start_rate:g}/s in [{spec.min_rate:g}, {spec.max_rate:g}], "
            f"x{spec.growth:g} bracketing, resolution {spec.resolution:g}, {spec.confidence:.0%} intervals "
            f"within {spec.precision:.0%}"
        )
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
