"""A synthetic checkpoint in the layout of GRACE's LLaVA-1.5 AWQ release, at any size: tiny for the
converter's tests, LLaVA-1.5-7B's shapes (random codes) for measuring the conversion itself.

What is written mirrors what GRACE's ``deploy_awq_llava.py --save-dir`` leaves on disk: LLaVA's
``config.json`` (``LlavaLlamaForCausalLM``, ``model_type`` ``llava_llama``, the ``mm_*`` keys and GRACE's
``awq_packing``), sharded ``model-*.safetensors`` with an index, original LLaVA tensor names, AutoAWQ
GEMM ``qweight``/``qzeros``/``scales`` for the 7 linears of every layer (symmetric codes, zero point 8,
as GRACE maps its LSQ QAT onto AWQ), FP16 for the rest, ``awq_quantized_modules.json``, a
sentencepiece ``tokenizer.model`` with LLaMA's special ids and the slow-tokenizer JSON files. Its
``mm_vision_tower`` points at a tiny local CLIP checkpoint, which is written too.
"""

from __future__ import annotations

import io
import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import sentencepiece as spm
import torch
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, CLIPVisionModel

from serving.convert.grace_layout import LM_LINEARS, TextSpec
from serving.embedded.families import clip_vision_config
from serving.embedded.tokenizer import corpus
from serving.embedded.weights import init_tensor
from serving.int4 import pack_awq, quantize_rtn

SEED = 20260601
_SYMMETRIC_ZEROS = -2004318072  # 0x88888888: eight packed zero points of 8


@dataclass(frozen=True)
class GraceDims:
    vocab_size: int = 512
    hidden: int = 256
    intermediate: int = 768
    layers: int = 2
    heads: int = 4
    vision_hidden: int = 128
    vision_intermediate: int = 256
    vision_layers: int = 3
    vision_heads: int = 2
    image_size: int = 112
    patch_size: int = 14
    group_size: int = 128


LLAVA_15_7B = GraceDims(
    vocab_size=32000,
    hidden=4096,
    intermediate=11008,
    layers=32,
    heads=32,
    vision_hidden=1024,
    vision_intermediate=4096,
    vision_layers=24,
    vision_heads=16,
    image_size=336,
)


@dataclass(frozen=True)
class GraceFixture:
    src: Path  # the GRACE-layout checkpoint
    clip: Path  # the local CLIP vision checkpoint its mm_vision_tower names


Maker = Callable[[], torch.Tensor]
Entry = tuple[tuple[int, ...], Maker]  # (shape, maker): shapes are known before anything is made


def _clip(d: GraceDims) -> CLIPVisionConfig:
    cfg: CLIPVisionConfig = clip_vision_config(d, projection_dim=768, layer_norm_eps=1e-5)
    cfg.architectures = ["CLIPVisionModel"]
    return cfg


def _clip_shapes(d: GraceDims) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = CLIPVisionModel(_clip(d))
    # transformers 4.x (GRACE's 4.37.2, and openai's CLIP files) name them vision_model.*
    return {
        "vision_model." + k.removeprefix("vision_model."): tuple(v.shape)
        for k, v in model.state_dict().items()
        if not k.endswith("position_ids")
    }


def _dense(name: str, shape: tuple[int, ...], scale: float = 1.0) -> Entry:
    return shape, lambda: (init_tensor(SEED, name, shape, torch.float32) * scale).to(torch.float16)


def _awq(name: str, n: int, k: int, d: GraceDims, random_codes: bool) -> dict[str, Entry]:
    groups = k // d.group_size
    shapes = {"qweight": (k, n // 8), "qzeros": (groups, n // 8), "scales": (groups, n)}
    if random_codes:  # the real model's shapes without quantizing billions of floats
        gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))
        makers: dict[str, Maker] = {
            "qweight": lambda: torch.randint(
                -(2**31), 2**31 - 1, shapes["qweight"], dtype=torch.int32, generator=gen
            ),
            "qzeros": lambda: torch.full(shapes["qzeros"], _SYMMETRIC_ZEROS, dtype=torch.int32),
            "scales": lambda: (torch.rand(groups, n, generator=gen) * 0.01 + 1e-3).to(torch.float16),
        }
        return {s: (shapes[s], makers[s]) for s in shapes}
    packed: dict[str, torch.Tensor] = {}

    def part(suffix: str) -> Maker:
        def make() -> torch.Tensor:
            if not packed:
                w = init_tensor(SEED, f"{name}.weight", (n, k), torch.float32)
                packed.update(pack_awq(quantize_rtn(w, d.group_size, symmetric=True)))
            return packed.pop(suffix)

        return make

    return {s: (shapes[s], part(s)) for s in shapes}


def _grace_tensors(d: GraceDims, vision_in_checkpoint: bool, random_codes: bool) -> dict[str, Entry]:
    """Source name -> maker, in LLaVA's state_dict order (LM, vision tower, projector, head)."""
    # (N, K) of every quantized linear, LLaMA's shapes as serving.convert.grace_layout states them
    text = TextSpec(d.vocab_size, d.hidden, d.intermediate, d.layers, d.heads, kv_heads=d.heads)
    linear_shapes = text.linears()
    out: dict[str, Entry] = {"model.embed_tokens.weight": _dense("embed", (d.vocab_size, d.hidden))}
    for i in range(d.layers):
        for lin in LM_LINEARS:
            name = f"model.layers.{i}.{lin}"
            for suffix, entry in _awq(name, *linear_shapes[name], d, random_codes).items():
                out[f"{name}.{suffix}"] = entry
        for norm in ("input_layernorm", "post_attention_layernorm"):
            out[f"model.layers.{i}.{norm}.weight"] = _dense(f"model.layers.{i}.{norm}.weight", (d.hidden,))
    out["model.norm.weight"] = _dense("model.norm.weight", (d.hidden,))
    if vision_in_checkpoint:
        for key, shape in _clip_shapes(d).items():
            out[f"model.vision_tower.vision_tower.{key}"] = _dense(key, shape)
    projector = {
        "0.weight": (d.hidden, d.vision_hidden),
        "0.bias": (d.hidden,),
        "2.weight": (d.hidden, d.hidden),
        "2.bias": (d.hidden,),
    }
    for part, shape in projector.items():
        out[f"model.mm_projector.{part}"] = _dense(f"model.mm_projector.{part}", shape, 5.0)
    # A spread-out head gives logits a few nats apart, so a logprob comparison means something.
    out["lm_head.weight"] = _dense("lm_head.weight", (d.vocab_size, d.hidden), 10.0)
    return out


def _nbytes(name: str, shape: tuple[int, ...]) -> int:
    n = 4 if name.endswith((".qweight", ".qzeros")) else 2
    for s in shape:
        n *= s
    return n


def _write_shards(entries: dict[str, Entry], out: Path, shards: int) -> None:
    """Split like ``save_pretrained`` does (in order, by size); make each shard's tensors only when
    that shard is written, so memory stays near one shard even at 7B."""
    sizes = {name: _nbytes(name, shape) for name, (shape, _) in entries.items()}
    total = sum(sizes.values())
    per = total / shards
    groups: list[list[str]] = [[] for _ in range(shards)]
    acc = 0
    for name in entries:
        groups[min(int(acc / per), shards - 1)].append(name)
        acc += sizes[name]
    weight_map: dict[str, str] = {}
    for i, group in enumerate(g for g in groups if g):
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file(
            {n: entries[n][1]().contiguous() for n in group}, str(out / fname), metadata={"format": "pt"}
        )
        weight_map.update(dict.fromkeys(group, fname))
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def _write_tokenizer(out: Path, vocab_size: int) -> None:
    """A LLaMA-style sentencepiece BPE model (unk 0, bos 1, eos 2, byte fallback) and its JSON files."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus()[:400]),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        character_coverage=1.0,
        num_threads=1,
        split_digits=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        minloglevel=2,
    )
    (out / "tokenizer.model").write_bytes(model.getvalue())
    specials = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>"}
    (out / "special_tokens_map.json").write_text(json.dumps(specials, indent=2) + "\n")
    tok_config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "legacy": False,
        "model_max_length": 2048,
        "padding_side": "right",
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer",
        **specials,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2) + "\n")


def _llava_config(d: GraceDims, vision_tower: str) -> dict[str, object]:
    return {
        "_name_or_path": "./checkpoints/llava-v1.5-7b-grace-w4g128",
        "architectures": ["LlavaLlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "freeze_mm_mlp_adapter": False,
        "hidden_act": "silu",
        "hidden_size": d.hidden,
        "image_aspect_ratio": "pad",
        "initializer_range": 0.02,
        "intermediate_size": d.intermediate,
        "max_length": 4096,
        "max_position_embeddings": 4096,
        "mm_hidden_size": d.vision_hidden,
        "mm_patch_merge_type": "flat",
        "mm_projector_lr": None,
        "mm_projector_type": "mlp2x_gelu",
        "mm_use_im_patch_token": False,
        "mm_use_im_start_end": False,
        "mm_vision_select_feature": "patch",
        "mm_vision_select_layer": -2,
        "mm_vision_tower": vision_tower,
        "model_type": "llava_llama",
        "num_attention_heads": d.heads,
        "num_hidden_layers": d.layers,
        "num_key_value_heads": d.heads,
        "pad_token_id": 0,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "tokenizer_model_max_length": 2048,
        "tokenizer_padding_side": "right",
        "torch_dtype": "float16",
        "transformers_version": "4.37.2",
        "tune_mm_mlp_adapter": False,
        "use_cache": True,
        "use_mm_proj": True,
        "vocab_size": d.vocab_size,
        "awq_packing": {"bits": 4, "group_size": d.group_size, "zero_point": 8, "version": "gemm"},
    }


def write_grace_checkpoint(
    root: Path,
    dims: GraceDims | None = None,
    *,
    shards: int = 2,
    vision_in_checkpoint: bool = True,
    random_codes: bool = False,
    vision_tower_name: str | None = None,
) -> GraceFixture:
    """Write ``root/clip`` and ``root/grace``; ``vision_tower_name`` overrides ``mm_vision_tower``."""
    d = dims or GraceDims()
    clip, src = root / "clip", root / "grace"
    clip.mkdir(parents=True)
    src.mkdir(parents=True)
    (clip / "config.json").write_text(json.dumps(_clip(d).to_dict(), indent=2) + "\n")
    save_file(
        {k: _dense(k, s)[1]().contiguous() for k, s in _clip_shapes(d).items()},
        str(clip / "model.safetensors"),
        metadata={"format": "pt"},
    )
    entries = _grace_tensors(d, vision_in_checkpoint, random_codes)
    _write_shards(entries, src, shards)
    modules = sorted({n.rsplit(".", 1)[0] for n in entries if n.endswith(".qweight")})
    meta = {"bits": 4, "group_size": d.group_size, "modules": modules}
    (src / "awq_quantized_modules.json").write_text(json.dumps(meta, indent=2) + "\n")
    config = _llava_config(d, vision_tower_name or str(clip))
    (src / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    generation = {
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
        "max_length": 4096,
        "temperature": 0.9,
        "top_p": 0.6,
        "do_sample": True,
        "transformers_version": "4.37.2",
    }
    (src / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    _write_tokenizer(src, min(d.vocab_size, 512))
    return GraceFixture(src=src, clip=clip)


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.support.grace_fixture DIR [--llava-7b]``: write a synthetic GRACE checkpoint
    (``--llava-7b``: LLaVA-1.5-7B's shapes, random codes, the real release's vision tower name)."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("root", type=Path)
    ap.add_argument("--llava-7b", action="store_true")
    ap.add_argument("--shards", type=int, default=2)
    args = ap.parse_args(argv)
    if args.llava_7b:
        fx = write_grace_checkpoint(
            args.root,
            LLAVA_15_7B,
            shards=args.shards,
            random_codes=True,
            vision_tower_name="openai/clip-vit-large-patch14-336",
        )
    else:
        fx = write_grace_checkpoint(args.root, shards=args.shards)
    print(fx.src)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
