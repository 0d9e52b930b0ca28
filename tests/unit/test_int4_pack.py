"""INT4 packing: exact round trips, the AutoAWQ nibble order, and the RTN error bound."""

from __future__ import annotations

import pytest
import torch

from serving.int4 import dequantize, pack_awq, pack_gptq, quantize_rtn, unpack_awq, unpack_gptq


def _awq_reference_pack(intweight: torch.Tensor) -> torch.Tensor:
    """AutoAWQ's WQLinear_GEMM.from_linear packing loop, transcribed: intweight is [K, N]."""
    order_map = [0, 2, 4, 6, 1, 3, 5, 7]
    k, n = intweight.shape
    qweight = torch.zeros((k, n // 8), dtype=torch.int64)
    for col in range(n // 8):
        for i in range(8):
            qweight[:, col] |= intweight[:, col * 8 + order_map[i]].to(torch.int64) << (i * 4)
    return torch.where(qweight >= 2**31, qweight - 2**32, qweight).to(torch.int32)


def _gptq_reference_pack(intweight: torch.Tensor) -> torch.Tensor:
    """AutoGPTQ's QuantLinear.pack loop (4 bits): intweight is [K, N], packed along K."""
    k, n = intweight.shape
    qweight = torch.zeros((k // 8, n), dtype=torch.int64)
    for row in range(k // 8):
        for j in range(8):
            qweight[row] |= intweight[row * 8 + j].to(torch.int64) << (4 * j)
    return torch.where(qweight >= 2**31, qweight - 2**32, qweight).to(torch.int32)


@pytest.fixture
def weight() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(64, 256, generator=g) * 0.05


@pytest.mark.parametrize("group_size", [32, 64, 128])
def test_awq_pack_matches_autoawq_and_round_trips(weight: torch.Tensor, group_size: int) -> None:
    q = quantize_rtn(weight, group_size, symmetric=False)
    packed = pack_awq(q)
    assert torch.equal(packed["qweight"], _awq_reference_pack(q.q.t().contiguous()))
    assert packed["qweight"].shape == (256, 8)
    assert packed["qzeros"].shape == (256 // group_size, 8)
    back = unpack_awq(packed["qweight"], packed["qzeros"], packed["scales"])
    assert torch.equal(back.q, q.q)
    assert torch.equal(back.zeros, q.zeros)
    assert back.group_size == group_size


def test_gptq_pack_matches_autogptq_and_round_trips(weight: torch.Tensor) -> None:
    q = quantize_rtn(weight, 128, symmetric=True)
    packed = pack_gptq(q)
    assert torch.equal(packed["qweight"], _gptq_reference_pack(q.q.t().contiguous()))
    # v1 format stores zero - 1: a symmetric zero point of 8 is stored as 7 in every nibble.
    assert torch.all(packed["qzeros"] == 0x77777777)
    assert torch.equal(packed["g_idx"], torch.arange(256, dtype=torch.int32) // 128)
    back = unpack_gptq(packed["qweight"], packed["qzeros"], packed["scales"], packed["g_idx"])
    assert torch.equal(back.q, q.q)
    assert torch.all(back.zeros == 8)


@pytest.mark.parametrize("symmetric", [False, True])
def test_rtn_error_is_at_most_half_a_step(weight: torch.Tensor, symmetric: bool) -> None:
    q = quantize_rtn(weight, 64, symmetric=symmetric)
    err = (dequantize(q) - weight).abs().reshape(64, 4, 64)
    step = q.scales.t().to(torch.float32)[..., None]
    assert torch.all(err <= step / 2 + 1e-6)
    assert int(q.q.max()) <= 15


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="multiple of group size"):
        quantize_rtn(torch.zeros(64, 100), 64, symmetric=False)
    g = pack_gptq(quantize_rtn(torch.randn(16, 256), 128, symmetric=True))
    with pytest.raises(ValueError, match="act-order"):
        unpack_gptq(g["qweight"], g["qzeros"], g["scales"], torch.flip(g["g_idx"], [0]))
    a = pack_awq(quantize_rtn(torch.randn(16, 256), 128, symmetric=False))
    with pytest.raises(ValueError, match="inconsistent AWQ"):
        unpack_awq(a["qweight"], a["qzeros"][:1], a["scales"])
