"""Deterministic weights: every tensor is drawn from its own generator, seeded by the model seed and
the tensor's name, so bytes depend on nothing but (seed, name, shape) — not on library versions or
the order modules are created in."""

from __future__ import annotations

import hashlib

import numpy as np
import torch

INIT_STD = 0.02


def _rng(seed: int, name: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return np.random.Generator(np.random.PCG64(int.from_bytes(digest[:8], "little")))


def init_tensor(seed: int, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    leaf = name.rsplit(".", 1)[-1]
    is_norm = any(t in name for t in ("norm", "layrnorm", "ln_q")) and leaf == "weight"
    if is_norm:
        return torch.ones(shape, dtype=dtype)
    if leaf == "bias":
        return torch.zeros(shape, dtype=dtype)
    values = _rng(seed, name).standard_normal(shape, dtype=np.float32) * INIT_STD
    return torch.from_numpy(values).to(dtype)
