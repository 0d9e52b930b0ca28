"""A converted GRACE checkpoint (tiny, written in GRACE's layout) serves on a real vLLM engine on this
CPU, and vLLM's prompt log-probabilities match a float32 transformers forward pass of
``LlavaForConditionalGeneration`` on the reference-dequantized weights.

Tolerance: 0.05 nats on every prompt position. vLLM runs the checkpoint's float16 activations through
its INT4 kernel; the reference runs float32 on ``(q - z) * s``. Measured on the AVX-512 dev box: max
0.0085, mean 0.0025 with vLLM's native CPU kernel; max 0.0096, mean 0.0023 with m3bench's torch kernel
(``M3BENCH_CPU_INT4=torch``, the AVX2 path). One engine start.
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import AutoProcessor, LlavaForConditionalGeneration

from serving.convert import convert_grace
from serving.int4.checkpoint import dequantize_checkpoint
from serving.probe import PROBE_TEXT, _probe_image
from tests.support.engine import run_probe
from tests.support.grace_fixture import GraceDims, write_grace_checkpoint

TOLERANCE_NATS = 0.05


def reference_logprobs(model_dir: Path, twin: Path) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(token ids, log-prob of each next prompt token, greedy next token) from transformers, fp32."""
    dequantize_checkpoint(model_dir, twin, torch.float32)
    model = LlavaForConditionalGeneration.from_pretrained(str(twin), dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(str(model_dir))
    image = Image.open(io.BytesIO(base64.b64decode(_probe_image().split(",", 1)[1]))).convert("RGB")
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROBE_TEXT}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    # vLLM 0.29's LLM.chat tokenizes multimodal chats with add_special_tokens=True, on top of the
    # template's <s> (its OpenAI server does not); compare on the ids the engine really saw.
    inputs = processor(text=text, images=image, return_tensors="pt", add_special_tokens=True)
    with torch.no_grad():
        logits = model(**inputs).logits[0].float()
    ids = inputs["input_ids"][0]
    logprobs = torch.log_softmax(logits, dim=-1)[:-1].gather(-1, ids[1:, None])[:, 0]
    return ids, logprobs, int(logits[-1].argmax())


@pytest.mark.slow
def test_converted_grace_serves_on_vllm_and_matches_reference(tmp_path: Path) -> None:
    fx = write_grace_checkpoint(tmp_path / "src", GraceDims())
    model_dir = tmp_path / "grace-llava-tiny-w4g128-awq-vllm"
    report = convert_grace(fx.src, model_dir)
    assert report.quantized_linears == 14

    # M3BENCH_CPU_INT4=torch runs m3bench's int4 kernel (the AVX2 path) instead of vLLM's native one
    backend = os.environ.get("M3BENCH_CPU_INT4", "auto")
    run = run_probe(model_dir, tmp_path / "probe.json", max_tokens=4, backend=backend)
    assert run.result is not None, run.stderr[-3000:]
    probe = run.result
    assert probe["weight_bytes_lm_linears"] > 0

    ids, ref, greedy = reference_logprobs(model_dir, tmp_path / "twin")
    assert probe["prompt_tokens"] == len(ids)
    served = torch.tensor(probe["prompt_logprobs"])
    error = (served - ref).abs()
    backend = f"{probe['int4_backend']} {probe['linear_kernels']}"
    print(
        f"\ngrace logits: {len(ids)} prompt tokens, backend {backend}, max |dlogprob| {error.max():.4f} "
        f"nats, mean {error.mean():.4f}, engine start {probe['engine_start_s']:.0f} s"
    )
    assert float(error.max()) < TOLERANCE_NATS
    assert probe["output_token_ids"][0] == greedy
