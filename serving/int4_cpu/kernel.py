"""A vLLM mixed-precision linear kernel for int4 weights on CPU, built on PyTorch's
``_convert_weight_to_int4pack_for_cpu`` / ``_weight_int4pack_mm_for_cpu``.

vLLM hands every MPLinearKernel the GPTQ-like standard layout (AWQ checkpoints are converted before
``process_weights_after_loading``): ``qweight[K/8, N]`` int32 packed along the input dim, ``scales[G, N]``
and, for asymmetric (AWQ) weights, ``qzeros[N/8, G]`` packed along the output dim. The weights stay
packed at 4 bits in memory: ``[N, K/2]`` uint8 plus one bf16 (scale, offset) pair per group and column.

PyTorch's op computes ``w = (q - 8) * scale + offset``; a zero point ``z`` becomes
``offset = (8 - z) * scale``, so the result equals the reference ``(q - z) * scale`` up to rounding.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from vllm.model_executor.kernels.linear.mixed_precision.MPLinearKernel import (
    MPLinearKernel,
    MPLinearLayerConfig,
)
from vllm.platforms import current_platform
from vllm.scalar_type import scalar_types

from serving.int4_cpu.select import Int4Backend, selected_backend

logger = logging.getLogger(__name__)

_SHIFTS = torch.arange(0, 32, 4, dtype=torch.int32)
_GROUP_SIZES = (32, 64, 128, 256)
_ACT_TYPES = (torch.bfloat16, torch.float16, torch.float32)
# The tile PyTorch's CPU int4 packing uses along K; 2 is what its own int4 paths use on CPU.
_INNER_K_TILES = 2


def _unpack_dim0(packed: torch.Tensor) -> torch.Tensor:
    """int32 ``[R, C]`` packed along dim 0 (8 nibbles per word, natural order) -> int32 ``[8R, C]``."""
    r, c = packed.shape
    nibbles = (packed.unsqueeze(1) >> _SHIFTS.view(1, 8, 1)) & 0xF  # [R, 8, C]
    return nibbles.reshape(r * 8, c)


class TorchInt4CPULinearKernel(MPLinearKernel):
    """W4A16 on CPU through PyTorch's int4pack matmul (AWQ with zero points, GPTQ symmetric)."""

    @classmethod
    def get_min_capability(cls) -> int:
        return -1

    @classmethod
    def can_implement(cls, c: MPLinearLayerConfig) -> tuple[bool, str | None]:
        if not current_platform.is_cpu():
            return False, "only for CPUs"
        if selected_backend() is not Int4Backend.TORCH:
            return False, "vLLM's native CPU int4 kernel is available (M3BENCH_CPU_INT4=auto)"
        if c.weight_type not in (scalar_types.uint4, scalar_types.uint4b8):
            return False, f"weight type {c.weight_type} is not 4-bit"
        if c.has_g_idx:
            return False, "GPTQ act-order (desc_act) is not supported"
        if c.group_size not in _GROUP_SIZES:
            return False, f"group size {c.group_size} not in {_GROUP_SIZES}"
        if c.act_type not in _ACT_TYPES:
            return False, f"activation type {c.act_type} not supported"
        k, n = c.partition_weight_shape
        if k % c.group_size or n % 16:
            return False, f"shape K={k}, N={n}: need K % group_size == 0 and N % 16 == 0"
        return True, None

    def process_weights_after_loading(self, layer: torch.nn.Module) -> None:
        qweight = getattr(layer, self.w_q_name)
        scales = getattr(layer, self.w_s_name).data  # [G, N]
        act_dtype = self.config.act_type
        q = _unpack_dim0(qweight.data).t().contiguous()  # [N, K] values 0..15
        if self.config.zero_points:
            assert self.w_zp_name is not None
            zeros = _unpack_dim0(getattr(layer, self.w_zp_name).data).t().to(torch.float32)  # [G, N]
        else:
            zeros = torch.full(scales.shape, 8.0)  # uint4b8: symmetric around 8
        s = scales.to(torch.float32)
        scale_and_offset = torch.stack([s, (8.0 - zeros) * s], dim=-1).to(act_dtype).contiguous()
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, _INNER_K_TILES)

        layer.int4_packed = torch.nn.Parameter(packed, requires_grad=False)
        layer.int4_scale_and_offset = torch.nn.Parameter(scale_and_offset, requires_grad=False)
        # Drop the loaded tensors so only the packed copy stays resident.
        for name in (self.w_q_name, self.w_s_name, self.w_zp_name, self.w_gidx_name):
            if name is not None and hasattr(layer, name):
                delattr(layer, name)
                setattr(layer, name, None)

    def apply_weights(
        self,
        layer: torch.nn.Module,
        x: torch.Tensor,
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        packed: torch.Tensor = layer.int4_packed  # type: ignore[assignment]
        scale_and_offset: torch.Tensor = layer.int4_scale_and_offset  # type: ignore[assignment]
        out_shape = (*x.shape[:-1], packed.shape[0])
        x2 = x.reshape(-1, x.shape[-1])
        dtype = scale_and_offset.dtype
        y: torch.Tensor = torch.ops.aten._weight_int4pack_mm_for_cpu(
            x2.to(dtype), packed, self.config.group_size, scale_and_offset
        )
        if bias is not None:
            y = y + bias
        return y.to(x.dtype).reshape(out_shape)


def describe(layer: Any) -> str:
    return f"{type(layer).__name__}: int4 packed {tuple(layer.int4_packed.shape)}"
