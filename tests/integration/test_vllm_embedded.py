"""Every embedded model on a real vLLM engine on this CPU: image + text chat generation for BF16,
AWQ and GPTQ; INT4 logits against the dequantized BF16 twin; which int4 kernel serves on this CPU.

INT4 models run with vLLM's AVX2 kernel library (emulated on AVX-512 hosts, see
tests/support/emulate_avx2), where vLLM's own W4A16 kernel does not exist: the configuration of
upstream issue #55613 that m3bench's plugin exists for.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from serving.embedded import FAMILIES, VARIANTS, BuiltModel, build_models
from serving.embedded.build import _build_one
from serving.int4.checkpoint import dequantize_checkpoint
from tests.support.engine import run_probe

pytestmark = pytest.mark.slow

# Max |logprob(INT4) - logprob(twin)| over every prompt position. Both compute in bf16; the int4
# kernel dequantizes inside the matmul and the twin multiplies stored bf16 weights, so they differ
# by bf16 rounding only (measured: max 0.012, mean 0.002 on tiny-llava-awq).
LOGPROB_TOLERANCE = 0.05
IMAGE_TOKENS_MIN = {"tiny-llava": 256, "tiny-qwen2vl": 16}

_probes: dict[str, dict[str, Any]] = {}


@pytest.fixture(scope="module")
def models() -> dict[str, BuiltModel]:
    return {m.name: m for m in build_models()}


def _probe(model: BuiltModel, tmp: Path) -> dict[str, Any]:
    if model.name not in _probes:
        run = run_probe(model.path, tmp / f"{model.name}.json", emulate_avx2=model.quantization != "none")
        assert run.result is not None, f"vLLM failed on {model.name}:\n{run.stderr}"
        _probes[model.name] = run.result
    return _probes[model.name]


ALL = [f"{f}-{v}" for f in ("tiny-llava", "tiny-qwen2vl") for v in ("bf16", "awq", "gptq")]
ALL += ["tiny-qwen2vl-awq-g32"]  # group 32: one engine start proves the finer grouping loads too
INT4 = [n for n in ALL if not n.endswith("bf16")]
# One twin per layout, across both families (each twin costs an engine start, ~40 s).
TWINS = ["tiny-llava-awq", "tiny-qwen2vl-gptq"]


@pytest.mark.parametrize("name", ALL)
def test_model_generates_from_image_and_text(
    name: str, models: dict[str, BuiltModel], tmp_path_factory: pytest.TempPathFactory
) -> None:
    result = _probe(models[name], tmp_path_factory.mktemp("probe"))
    family = next(f for f in IMAGE_TOKENS_MIN if name.startswith(f + "-"))
    assert result["prompt_tokens"] > IMAGE_TOKENS_MIN[family], "the image did not reach the prompt"
    assert len(result["output_token_ids"]) >= 1
    if name in INT4:
        assert result["int4_backend"] == "torch"
        assert "TorchInt4CPULinearKernel" in result["linear_kernels"]
        assert result["weight_bytes_lm_linears"] > 0
    else:
        assert result["int4_backend"] is None
        assert "TorchInt4CPULinearKernel" not in result["linear_kernels"]


@pytest.mark.parametrize("name", TWINS)
def test_int4_logits_match_dequantized_twin(
    name: str, models: dict[str, BuiltModel], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The INT4 kernel computes what the same numbers in BF16 compute. On the seeded random init, not the
    trained weights: training's peaked logits amplify the two paths' different BF16 rounding (mean
    |dlogprob| 0.10 on the trained LLaVA), which would hide a kernel bug in noise; on the init a wrong
    packing order, zero point or scale moves every token by whole units and rounding by ~0.01."""
    tmp = tmp_path_factory.mktemp("twin")
    built = models[name]
    family = next(f for f in FAMILIES.values() if f.name == built.family)
    untrained = tmp / f"{name}-init"
    _build_one(family, VARIANTS[built.variant], built.path.parent / "tokenizer", untrained)
    run = run_probe(untrained, tmp / "int4.json", emulate_avx2=True)
    assert run.result is not None, run.stderr
    int4 = run.result
    twin_dir = tmp / f"{name}-twin"
    assert dequantize_checkpoint(untrained, twin_dir) == 4 * 7  # 4 layers x 7 linears
    twin = run_probe(twin_dir, tmp / "twin.json")
    assert twin.result is not None, twin.stderr
    a, b = int4["prompt_logprobs"], twin.result["prompt_logprobs"]
    assert len(a) == len(b) > 100
    diffs = [abs(x - y) for x, y in zip(a, b, strict=True) if not (math.isnan(x) or math.isnan(y))]
    assert max(diffs) < LOGPROB_TOLERANCE, f"max |dlogprob| {max(diffs):.4f}"
    # The twin holds the same numbers in BF16: 4 bits per weight instead of 16, plus group scales.
    ratio = int4["weight_bytes_lm_linears"] / twin.result["weight_bytes_lm_linears"]
    assert ratio < 0.30, f"INT4 LM-linear weights are {ratio:.0%} of BF16"


def test_plugin_selection_on_this_cpu(models: dict[str, BuiltModel], tmp_path: Path) -> None:
    """Left to itself (M3BENCH_CPU_INT4=auto, no emulation), the plugin serves INT4 exactly where
    vLLM's native kernel is missing, and otherwise stays out of the way."""
    from serving.int4_cpu import native_kernel_available

    run = run_probe(models["tiny-llava-awq"].path, tmp_path / "auto.json")
    assert run.result is not None, run.stderr
    if native_kernel_available():
        assert run.result["int4_backend"] == "native"
        assert "TorchInt4CPULinearKernel" not in run.result["linear_kernels"]
    else:
        assert run.result["int4_backend"] == "torch"
        assert "TorchInt4CPULinearKernel" in run.result["linear_kernels"]


def test_without_the_plugin_int4_fails_on_avx2(models: dict[str, BuiltModel], tmp_path: Path) -> None:
    """The upstream failure the plugin exists for: on vLLM's AVX2 kernel library the native W4A16
    op is missing and the first forward pass fails."""
    run = run_probe(models["tiny-qwen2vl-awq"].path, tmp_path / "x.json", backend="native", emulate_avx2=True)
    assert run.returncode != 0
    errors = [line for line in run.stderr.splitlines() if "Error" in line][-5:]
    assert "cpu_gemm_wna16" in run.stderr, "\n".join(errors)
