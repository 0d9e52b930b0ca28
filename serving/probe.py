"""Start a real vLLM engine on one model directory and measure it: start time, an image + text chat
generation, prompt log-probabilities (to compare a model with its twin), decode throughput and the
resident weight memory. Runs in its own process (``python -m serving.probe``) so every probe gets a
fresh engine and a crash in one cannot take down the caller.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PROBE_TEXT = "Write a Python function add(a, b) that returns the sum of a and b."

# Parameters of the LM's linear layers as vLLM names them (fused qkv and gate_up), in either the
# BF16 (``weight``) or the INT4 form (our packed tensors, or vLLM's own names on the native path).
_LM_LINEAR = re.compile(
    r"language_model\..*layers\.\d+\.(self_attn\.(qkv_proj|o_proj)|mlp\.(gate_up_proj|down_proj))\."
)


@dataclass
class ProbeResult:
    model: str
    int4_backend: str | None
    linear_kernels: list[str]
    engine_start_s: float
    prompt_tokens: int
    output_token_ids: list[int]
    output_text: str
    prompt_logprobs: list[float] = field(default_factory=list)
    decode_requests: int = 0
    decode_output_tokens: int = 0
    decode_seconds: float = 0.0
    weight_bytes_total: int = 0
    weight_bytes_lm_linears: int = 0
    worker_rss_bytes: int = 0

    @property
    def output_tokens_per_s(self) -> float:
        return self.decode_output_tokens / self.decode_seconds if self.decode_seconds else 0.0


def _probe_image() -> str:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (448, 336), (245, 245, 240))
    draw = ImageDraw.Draw(img)
    draw.rectangle((20, 20, 428, 316), outline=(20, 20, 20), width=3)
    draw.text((40, 150), "def add(a, b): return a + b", fill=(0, 0, 0))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _weight_bytes(model: Any) -> tuple[int, int, int]:
    """Bytes of weights the model keeps resident: (all, LM linears only, worker RSS).

    vLLM's CPU path hands a BF16 linear's weight to oneDNN (or a packed GEMM kernel), which keeps a
    reordered copy of the same dtype and size, and replaces the parameter by an empty one; such a
    layer is counted as ``out x in x itemsize``. The worker's RSS is returned as a cross-check."""
    import psutil
    import torch

    total = lm = 0
    for mod_name, module in model.named_modules():
        for p_name, p in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            n = p.numel() * p.element_size()
            if p_name == "weight" and p.numel() == 0 and hasattr(module, "cpu_linear"):
                dtype = getattr(module, "params_dtype", torch.bfloat16)
                n = module.output_size_per_partition * module.input_size_per_partition * dtype.itemsize
            total += n
            full = f"{mod_name}.{p_name}"
            if _LM_LINEAR.search(full) or _LM_LINEAR.search("language_model." + full):
                lm += n
    return total, lm, psutil.Process().memory_info().rss


def _linear_kernel_names(model: Any) -> list[str]:
    names = set()
    for module in model.modules():
        method = getattr(module, "quant_method", None)
        kernel = getattr(method, "kernel", None)
        if kernel is not None:
            names.add(type(kernel).__name__)
        elif method is not None:
            names.add(type(method).__name__)
    return sorted(names)


def run(model_dir: str, max_tokens: int, decode_requests: int, max_model_len: int) -> ProbeResult:
    from vllm import LLM, SamplingParams

    from serving.int4_cpu.select import selected_backend

    t0 = time.perf_counter()
    llm = LLM(
        model=model_dir,
        max_model_len=max_model_len,
        max_num_seqs=max(8, decode_requests),
        enforce_eager=True,
        seed=0,
        kv_cache_memory_bytes=256 * 1024 * 1024,
        limit_mm_per_prompt={"image": 1},
    )
    start_s = time.perf_counter() - t0
    messages: list[Any] = [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": _probe_image()}},
                {"type": "text", "text": PROBE_TEXT},
            ],
        }
    ]
    greedy = SamplingParams(max_tokens=max_tokens, temperature=0.0, prompt_logprobs=0)
    out = llm.chat(messages, greedy, use_tqdm=False)[0]
    prompt_lp = [next(iter(d.values())).logprob if d else float("nan") for d in (out.prompt_logprobs or [])][
        1:
    ]  # position 0 has no prediction
    total, lm, rss = llm.apply_model(_weight_bytes)[0]
    kernels = llm.apply_model(_linear_kernel_names)[0]

    result = ProbeResult(
        model=_model_name(model_dir),
        int4_backend=selected_backend().value if "quantization_config" in _config(model_dir) else None,
        linear_kernels=kernels,
        engine_start_s=start_s,
        prompt_tokens=len(out.prompt_token_ids or []),
        output_token_ids=list(out.outputs[0].token_ids),
        output_text=out.outputs[0].text,
        prompt_logprobs=prompt_lp,
        weight_bytes_total=total,
        weight_bytes_lm_linears=lm,
        worker_rss_bytes=rss,
    )
    if decode_requests:
        fixed = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
        batch: list[Any] = [messages] * decode_requests
        llm.chat(batch, fixed, use_tqdm=False)  # warm-up at this batch size
        t1 = time.perf_counter()
        outs = llm.chat(batch, fixed, use_tqdm=False)
        result.decode_seconds = time.perf_counter() - t1
        result.decode_requests = decode_requests
        result.decode_output_tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    return result


def _model_name(model_dir: str) -> str:
    manifest = Path(model_dir) / "m3bench-model.json"
    if manifest.is_file():
        return str(json.loads(manifest.read_text())["name"])
    return Path(model_dir).name


def _config(model_dir: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((Path(model_dir) / "config.json").read_text())
    return data


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("model_dir")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--decode-requests", type=int, default=0)
    ap.add_argument("--max-model-len", type=int, default=2048)
    ap.add_argument("--out", type=Path, required=True, help="write the result JSON here")
    args = ap.parse_args(argv)
    os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")  # apply_model sends a function
    # Run through the importable module, not __main__: apply_model pickles functions by reference.
    from serving import probe  # noqa: PLW0406 - the importable module, see the comment above

    result = probe.run(args.model_dir, args.max_tokens, args.decode_requests, args.max_model_len)
    args.out.write_text(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
