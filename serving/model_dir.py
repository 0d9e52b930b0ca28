"""Check a model directory before an engine is started on it, so that a wrong path, an unknown
quantization or a corrupt weights file is reported in one line instead of a vLLM traceback minutes
later."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from safetensors import safe_open

from serving.int4.checkpoint import CheckpointError, read_config

KNOWN_QUANTIZATIONS = ("awq", "gptq", "compressed-tensors")


@dataclass(frozen=True)
class ModelDirInfo:
    path: Path
    architecture: str
    quantization: str  # "none" for unquantized checkpoints
    shards: int


def check_model_dir(path: Path) -> ModelDirInfo:
    """Validate ``path`` as a servable checkpoint; raises :class:`CheckpointError` with one line."""
    if not path.exists():
        raise CheckpointError(f"{path}: no such model directory")
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a directory")
    config = read_config(path)
    archs = config.get("architectures") or []
    if not archs:
        raise CheckpointError(f"{path / 'config.json'}: no 'architectures' entry")
    qc = config.get("quantization_config")
    quant = "none"
    if qc is not None:
        quant = str(qc.get("quant_method", "")).lower()
        if quant not in KNOWN_QUANTIZATIONS:
            raise CheckpointError(
                f"{path / 'config.json'}: unknown quantization {quant!r} "
                f"(expected one of {', '.join(KNOWN_QUANTIZATIONS)})"
            )
    shards = sorted(path.glob("*.safetensors"))
    if not shards:
        raise CheckpointError(f"{path}: no .safetensors weights")
    for shard in shards:
        try:
            with safe_open(str(shard), framework="pt") as f:
                keys = list(f.keys())
        except Exception as e:  # safetensors raises its own error types for bad headers
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise CheckpointError(f"{shard}: corrupt safetensors file ({first})") from e
        if not keys:
            raise CheckpointError(f"{shard}: safetensors file holds no tensors")
    return ModelDirInfo(path=path, architecture=str(archs[0]), quantization=quant, shards=len(shards))
