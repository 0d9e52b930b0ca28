"""Read and write safetensors files one tensor at a time, so converting a checkpoint holds about one
tensor in memory, whatever the shard sizes.

The format: 8 bytes little-endian header length, a JSON header ``{name: {dtype, shape, data_offsets},
"__metadata__": {...}}`` padded with spaces, then the tensors' bytes back to back. ``safe_open``
would map the whole source into the process (every page read stays resident until the file is
closed) and ``save_file`` builds a bytes copy of every tensor of a shard before writing; both make the
peak memory a multiple of a shard.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from serving.int4.checkpoint import CheckpointError

DTYPES = {
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F32": torch.float32,
    "F64": torch.float64,
    "I32": torch.int32,
    "I64": torch.int64,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_NAMES = {v: k for k, v in DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024


def _nbytes(dtype: torch.dtype, shape: tuple[int, ...]) -> int:
    """Bytes of a dense tensor of ``shape`` (a 0-d tensor holds one element)."""
    return math.prod(shape) * dtype.itemsize


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a safetensors file, known from its header alone."""

    file: Path
    key: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    offset: int  # absolute position of the first byte in the file

    @property
    def nbytes(self) -> int:
        return _nbytes(self.dtype, self.shape)


def read_header(file: Path) -> list[TensorInfo]:
    """The tensors of one file, in file order; a corrupt or truncated file is refused by name."""
    size = file.stat().st_size
    with file.open("rb") as f:
        head = f.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 0 < length <= min(_MAX_HEADER, size - 8):
            raise CheckpointError(f"{file}: not a safetensors file (bad header length)")
        try:
            header = json.loads(f.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{file}: unreadable safetensors header ({e})") from e
    infos: list[TensorInfo] = []
    base = 8 + length
    for key, meta in header.items():
        if key == "__metadata__":
            continue
        dtype = DTYPES.get(meta.get("dtype"))
        if dtype is None:
            raise CheckpointError(f"{key}: unsupported dtype {meta.get('dtype')!r} in {file.name}")
        start, end = meta["data_offsets"]
        info = TensorInfo(file, key, dtype, tuple(int(d) for d in meta["shape"]), base + start)
        if end - start != info.nbytes or base + end > size:
            raise CheckpointError(
                f"{key}: its bytes in {file.name} are truncated or inconsistent with its shape"
            )
        infos.append(info)
    return sorted(infos, key=lambda i: i.offset)


def read_tensor(info: TensorInfo) -> torch.Tensor:
    buffer = bytearray(info.nbytes)
    with info.file.open("rb") as f:
        f.seek(info.offset)
        if f.readinto(buffer) != info.nbytes:
            raise CheckpointError(f"{info.key}: {info.file.name} ends before its bytes")
    if not buffer:
        return torch.empty(info.shape, dtype=info.dtype)
    return torch.frombuffer(buffer, dtype=info.dtype).reshape(info.shape)


@dataclass(frozen=True)
class OutTensor:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    make: Callable[[], torch.Tensor]  # called once, when the tensor's bytes are written

    @property
    def nbytes(self) -> int:
        return _nbytes(self.dtype, self.shape)


def write_file(path: Path, tensors: Iterable[OutTensor]) -> int:
    """Write ``tensors`` in order, making each only when its turn comes; returns the data bytes."""
    items = list(tensors)
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    position = 0
    for t in items:
        header[t.name] = {
            "dtype": _NAMES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [position, position + t.nbytes],
        }
        position += t.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the reference writer aligns the data to 8 bytes
    with path.open("wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for t in items:
            value = t.make()
            if value.dtype != t.dtype or tuple(value.shape) != t.shape:
                raise CheckpointError(
                    f"{t.name}: made {value.dtype} {list(value.shape)}, header says {t.dtype} {list(t.shape)}"
                )
            if value.numel():  # written from the tensor's own memory, no bytes copy
                f.write(value.contiguous().reshape(-1).view(torch.uint8).numpy().data)
    return position
