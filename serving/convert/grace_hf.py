"""The served model's side of the GRACE conversion: the vision tower's config, the llava-hf
``config.json`` with its AWQ ``quantization_config``, the expected tensor shapes, and the LLaVA-1.5
processor (tokenizer with ``<image>``, pad-to-square image processor, vicuna_v1 chat template)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import (
    AddedToken,
    AutoTokenizer,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaImageProcessor,
    LlavaProcessor,
)

from serving.convert.grace_layout import AwqMeta, ConversionError, TextSpec
from serving.embedded.families import checkpoint_name
from serving.embedded.spec import FAMILIES

OPENAI_CLIP_336 = "openai/clip-vit-large-patch14-336"
# openai/clip-vit-large-patch14-336's vision_config, the tower every LLaVA-1.5 release uses.
CLIP_L14_336: dict[str, Any] = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "image_size": 336,
    "patch_size": 14,
    "projection_dim": 768,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
}
_CLIP_KEYS = (*CLIP_L14_336, "num_channels", "attention_dropout", "initializer_factor")

# LLaVA's conv_vicuna_v1 (SeparatorStyle.TWO, sep " ", sep2 "</s>"), the mode LLaVA-1.5's evaluation
# and GRACE's deploy script use: "{system} USER: <image>\n{text} ASSISTANT:", image first as LLaVA's
# scripts put it. A system message replaces the default system prompt.
#
# LLaVA tokenizes that prompt chunk by chunk around "<image>" (mm_utils.tokenizer_image_token), so
# sentencepiece adds its dummy-prefix "▁" at the start of each chunk: [<s>] + sp("A chat ... USER: ")
# + [image] + sp("\nWhat ..."). A tokenizer converted for transformers puts no "▁" after a special
# token, so the template writes a space after <s> and after <image>: the rendered text differs from
# LLaVA's by those two spaces and the token ids equal LLaVA's.
VICUNA_V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
GRACE_CHAT_TEMPLATE = (
    "{{ bos_token }} "
    "{% if messages and messages[0]['role'] == 'system' %}"
    "{% set first = messages[0]['content'] %}"
    "{{ first if first is string else first[0]['text'] }}"
    "{% set loop_messages = messages[1:] %}"
    "{% else %}" + VICUNA_V1_SYSTEM + "{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if message['role'] == 'user' %} USER: "
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}{% if item['type'] in ('image', 'image_url') %}<image> \n"
    "{% endif %}{% endfor %}"
    "{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% elif message['role'] == 'assistant' %} ASSISTANT: "
    "{{ message['content'] if message['content'] is string else message['content'][0]['text'] }}</s>"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %} ASSISTANT:{% endif %}"
)


@dataclass(frozen=True)
class VisionSource:
    config: dict[str, Any]  # CLIPVisionConfig keyword arguments
    origin: str  # where the config came from, for the report
    weights_dir: Path | None  # a local CLIP checkpoint, used when the GRACE checkpoint lacks the tower


def _clip_config_from_dir(path: Path) -> dict[str, Any]:
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise ConversionError(f"{path}: no config.json (expected a local CLIP checkpoint)")
    try:
        model_type = json.loads(cfg_path.read_text()).get("model_type")
    except json.JSONDecodeError as e:
        raise ConversionError(f"{cfg_path}: invalid JSON ({e})") from e
    if model_type not in ("clip", "clip_vision_model"):
        raise ConversionError(f"{cfg_path}: model_type {model_type!r} is not a CLIP checkpoint")
    # As LLaVA's CLIPVisionTower does: a CLIPModel config yields its vision_config, and keys a
    # transformers 4 config left out because they equal the defaults come back as those defaults.
    vision = CLIPVisionConfig.from_pretrained(str(path))
    return {k: getattr(vision, k) for k in _CLIP_KEYS if hasattr(vision, k)}


def resolve_vision(config: dict[str, Any], vision_tower: Path | None) -> VisionSource:
    """The CLIP tower's config: ``--vision-tower`` first, then ``mm_vision_tower`` when it is a local
    directory, then the known openai/clip-vit-large-patch14-336 config."""
    named = str(config.get("mm_vision_tower") or config.get("vision_tower") or "")
    if vision_tower is not None:
        if not vision_tower.is_dir():
            raise ConversionError(f"--vision-tower {vision_tower}: not a directory")
        return VisionSource(_clip_config_from_dir(vision_tower), str(vision_tower), vision_tower)
    if named and Path(named).is_dir():
        return VisionSource(_clip_config_from_dir(Path(named)), named, Path(named))
    if named.rstrip("/") == OPENAI_CLIP_336:
        return VisionSource(dict(CLIP_L14_336), f"{OPENAI_CLIP_336} (built-in config)", None)
    raise ConversionError(
        f"config.json mm_vision_tower {named or '(missing)'!r} is neither {OPENAI_CLIP_336} nor a local "
        "directory; pass --vision-tower PATH to a local copy of that CLIP checkpoint"
    )


def check_llava_config(config: dict[str, Any], vision: VisionSource) -> None:
    archs = config.get("architectures") or []
    if "LlavaLlamaForCausalLM" not in archs and config.get("model_type") not in ("llava", "llava_llama"):
        raise ConversionError(f"config.json: architectures {archs} is not LLaVA-1.5's LlavaLlamaForCausalLM")
    checks = (
        ("mm_projector_type", config.get("mm_projector_type", "linear"), ("mlp2x_gelu",)),
        ("mm_vision_select_feature", config.get("mm_vision_select_feature", "patch"), ("patch", "cls_patch")),
        ("mm_use_im_start_end", bool(config.get("mm_use_im_start_end", False)), (False,)),
        ("mm_patch_merge_type", config.get("mm_patch_merge_type", "flat"), ("flat",)),
        ("image_aspect_ratio", config.get("image_aspect_ratio", "square"), ("pad", "square")),
    )
    for key, value, allowed in checks:
        if value not in allowed:
            raise ConversionError(
                f"config.json: {key} {value!r} is not supported (LLaVA-1.5 uses {allowed[0]!r})"
            )
    if config.get("rope_scaling"):
        raise ConversionError(f"config.json: rope_scaling {config['rope_scaling']!r} is not supported")
    mm_hidden = config.get("mm_hidden_size")
    if mm_hidden != vision.config["hidden_size"]:
        raise ConversionError(
            f"config.json mm_hidden_size {mm_hidden!r} != hidden_size "
            f"{vision.config['hidden_size']} of the vision tower ({vision.origin})"
        )


def select_strategy(config: dict[str, Any]) -> Literal["default", "full"]:
    return "default" if config.get("mm_vision_select_feature", "patch") == "patch" else "full"


def target_config(
    config: dict[str, Any], text: TextSpec, vision: VisionSource, image_token_id: int, vocab_size: int
) -> Any:
    """The ``LlavaConfig`` (transformers object) of the served model, without quantization_config;
    ``vocab_size`` is the source's, grown to hold the ``<image>`` token."""
    text_config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=text.hidden,
        intermediate_size=text.intermediate,
        num_hidden_layers=text.layers,
        num_attention_heads=text.heads,
        num_key_value_heads=text.kv_heads,
        max_position_embeddings=int(config.get("max_position_embeddings", 4096)),
        rms_norm_eps=float(config.get("rms_norm_eps", 1e-5)),
        hidden_act=config.get("hidden_act", "silu"),
        rope_parameters={"rope_type": "default", "rope_theta": float(config.get("rope_theta", 10000.0))},
        bos_token_id=config.get("bos_token_id", 1),
        eos_token_id=config.get("eos_token_id", 2),
        pad_token_id=config.get("pad_token_id", 0),
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
    )
    patches = (vision.config["image_size"] // vision.config["patch_size"]) ** 2
    cfg = LlavaConfig(
        vision_config=CLIPVisionConfig(**vision.config),
        text_config=text_config,
        image_token_index=image_token_id,
        projector_hidden_act="gelu",  # mlp2x_gelu: nn.GELU(), the exact (erf) form
        vision_feature_select_strategy=select_strategy(config),
        vision_feature_layer=int(config.get("mm_vision_select_layer", -2)),
        image_seq_length=patches if select_strategy(config) == "default" else patches + 1,
        multimodal_projector_bias=True,
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
    )
    cfg.architectures = ["LlavaForConditionalGeneration"]
    cfg.dtype = torch.float16 if config.get("torch_dtype", "float16") == "float16" else torch.bfloat16
    return cfg


def config_json(cfg: Any, meta: AwqMeta) -> dict[str, Any]:
    """config.json: transformers 5's serialization plus the keys transformers 4 reads (the H200 runs
    vLLM 0.22 with transformers 4.57, which would otherwise take rope_theta's default)."""
    out: dict[str, Any] = cfg.to_dict()
    out.pop("transformers_version", None)
    text = out["text_config"]
    text["rope_theta"] = text["rope_parameters"]["rope_theta"]
    text["rope_scaling"] = None
    out["torch_dtype"] = out["dtype"]
    out["quantization_config"] = quantization_config(meta)
    return out


def _transformers4_files(out: Path, src: Path) -> None:
    """Make the processor files readable by transformers 4 as well: it takes the image processor from
    preprocessor_config.json and the template from chat_template.json, and fails on the list form of
    extra_special_tokens that transformers 5 writes."""
    proc = json.loads((out / "processor_config.json").read_text())
    image = proc.pop("image_processor", None)
    if image is not None:
        image["processor_class"] = proc.get("processor_class", "LlavaProcessor")
        (out / "preprocessor_config.json").write_text(json.dumps(image, indent=2, sort_keys=True) + "\n")
        (out / "processor_config.json").write_text(json.dumps(proc, indent=2, sort_keys=True) + "\n")
    template = (out / "chat_template.jinja").read_text()
    (out / "chat_template.json").write_text(json.dumps({"chat_template": template}, indent=2) + "\n")
    tok = json.loads((out / "tokenizer_config.json").read_text())
    for key in ("extra_special_tokens", "backend", "is_local", "local_files_only"):
        if key != "extra_special_tokens" or isinstance(tok.get(key), list):
            tok.pop(key, None)
    source_cfg = src / "tokenizer_config.json"
    source = json.loads(source_cfg.read_text()) if source_cfg.is_file() else {}
    for key, default in (("add_bos_token", True), ("add_eos_token", False), ("legacy", False)):
        tok[key] = source.get(key, default)
    (out / "tokenizer_config.json").write_text(json.dumps(tok, indent=2, sort_keys=True) + "\n")


def quantization_config(meta: AwqMeta) -> dict[str, Any]:
    return {
        "quant_method": "awq",
        "bits": meta.bits,
        "group_size": meta.group_size,
        "zero_point": True,
        "version": "gemm",
        "modules_to_not_convert": ["vision_tower", "multi_modal_projector"],
    }


def expected_shapes(cfg: Any) -> dict[str, tuple[int, ...]]:
    """Every parameter of the served model under its llava-hf name, from a meta-device model."""
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(cfg)
    return {checkpoint_name(FAMILIES["llava"], k): tuple(v.shape) for k, v in model.state_dict().items()}


@dataclass(frozen=True)
class TokenIds:
    image: int
    unk: int


def save_processor(src: Path, out: Path, config: dict[str, Any], vision: VisionSource) -> TokenIds:
    """Write tokenizer (+ ``<image>``), image processor and chat template."""
    if not any((src / f).is_file() for f in ("tokenizer.model", "tokenizer.json")):
        raise ConversionError(f"{src}: no tokenizer.model or tokenizer.json")
    try:
        tok = AutoTokenizer.from_pretrained(str(src))
    except Exception as e:  # transformers raises many types for unreadable tokenizer files
        raise ConversionError(f"{src}: cannot load the tokenizer ({type(e).__name__}: {e})") from e
    if "<image>" not in tok.get_vocab():
        tok.add_tokens(AddedToken("<image>", special=True, normalized=False), special_tokens=True)
    if tok.pad_token is None:
        tok.pad_token = tok.unk_token  # what LLaVA's training and eval code set
    size = int(vision.config["image_size"])
    image_processor = LlavaImageProcessor(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        # LLaVA-1.5's image_aspect_ratio "pad": expand2square with the mean colour, then CLIP preprocessing
        do_pad=config.get("image_aspect_ratio") == "pad",
    )
    processor = LlavaProcessor(  # type: ignore[no-untyped-call]
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=int(vision.config["patch_size"]),
        vision_feature_select_strategy=select_strategy(config),
        chat_template=GRACE_CHAT_TEMPLATE,
        image_token="<image>",
        num_additional_image_tokens=1,  # CLIP's CLS token
    )
    processor.save_pretrained(str(out))
    _transformers4_files(out, src)
    image_id, unk_id = tok.convert_tokens_to_ids("<image>"), tok.unk_token_id
    if not isinstance(image_id, int) or not isinstance(unk_id, int):
        raise ConversionError(f"{src}: the tokenizer has no <image> or <unk> token id")
    return TokenIds(image=image_id, unk=unk_id)
