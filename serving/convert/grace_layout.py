"""The GRACE LLaVA-1.5 AWQ release as it lies on disk, and how each of its tensors maps onto the
layout vLLM's ``LlavaForConditionalGeneration`` loads.

GRACE writes the release with its ``deploy_awq_llava.py --save-dir``: LLaVA's own
``LlavaLlamaForCausalLM.save_pretrained`` after ``convert_llava_to_awq`` swapped every language-model
linear for AutoAWQ's ``WQLinear_GEMM`` (vendored verbatim from AutoAWQ 0.2.9), plus an
``awq_quantized_modules.json`` ``{"bits", "group_size", "modules"}``. Source names (original LLaVA):

* ``model.embed_tokens.weight``, ``model.norm.weight``, ``lm_head.weight``;
* ``model.layers.N.{input_layernorm,post_attention_layernorm}.weight``;
* ``model.layers.N.self_attn.{q,k,v,o}_proj`` and ``model.layers.N.mlp.{gate,up,down}_proj`` as
  ``.qweight`` int32 ``[K, N/8]``, ``.qzeros`` int32 ``[K/G, N/8]``, ``.scales`` fp16 ``[K/G, N]``;
* ``model.mm_projector.{0,2}.{weight,bias}`` (``mlp2x_gelu``: Linear, GELU, Linear);
* ``model.vision_tower.vision_tower.vision_model.*`` (the CLIP tower, when it was loaded at save time).

Target names are the llava-hf ones (``transformers``' ``convert_llava_weights_to_hf.py``
``KEYS_TO_MODIFY_MAPPING``), which vLLM loads as they are.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from serving.convert.safetensors_io import TensorInfo, read_header
from serving.int4.checkpoint import CheckpointError

LM_LINEARS = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)
AWQ_SUFFIXES = ("qweight", "qzeros", "scales")
AWQ_META_FILE = "awq_quantized_modules.json"
# Buffers some transformers versions wrote into checkpoints; they are recomputed at load time.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq", "embeddings.position_ids")

# Original LLaVA prefix -> llava-hf prefix, first match wins.
_RENAMES = (
    ("model.vision_tower.vision_tower.vision_model.", "vision_tower.vision_model."),
    ("model.mm_projector.0.", "multi_modal_projector.linear_1."),
    ("model.mm_projector.2.", "multi_modal_projector.linear_2."),
    ("model.", "language_model.model."),
    ("lm_head.", "language_model.lm_head."),
)
CLIP_PREFIX = ("vision_model.", "vision_tower.vision_model.")  # a local CLIP checkpoint's names
# A CLIP checkpoint's vision tower keys: vision_model.* (transformers 4, openai's files) or bare names;
# text_model.*, the projections and logit_scale are not part of LLaVA.
CLIP_TOWER_KEYS = ("vision_model.", "embeddings.", "encoder.", "pre_layrnorm.", "post_layernorm.")

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


class ConversionError(CheckpointError):
    """A source checkpoint the converter refuses; the message names the file or tensor."""


@dataclass(frozen=True)
class TextSpec:
    """The Vicuna/LLaMA language model's dimensions, from the LLaVA config.json."""

    vocab_size: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TextSpec:
        def need(key: str) -> int:
            value = config.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConversionError(f"config.json: {key} must be a positive integer, got {value!r}")
            return value

        heads = need("num_attention_heads")
        spec = cls(
            vocab_size=need("vocab_size"),
            hidden=need("hidden_size"),
            intermediate=need("intermediate_size"),
            layers=need("num_hidden_layers"),
            heads=heads,
            kv_heads=int(config.get("num_key_value_heads") or heads),
        )
        if spec.hidden % heads or heads % spec.kv_heads:
            raise ConversionError(
                f"config.json: hidden_size {spec.hidden} / heads {heads} / kv heads "
                f"{spec.kv_heads} do not divide"
            )
        return spec

    def linears(self) -> dict[str, tuple[int, int]]:
        """Every quantized linear's source module name -> (out_features N, in_features K)."""
        head_dim = self.hidden // self.heads
        shapes = {
            "self_attn.q_proj": (self.heads * head_dim, self.hidden),
            "self_attn.k_proj": (self.kv_heads * head_dim, self.hidden),
            "self_attn.v_proj": (self.kv_heads * head_dim, self.hidden),
            "self_attn.o_proj": (self.hidden, self.heads * head_dim),
            "mlp.gate_proj": (self.intermediate, self.hidden),
            "mlp.up_proj": (self.intermediate, self.hidden),
            "mlp.down_proj": (self.hidden, self.intermediate),
        }
        return {f"model.layers.{i}.{lin}": shapes[lin] for i in range(self.layers) for lin in LM_LINEARS}


@dataclass(frozen=True)
class AwqMeta:
    bits: int
    group_size: int
    modules: tuple[str, ...]


def read_awq_meta(src: Path, config: dict[str, Any], text: TextSpec) -> AwqMeta:
    """``awq_quantized_modules.json``, checked against config.json's ``awq_packing`` and the model."""
    path = src / AWQ_META_FILE
    if not path.is_file():
        raise ConversionError(f"{src}: no {AWQ_META_FILE} (not a GRACE AWQ-packed checkpoint)")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConversionError(f"{path}: invalid JSON ({e})") from e
    bits, group_size, modules = meta.get("bits"), meta.get("group_size"), meta.get("modules")
    if bits != 4:
        raise ConversionError(f"{AWQ_META_FILE}: bits {bits!r}; only 4-bit AWQ GEMM is supported")
    if not isinstance(group_size, int) or group_size <= 0 or text.hidden % group_size:
        raise ConversionError(
            f"{AWQ_META_FILE}: group_size {group_size!r} does not divide hidden_size {text.hidden}"
        )
    if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
        raise ConversionError(f"{AWQ_META_FILE}: 'modules' must be a list of module names")
    packing = config.get("awq_packing")
    if isinstance(packing, dict):
        for key, want in (("bits", bits), ("group_size", group_size)):
            if key in packing and packing[key] != want:
                raise ConversionError(
                    f"config.json awq_packing.{key} is {packing[key]!r} but {AWQ_META_FILE} says {want!r}"
                )
        if packing.get("version", "gemm") != "gemm":
            raise ConversionError(f"config.json awq_packing.version {packing['version']!r}; expected gemm")
    expected = text.linears()
    for name in modules:
        if name not in expected:
            raise ConversionError(
                f"{AWQ_META_FILE} lists {name}, which is not a language-model linear "
                f"of this {text.layers}-layer model"
            )
    for name in expected:
        if name not in modules:
            raise ConversionError(
                f"{AWQ_META_FILE} does not list {name}; every language-model linear "
                "must be quantized (vLLM fuses q/k/v and gate/up)"
            )
    for name, (n, k) in expected.items():
        if k % group_size or n % 8:
            raise ConversionError(f"{name}: [{n}, {k}] cannot hold AWQ groups of {group_size}")
    return AwqMeta(bits=bits, group_size=group_size, modules=tuple(sorted(set(modules))))


def target_name(src_name: str) -> str | None:
    for old, new in _RENAMES:
        if src_name.startswith(old):
            return new + src_name[len(old) :]
    return None


def source_name(target: str, from_clip: bool = False) -> str:
    """The inverse of :func:`target_name` (a local CLIP checkpoint's name when ``from_clip``)."""
    if from_clip and target.startswith(CLIP_PREFIX[1]):
        return CLIP_PREFIX[0] + target[len(CLIP_PREFIX[1]) :]
    for old, new in _RENAMES:
        if target.startswith(new):
            return old + target[len(new) :]
    return target


def read_headers(files: Iterable[Path]) -> dict[str, TensorInfo]:
    """Every tensor's dtype, shape and place from the files' headers; a key in two files is refused."""
    infos: dict[str, TensorInfo] = {}
    for file in files:
        try:
            file_infos = read_header(file)
        except CheckpointError as e:
            raise ConversionError(str(e)) from e
        for info in file_infos:
            if info.key in infos:
                raise ConversionError(f"{info.key}: stored twice ({infos[info.key].file.name}, {file.name})")
            infos[info.key] = info
    return infos


def awq_expected(n: int, k: int, group_size: int) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """AutoAWQ GEMM tensors of a ``[N, K]`` linear: suffix -> (shape, dtype)."""
    groups = k // group_size
    return {
        "qweight": ((k, n // 8), torch.int32),
        "qzeros": ((groups, n // 8), torch.int32),
        "scales": ((groups, n), torch.float16),
    }


def check_awq_tensor(info: TensorInfo, n: int, k: int, meta: AwqMeta) -> None:
    suffix = info.key.rsplit(".", 1)[1]
    shape, dtype = awq_expected(n, k, meta.group_size)[suffix]
    if info.dtype != dtype:
        raise ConversionError(f"{info.key}: dtype {_name(info.dtype)}, AWQ GEMM stores {_name(dtype)}")
    if info.shape == shape:
        return
    hint = ""
    if suffix == "qweight" and info.shape == (k // 8, n):
        hint = " (it looks GPTQ-packed along the input dim; GRACE packs AWQ GEMM along the output dim)"
    elif suffix in ("qzeros", "scales") and len(info.shape) == 2 and info.shape[0] and k % info.shape[0] == 0:
        hint = f" (that is group size {k // info.shape[0]}, not {meta.group_size} from {AWQ_META_FILE})"
    raise ConversionError(
        f"{info.key}: shape {list(info.shape)}, expected {list(shape)} for a [{n}, {k}] linear packed "
        f"AWQ GEMM W{meta.bits} group {meta.group_size}{hint}"
    )


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
