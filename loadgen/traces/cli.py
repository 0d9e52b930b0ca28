"""``m3bench trace``: synthesize a day of traffic, inspect a trace file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from loadgen.traces.formats import FORMATS, TraceError, read_trace, write_mooncake
from loadgen.traces.synth import SynthSettings, synthesize
from loadgen.traces.transform import offered_rate

app = typer.Typer(no_args_is_help=True, help="Arrival traces: synthesize, inspect.")


@app.command()
def synth(  # noqa: PLR0917 - Typer options
    out: Annotated[Path, typer.Argument(help="Trace file to write (Mooncake JSONL).")],
    duration_s: Annotated[float, typer.Option(help="Length of the trace.")] = 86_400.0,
    mean_rate: Annotated[float, typer.Option(help="Mean requests/s over a whole cycle.")] = 2.0,
    peak_to_trough: Annotated[float, typer.Option(help="Highest / lowest rate of the daily cycle.")] = 4.0,
    period_s: Annotated[float, typer.Option(help="Length of one cycle.")] = 86_400.0,
    peak_at_s: Annotated[float, typer.Option(help="Offset of the peak within the cycle.")] = 14 * 3600.0,
    burstiness: Annotated[float, typer.Option(help="Gamma shape of inter-arrival times (<1: bursty).")] = 0.5,
    input_median: Annotated[float, typer.Option(help="Median input tokens.")] = 700.0,
    output_median: Annotated[float, typer.Option(help="Median output tokens.")] = 200.0,
    seed: int = 0,
) -> None:
    """Write a synthetic day: daily cycle, gamma bursts, log-normal lengths, shared prefixes."""
    try:
        settings = SynthSettings(
            duration_s=duration_s,
            mean_rate=mean_rate,
            peak_to_trough=peak_to_trough,
            period_s=period_s,
            peak_at_s=peak_at_s,
            burstiness=burstiness,
            input_median=input_median,
            output_median=output_median,
            seed=seed,
        )
    except ValueError as exc:
        raise typer.BadParameter(" ".join(str(exc).split())) from None
    rows = synthesize(settings)
    if not rows:
        raise typer.BadParameter("the settings give no arrival: raise --duration-s or --mean-rate")
    write_mooncake(rows, out)
    rate = offered_rate(rows)
    Console().print(f"wrote {len(rows)} rows to {out} ({rows[-1].at_s:.0f} s, mean {rate or 0:.3f}/s)")


@app.command()
def inspect(
    path: Annotated[Path, typer.Argument(help="A trace file.")],
    format: Annotated[str, typer.Option(help=f"auto or one of: {', '.join(FORMATS)}")] = "auto",
    bucket_s: Annotated[float, typer.Option(help="Width of the rate-over-time buckets.")] = 3600.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Rows, problems, lengths and the offered rate over time of a trace."""
    try:
        trace = read_trace(path, format)
    except TraceError as exc:
        raise typer.BadParameter(str(exc)) from None
    if bucket_s <= 0:
        raise typer.BadParameter("--bucket-s must be > 0")
    buckets: dict[int, int] = {}
    for row in trace.rows:
        buckets[int(row.at_s // bucket_s)] = buckets.get(int(row.at_s // bucket_s), 0) + 1
    summary = {
        "source": trace.source,
        "format": trace.format,
        "rows": len(trace.rows),
        "skipped": len(trace.problems),
        "problems": trace.problems[:20],
        "duration_s": trace.duration_s,
        "mean_rate": offered_rate(trace.rows),
        "input_tokens_mean": sum(r.input_tokens for r in trace.rows) / len(trace.rows),
        "output_tokens_mean": sum(r.output_tokens for r in trace.rows) / len(trace.rows),
        "rate_per_bucket": {f"{k * bucket_s:g}": v / bucket_s for k, v in sorted(buckets.items())},
    }
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    console = Console()
    for problem in trace.problems[:20]:
        console.print(f"[yellow]skipped[/] {problem}", highlight=False)
    console.print(
        f"{trace.format} trace {trace.source}: {len(trace.rows)} rows ({len(trace.problems)} skipped), "
        f"{trace.duration_s:.1f} s, mean {summary['mean_rate'] or 0:.3f}/s, "
        f"input {summary['input_tokens_mean']:.0f} / output {summary['output_tokens_mean']:.0f} tokens mean",
        highlight=False,
    )
