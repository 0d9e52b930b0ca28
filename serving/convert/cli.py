"""``m3bench convert``: rewrite published quantized checkpoints into the layout vLLM serves."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(no_args_is_help=True)
err = Console(stderr=True)


def _parse_size(text: str) -> int:
    units = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    suffix = value[-1:] if value[-1:] in units else ""
    try:
        size = int(float(value.removesuffix(suffix)) * units[suffix])
    except ValueError:
        raise typer.BadParameter(f"--max-shard-size {text!r}: expected a size such as 2GB or 500MB") from None
    if size <= 0:
        raise typer.BadParameter(f"--max-shard-size {text!r} must be positive")
    return size


@app.command()
def grace(
    src: Annotated[Path, typer.Argument(help="The downloaded LLaVA-1.5-7B-GRACE-W4G128-AWQ directory.")],
    dst: Annotated[Path, typer.Argument(help="Where to write the vLLM-servable checkpoint.")],
    vision_tower: Annotated[
        Path | None,
        typer.Option(
            "--vision-tower",
            help="Local openai/clip-vit-large-patch14-336 (config.json + .safetensors); needed when the "
            "checkpoint holds no vision tower weights or its mm_vision_tower is not a local path.",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace DST if it exists.")] = False,
    max_shard_size: Annotated[
        str, typer.Option("--max-shard-size", help="Largest output shard; bounds the memory used.")
    ] = "2GB",
) -> None:
    """Convert GRACE's AWQ-packed LLaVA-1.5 checkpoint into a llava-hf AWQ checkpoint vLLM serves."""
    from serving.convert.grace import convert_grace
    from serving.int4.checkpoint import CheckpointError

    if not src.is_dir():
        raise typer.BadParameter(f"{src}: not a directory")
    shard_bytes = _parse_size(max_shard_size)
    err.print(f"[bold]convert[/]: {src} -> {dst}")
    try:
        report = convert_grace(
            src,
            dst,
            vision_tower=vision_tower,
            force=force,
            max_shard_bytes=shard_bytes,
            progress=lambda m: err.print(f"[bold]convert[/]: {m}"),
        )
    except CheckpointError as e:
        raise typer.BadParameter(str(e)) from None
    except OSError as e:  # disk full, permissions: still one line, still nothing half-written
        raise typer.BadParameter(f"{dst}: {e}") from None
    err.print(
        f"[bold]convert[/]: done in {report.seconds:.1f} s, {report.output_bytes / 1e9:.2f} GB in "
        f"{report.output_shards} shard(s), peak RSS {report.peak_rss_bytes / 2**30:.2f} GiB"
    )
    print(json.dumps(asdict(report), indent=2))
