"""``m3bench report RESULTS_DIR``: re-render the capacity-planning report from saved results alone."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError


def report(  # noqa: PLR0917 - Typer options
    results_dir: Annotated[Path, typer.Argument(help="Results directory holding index.json and run dirs")],
    slo_ttft_p99: Annotated[float | None, typer.Option(help="SLO: p99 TTFT, seconds")] = None,
    slo_itl_p99: Annotated[
        float | None, typer.Option(help="SLO: p99 ITL, seconds (or --slo-tpot-p99)")
    ] = None,
    slo_tpot_p99: Annotated[
        float | None, typer.Option(help="SLO: p99 TPOT, seconds (or --slo-itl-p99)")
    ] = None,
    min_accuracy: Annotated[float | None, typer.Option(help="SLO: minimum accuracy, 0-1")] = None,
    max_error_fraction: Annotated[float, typer.Option(help="SLO: maximum share of non-ok requests")] = 0.01,
    target_rate: Annotated[float | None, typer.Option(help="Requests/s the plan must carry")] = None,
    headroom: Annotated[float, typer.Option(help="Spare capacity over the target (0.2 = 20%)")] = 0.2,
    price_per_hour: Annotated[
        float | None, typer.Option(help="USD per accelerator-hour where index.json gives none")
    ] = None,
    scaling_efficiency: Annotated[
        float, typer.Option(help="N replicas sustain N x rate(1) x this (planner model)")
    ] = 1.0,
    include_invalid: Annotated[
        bool, typer.Option("--include-invalid", help="Plan from levels the load generator marked invalid")
    ] = False,
    out: Annotated[Path | None, typer.Option(help="Output directory (default RESULTS_DIR/report)")] = None,
) -> None:
    """Write report.html, report.md and report.json from RESULTS_DIR's saved results (a load run's
    directory instead: its trace stages over time and session stages by turn, traffic.md/html)."""
    if (results_dir / "records.jsonl").is_file() and not (results_dir / "index.json").is_file():
        from m3bench.report.traffic import write_traffic_report

        for kind, path in write_traffic_report(results_dir, out).items():
            typer.echo(f"{kind}: {path}")
        return
    from m3bench.report import ReportError, ReportOptions, build_report  # lazy: keeps `m3bench --help` fast

    try:
        options = ReportOptions(
            slo_ttft_p99_s=slo_ttft_p99,
            slo_itl_p99_s=slo_itl_p99,
            slo_tpot_p99_s=slo_tpot_p99,
            min_accuracy=min_accuracy,
            max_error_fraction=max_error_fraction,
            target_rate=target_rate,
            headroom=headroom,
            price_per_hour=price_per_hour,
            scaling_efficiency=scaling_efficiency,
            include_invalid=include_invalid,
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else "options"
        message = str(error["msg"]).removeprefix("Value error, ")
        raise typer.BadParameter(f"{field}: {message}") from None
    try:
        paths = build_report(results_dir, options, out)
    except ReportError as exc:
        raise typer.BadParameter(str(exc)) from None
    for kind, path in paths.items():
        typer.echo(f"{kind}: {path}")
