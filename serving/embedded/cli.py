"""``m3bench models``: build the embedded models, list them, probe one on a real vLLM engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from serving.embedded.build import build_models

app = typer.Typer(no_args_is_help=True)
err = Console(stderr=True)

CacheOpt = Annotated[
    Path | None, typer.Option("--cache-dir", help="Model cache (default $M3BENCH_CACHE/models).")
]


@app.command()
def build(
    only: Annotated[list[str] | None, typer.Option("--only", help="Build only these models.")] = None,
    cache_dir: CacheOpt = None,
) -> None:
    """Build (or reuse) the embedded models and print where they are."""
    try:
        models = build_models(only, cache_dir, progress=lambda m: err.print(f"[bold]models[/]: {m}"))
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    table = Table("model", "quantization", "built (s)", "sha256", "path")
    for m in models:
        table.add_row(m.name, m.quantization, f"{m.build_seconds:.1f}", m.content_sha256[:16], str(m.path))
    Console().print(table)


@app.command("path")
def path_of(name: str, cache_dir: CacheOpt = None) -> None:
    """Print the directory of one embedded model (building it if needed)."""
    try:
        (model,) = build_models([name], cache_dir)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    print(model.path)


@app.command()
def probe(
    model: Annotated[str, typer.Argument(help="An embedded model name or a model directory.")],
    decode_requests: Annotated[int, typer.Option(help="Batch size of the throughput run.")] = 8,
    max_tokens: Annotated[int, typer.Option(help="Tokens per request.")] = 64,
    cache_dir: CacheOpt = None,
) -> None:
    """Start a real vLLM engine on MODEL and report start time, throughput and weight memory."""
    model_dir = Path(model)
    if not model_dir.exists() and ("/" in model or model.startswith(".")):
        raise typer.BadParameter(f"{model_dir}: no such model directory")
    if not model_dir.is_dir():
        try:
            (built,) = build_models([model], cache_dir)
        except ValueError as e:
            raise typer.BadParameter(str(e)) from None
        model_dir = built.path
    from serving.int4.checkpoint import CheckpointError
    from serving.model_dir import check_model_dir

    try:
        check_model_dir(model_dir)
    except CheckpointError as e:
        raise typer.BadParameter(str(e)) from None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "probe.json"
        cmd = [sys.executable, "-m", "serving.probe", str(model_dir), "--out", str(out)]
        cmd += ["--decode-requests", str(decode_requests), "--max-tokens", str(max_tokens)]
        err.print(f"[bold]probe[/]: starting vLLM on {model_dir} (about a minute)")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy(), check=False)
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            err.print(f"[red]error[/]: vLLM failed on {model_dir}: {tail[0]}")
            raise typer.Exit(1)
        print(json.dumps(json.loads(out.read_text()), indent=2))
