"""The CPU int4 kernel inside vLLM's own AWQ and GPTQ linear methods: vLLM's kernel selection picks
the plugin's kernel, the checkpoint tensors go through vLLM's own AWQ->standard conversion, the
weights stay packed at 4 bits, and the layer computes x @ dequant(W).T."""

from __future__ import annotations

from typing import Any

import pytest
import torch

pytest.importorskip("vllm")

from serving.int4 import dequantize, pack_awq, pack_gptq, quantize_rtn

N, K, GROUP = 256, 512, 128


@pytest.fixture(autouse=True)
def _torch_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("M3BENCH_CPU_INT4", "torch")
    from serving.int4_cpu.plugin import register

    register()


@pytest.fixture(autouse=True)
def _single_process_tp(monkeypatch: pytest.MonkeyPatch) -> None:
    # vLLM parameters ask the tensor-parallel group for their rank; a unit test is TP rank 0 of 1.
    import vllm.model_executor.parameter as params

    monkeypatch.setattr(params, "get_tensor_model_parallel_rank", lambda: 0)
    monkeypatch.setattr(params, "get_tensor_model_parallel_world_size", lambda: 1)


def _loader(param: torch.nn.Parameter, loaded: torch.Tensor) -> None:
    param.data.copy_(loaded)


def _build_layer(quant_method: str, tensors: dict[str, torch.Tensor]) -> tuple[Any, torch.nn.Module]:
    from vllm.config import VllmConfig, set_current_vllm_config

    if quant_method == "awq":
        from vllm.model_executor.layers.quantization.auto_awq import (
            AutoAWQConfig,
            AutoAWQMarlinLinearMethod,
        )

        cfg = AutoAWQConfig.from_config(
            {"quant_method": "awq", "bits": 4, "group_size": GROUP, "zero_point": True, "version": "gemm"}
        )
        method: Any = AutoAWQMarlinLinearMethod(cfg)
    else:
        from vllm.model_executor.layers.quantization.auto_gptq import (
            AutoGPTQConfig,
            AutoGPTQLinearMethod,
        )

        cfg = AutoGPTQConfig.from_config(
            {"quant_method": "gptq", "bits": 4, "group_size": GROUP, "sym": True, "desc_act": False}
        )
        method = AutoGPTQLinearMethod(cfg)
    layer = torch.nn.Module()
    with set_current_vllm_config(VllmConfig()):
        method.create_weights(layer, K, [N], K, N, torch.bfloat16, weight_loader=_loader)
        for name, value in tensors.items():
            if name != "g_idx" or hasattr(layer, "g_idx"):
                getattr(layer, name).data.copy_(value)  # what the loader does at TP size 1
        method.process_weights_after_loading(layer)
    return method, layer


@pytest.mark.parametrize("quant_method", ["awq", "gptq"])
def test_vllm_linear_method_runs_on_the_torch_int4_kernel(quant_method: str) -> None:
    from serving.int4_cpu.kernel import TorchInt4CPULinearKernel

    g = torch.Generator().manual_seed(1)
    w = torch.randn(N, K, generator=g) * 0.05
    q = quantize_rtn(w, GROUP, symmetric=quant_method == "gptq")
    tensors = pack_awq(q) if quant_method == "awq" else pack_gptq(q)
    method, layer = _build_layer(quant_method, tensors)

    assert isinstance(method.kernel, TorchInt4CPULinearKernel)
    # Resident weight: [N, K/2] uint8 + a (scale, offset) pair per group and column.
    assert layer.int4_packed.dtype == torch.uint8
    assert layer.int4_packed.numel() == N * K // 2
    assert layer.qweight is None

    x = torch.randn(5, K, generator=g).to(torch.bfloat16)
    y = method.apply(layer, x)
    ref = x.float() @ dequantize(q).t()
    assert y.shape == (5, N)
    assert y.dtype == torch.bfloat16
    # bf16 activations and bf16 scale/offset: relative error at the level of bf16 rounding.
    rel = (y.float() - ref).abs().max() / ref.abs().max()
    assert rel < 1e-2, f"relative error {rel:.2e}"


def test_kernel_declines_when_native_kernel_is_selected(monkeypatch: pytest.MonkeyPatch) -> None:
    from vllm.model_executor.kernels.linear.mixed_precision.MPLinearKernel import MPLinearLayerConfig
    from vllm.scalar_type import scalar_types

    from serving.int4_cpu.kernel import TorchInt4CPULinearKernel

    cfg = MPLinearLayerConfig((K, N), (K, N), scalar_types.uint4, torch.bfloat16, GROUP, True, False)
    assert TorchInt4CPULinearKernel.can_implement(cfg) == (True, None)
    monkeypatch.setenv("M3BENCH_CPU_INT4", "native")
    ok, reason = TorchInt4CPULinearKernel.can_implement(cfg)
    assert not ok
    assert reason is not None
    assert "native" in reason
    odd = MPLinearLayerConfig((K, 40), (K, 40), scalar_types.uint4, torch.bfloat16, GROUP, True, False)
    monkeypatch.setenv("M3BENCH_CPU_INT4", "torch")
    assert TorchInt4CPULinearKernel.can_implement(odd)[0] is False


def test_backend_env_var_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    from serving.int4_cpu.select import selected_backend

    monkeypatch.setenv("M3BENCH_CPU_INT4", "fastest")
    with pytest.raises(ValueError, match="expected auto, torch or native"):
        selected_backend()
