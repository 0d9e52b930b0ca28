"""Group-wise INT4 quantization and the AutoAWQ GEMM / AutoGPTQ packed layouts.

Conventions (the ones vLLM, AutoAWQ and AutoGPTQ use):

* A linear layer's weight is ``W[N, K]`` (out_features x in_features); group ``g`` covers input
  columns ``[g*G, (g+1)*G)``. Dequantization is ``W[n, k] = (q[n, k] - z[g, n]) * s[g, n]``.
* **AWQ GEMM** (AutoAWQ ``WQLinear_GEMM``): ``qweight[K, N/8]`` int32 packed along the *output* dim
  in the interleaved nibble order ``[0, 2, 4, 6, 1, 3, 5, 7]``; ``qzeros[K/G, N/8]`` packed the same
  way; ``scales[K/G, N]`` float16. Asymmetric (``zero_point: true``).
* **GPTQ** (AutoGPTQ, ``sym: true``, ``desc_act: false``): ``qweight[K/8, N]`` int32 packed along the
  *input* dim in natural order; ``scales[K/G, N]`` float16; ``qzeros[K/G, N/8]`` packed along the
  output dim in natural order, storing ``z - 1`` (the v1 format quirk), so a symmetric checkpoint
  stores 7 for a zero point of 8; ``g_idx[K]`` = ``k // G``.

Every function is pure and deterministic: same inputs give the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

AWQ_PACK_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
_PACK = 8  # int4 values per int32
_SHIFTS = torch.arange(0, 32, 4, dtype=torch.int64)


@dataclass(frozen=True)
class Int4Weight:
    """Quantized values of one ``[N, K]`` weight: ``q[N, K]`` in 0..15, per-group ``zeros[G, N]``
    (integers 0..15) and ``scales[G, N]``."""

    q: torch.Tensor
    zeros: torch.Tensor
    scales: torch.Tensor
    group_size: int

    @property
    def shape(self) -> tuple[int, int]:
        n, k = self.q.shape
        return int(n), int(k)


def _check_shape(n: int, k: int, group_size: int) -> None:
    if k % group_size:
        raise ValueError(f"in_features {k} is not a multiple of group size {group_size}")
    if n % _PACK or k % _PACK:
        raise ValueError(f"weight [{n}, {k}]: both dims must be multiples of {_PACK} to pack int4")


def quantize_rtn(weight: torch.Tensor, group_size: int, *, symmetric: bool) -> Int4Weight:
    """Round-to-nearest 4-bit quantization of ``weight[N, K]``, one scale/zero per (group, row).

    Asymmetric: zero point in 0..15 from the group's min/max. Symmetric: zero point 8 and
    ``scale = max|w| / 7`` (GPTQ's ``sym=True``)."""
    n, k = weight.shape
    _check_shape(n, k, group_size)
    w = weight.detach().to(torch.float32).reshape(n, k // group_size, group_size)
    if symmetric:
        scales = (w.abs().amax(dim=-1) / 7.0).clamp(min=1e-8)
        zeros = torch.full_like(scales, 8.0)
    else:
        w_min = w.amin(dim=-1).clamp(max=0.0)
        w_max = w.amax(dim=-1).clamp(min=0.0)
        scales = ((w_max - w_min) / 15.0).clamp(min=1e-8)
        zeros = torch.round(-w_min / scales).clamp(0, 15)
    # Scales are stored as float16; quantize against the stored value so that dequantizing the
    # checkpoint reproduces exactly what was rounded here.
    scales = scales.to(torch.float16).to(torch.float32)
    q = torch.round(w / scales[..., None]) + zeros[..., None]
    q = q.clamp(0, 15).to(torch.uint8).reshape(n, k)
    return Int4Weight(
        q=q,
        zeros=zeros.to(torch.uint8).t().contiguous(),  # [G, N]
        scales=scales.to(torch.float16).t().contiguous(),  # [G, N]
        group_size=group_size,
    )


def dequantize(w: Int4Weight, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Reference dequantization ``(q - z) * s`` in float32, returned as ``[N, K]`` in ``dtype``."""
    n, k = w.shape
    g = w.group_size
    q = w.q.to(torch.float32).reshape(n, k // g, g)
    z = w.zeros.t().to(torch.float32)[..., None]
    s = w.scales.t().to(torch.float32)[..., None]
    return ((q - z) * s).reshape(n, k).to(dtype)


def _pack_last_dim(values: torch.Tensor, order: tuple[int, ...] = tuple(range(_PACK))) -> torch.Tensor:
    """Pack groups of 8 nibbles along the last dim into int32; nibble ``i`` of each word holds the
    value at position ``order[i]`` of the group."""
    *lead, m = values.shape
    v = values.to(torch.int64).reshape(*lead, m // _PACK, _PACK)[..., list(order)]
    word = (v << _SHIFTS).sum(dim=-1)
    return _to_int32(word)


def _unpack_last_dim(words: torch.Tensor, order: tuple[int, ...] = tuple(range(_PACK))) -> torch.Tensor:
    *lead, m = words.shape
    nibbles = (words.to(torch.int64)[..., None] >> _SHIFTS) & 0xF  # [..., m, 8] in word order
    inverse = [order.index(j) for j in range(_PACK)]
    return nibbles[..., inverse].reshape(*lead, m * _PACK).to(torch.uint8)


def _to_int32(word: torch.Tensor) -> torch.Tensor:
    # Words are built in int64 (0..2^32-1); reinterpret the low 32 bits as signed int32.
    return torch.where(word >= 2**31, word - 2**32, word).to(torch.int32)


def pack_awq(w: Int4Weight) -> dict[str, torch.Tensor]:
    """AutoAWQ GEMM tensors ``qweight[K, N/8]``, ``qzeros[K/G, N/8]``, ``scales[K/G, N]``."""
    return {
        "qweight": _pack_last_dim(w.q.t().contiguous(), AWQ_PACK_ORDER),
        "qzeros": _pack_last_dim(w.zeros, AWQ_PACK_ORDER),
        "scales": w.scales.clone(),
    }


def unpack_awq(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor) -> Int4Weight:
    k, n8 = qweight.shape
    g_count = qzeros.shape[0]
    if scales.shape != (g_count, n8 * _PACK) or qzeros.shape[1] != n8 or k % g_count:
        raise ValueError(
            f"inconsistent AWQ tensors: qweight {tuple(qweight.shape)}, qzeros {tuple(qzeros.shape)}, "
            f"scales {tuple(scales.shape)}"
        )
    q = _unpack_last_dim(qweight, AWQ_PACK_ORDER).t().contiguous()
    zeros = _unpack_last_dim(qzeros, AWQ_PACK_ORDER)
    return Int4Weight(q=q, zeros=zeros, scales=scales, group_size=k // g_count)


def pack_gptq(w: Int4Weight) -> dict[str, torch.Tensor]:
    """AutoGPTQ v1 tensors ``qweight[K/8, N]``, ``qzeros[K/G, N/8]`` (stores z-1), ``scales``,
    ``g_idx``."""
    _, k = w.shape
    return {
        # Pack along K: rows of q[N, K] hold consecutive k, so pack them and transpose.
        "qweight": _pack_last_dim(w.q).t().contiguous(),
        "qzeros": _pack_last_dim((w.zeros.to(torch.int64) - 1) & 0xF),
        "scales": w.scales.clone(),
        "g_idx": (torch.arange(k, dtype=torch.int32) // w.group_size).to(torch.int32),
    }


def unpack_gptq(
    qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor, g_idx: torch.Tensor | None = None
) -> Int4Weight:
    k8, n = qweight.shape
    g_count = scales.shape[0]
    k = k8 * _PACK
    if scales.shape != (g_count, n) or qzeros.shape != (g_count, n // _PACK) or k % g_count:
        raise ValueError(
            f"inconsistent GPTQ tensors: qweight {tuple(qweight.shape)}, qzeros {tuple(qzeros.shape)}, "
            f"scales {tuple(scales.shape)}"
        )
    group_size = k // g_count
    if g_idx is not None and not torch.equal(
        g_idx.to(torch.int64), torch.arange(k, dtype=torch.int64) // group_size
    ):
        raise ValueError("GPTQ act-order (non-trivial g_idx) is not supported")
    q = _unpack_last_dim(qweight.t().contiguous())  # [N, K]
    zeros = ((_unpack_last_dim(qzeros).to(torch.int64) + 1) & 0xF).to(torch.uint8)
    return Int4Weight(q=q, zeros=zeros, scales=scales, group_size=group_size)
