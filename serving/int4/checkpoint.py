"""Whole-checkpoint INT4 operations: read the quantized linears of an AWQ or GPTQ checkpoint back to
their integer form, and write the *dequantized twin* (same model, every quantized linear replaced by
its reference dequantization in BF16) that INT4 kernels are checked against."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from serving.int4.pack import Int4Weight, dequantize, unpack_awq, unpack_gptq

QUANT_SUFFIXES = ("qweight", "qzeros", "scales", "g_idx")


class CheckpointError(ValueError):
    """A checkpoint that is not what its config says; the message names the file or tensor."""


def read_config(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{model_dir}: no config.json (not a model directory)")
    try:
        config: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: invalid JSON ({e})") from e
    return config


def _shards(model_dir: Path) -> list[Path]:
    shards = sorted(model_dir.glob("*.safetensors"))
    if not shards:
        raise CheckpointError(f"{model_dir}: no .safetensors weights")
    return shards


def load_tensors(model_dir: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for shard in _shards(model_dir):
        try:
            with safe_open(str(shard), framework="pt") as f:
                for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                    tensors[key] = f.get_tensor(key)
        except Exception as e:  # safetensors raises its own error types for corrupt headers
            raise CheckpointError(f"{shard}: cannot read safetensors ({e})") from e
    return tensors


def quantized_linears(
    tensors: dict[str, torch.Tensor], quant_method: str
) -> Iterator[tuple[str, Int4Weight]]:
    """Yield ``(prefix, Int4Weight)`` for every quantized linear (``prefix.qweight`` present)."""
    for key in sorted(k for k in tensors if k.endswith(".qweight")):
        prefix = key.removesuffix(".qweight")
        missing = [s for s in ("qzeros", "scales") if f"{prefix}.{s}" not in tensors]
        if missing:
            raise CheckpointError(f"{prefix}: qweight without {', '.join(missing)}")
        try:
            if quant_method == "awq":
                w = unpack_awq(tensors[key], tensors[f"{prefix}.qzeros"], tensors[f"{prefix}.scales"])
            elif quant_method == "gptq":
                w = unpack_gptq(
                    tensors[key],
                    tensors[f"{prefix}.qzeros"],
                    tensors[f"{prefix}.scales"],
                    tensors.get(f"{prefix}.g_idx"),
                )
            else:
                raise CheckpointError(f"unknown quantization {quant_method!r} (expected awq or gptq)")
        except ValueError as e:
            if isinstance(e, CheckpointError):
                raise
            raise CheckpointError(f"{prefix}: {e}") from e
        yield prefix, w


def dequantize_checkpoint(src: Path, dst: Path, dtype: torch.dtype = torch.bfloat16) -> int:
    """Write the dequantized twin of ``src`` to ``dst``; returns the number of linears converted."""
    config = read_config(src)
    qc = config.pop("quantization_config", None)
    if not qc:
        raise CheckpointError(f"{src}: config.json has no quantization_config")
    tensors = load_tensors(src)
    out = {k: v for k, v in tensors.items() if k.rsplit(".", 1)[-1] not in QUANT_SUFFIXES}
    count = 0
    for prefix, w in quantized_linears(tensors, qc.get("quant_method", "")):
        out[f"{prefix}.weight"] = dequantize(w, dtype).contiguous()
        count += 1
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and f.suffix != ".safetensors" and f.name != "config.json":
            shutil.copy2(f, dst / f.name)
    (dst / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    save_file(out, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return count
