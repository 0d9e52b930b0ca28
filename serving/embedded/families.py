"""Per-family details: the HF config, the processor (tokenizer, chat template, image processor) and
the checkpoint's tensor names in the classic layout vLLM and published checkpoints use."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Protocol

import torch
from tokenizers import Tokenizer

from serving.embedded.spec import VOCAB_SIZE, ModelFamily

LLAVA_SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
QWEN_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# LLaVA-1.5's conversation format ("USER: <image>\n... ASSISTANT:"), images before the text.
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{{ message['content'] if message['content'] is string else message['content'][0]['text'] }}\n"
    "{% elif message['role'] == 'user' %}USER: "
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}{% if item['type'] in ('image', 'image_url') %}<image>\n"
    "{% endif %}{% endfor %}"
    "{% for item in message['content'] %}{% if item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %} "
    "{% elif message['role'] == 'assistant' %}ASSISTANT: "
    "{{ message['content'] if message['content'] is string else message['content'][0]['text'] }}"
    "</s>"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)

QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] in ('image', 'image_url') %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen2-VL resizes each image to a multiple of 28 px within these pixel bounds: 16..256 merged
# vision tokens per image, so the token count follows the image size as in real traffic.
QWEN_MIN_PIXELS = 16 * 28 * 28
QWEN_MAX_PIXELS = 256 * 28 * 28


def _transformers() -> Any:
    """transformers, imported late (seconds) and untyped: its classes resolve lazily at runtime."""
    import transformers

    return transformers


def special_tokens(family: ModelFamily) -> list[str]:
    return LLAVA_SPECIALS if family.architecture.startswith("Llava") else QWEN_SPECIALS


class VisionDims(Protocol):
    """The CLIP tower's sizes, as a model family (and the GRACE test fixture's dims) name them."""

    @property
    def vision_hidden(self) -> int: ...
    @property
    def vision_intermediate(self) -> int: ...
    @property
    def vision_layers(self) -> int: ...
    @property
    def vision_heads(self) -> int: ...
    @property
    def image_size(self) -> int: ...
    @property
    def patch_size(self) -> int: ...


def clip_vision_config(dims: VisionDims, projection_dim: int, **extra: Any) -> Any:
    """LLaVA's CLIP vision config from ``dims`` (quick_gelu, as openai's CLIP ViT)."""
    return _transformers().CLIPVisionConfig(
        hidden_size=dims.vision_hidden,
        intermediate_size=dims.vision_intermediate,
        num_hidden_layers=dims.vision_layers,
        num_attention_heads=dims.vision_heads,
        image_size=dims.image_size,
        patch_size=dims.patch_size,
        projection_dim=projection_dim,
        hidden_act="quick_gelu",
        **extra,
    )


def hf_config(family: ModelFamily, tok: Tokenizer) -> Any:
    """The transformers config object for the family (serialised with its own ``to_dict``)."""
    t = family.text
    tf = _transformers()
    cfg: Any
    if family.architecture.startswith("Llava"):
        text = tf.LlamaConfig(
            vocab_size=VOCAB_SIZE,
            hidden_size=t.hidden,
            intermediate_size=t.intermediate,
            num_hidden_layers=t.layers,
            num_attention_heads=t.heads,
            num_key_value_heads=t.kv_heads,
            max_position_embeddings=t.max_positions,
            bos_token_id=tok.token_to_id("<s>"),
            eos_token_id=tok.token_to_id("</s>"),
            pad_token_id=tok.token_to_id("<pad>"),
            tie_word_embeddings=False,
        )
        vision = clip_vision_config(family, projection_dim=t.hidden)
        cfg = tf.LlavaConfig(
            vision_config=vision,
            text_config=text,
            image_token_index=tok.token_to_id("<image>"),
            projector_hidden_act="gelu",
            vision_feature_select_strategy="default",
            vision_feature_layer=-2,
            tie_word_embeddings=False,
        )
    else:
        cfg = tf.Qwen2VLConfig(
            vision_config={
                "depth": family.vision_layers,
                "embed_dim": family.vision_hidden,
                "hidden_size": t.hidden,
                "num_heads": family.vision_heads,
                "mlp_ratio": family.vision_intermediate // family.vision_hidden,
                "patch_size": family.patch_size,
                "spatial_merge_size": 2,
                "temporal_patch_size": 2,
            },
            text_config={
                "vocab_size": VOCAB_SIZE,
                "hidden_size": t.hidden,
                "intermediate_size": t.intermediate,
                "num_hidden_layers": t.layers,
                "num_attention_heads": t.heads,
                "num_key_value_heads": t.kv_heads,
                "max_position_embeddings": t.max_positions,
                "rope_parameters": {
                    "rope_type": "default",
                    "mrope_section": [8, 12, 12],
                    "rope_theta": 1000000.0,
                },
                "bos_token_id": tok.token_to_id("<|endoftext|>"),
                "eos_token_id": tok.token_to_id("<|im_end|>"),
                "tie_word_embeddings": False,
            },
            image_token_id=tok.token_to_id("<|image_pad|>"),
            video_token_id=tok.token_to_id("<|video_pad|>"),
            vision_start_token_id=tok.token_to_id("<|vision_start|>"),
            vision_end_token_id=tok.token_to_id("<|vision_end|>"),
            tie_word_embeddings=False,
        )
    cfg.architectures = [family.architecture]
    cfg.dtype = torch.bfloat16
    return cfg


def save_processor(family: ModelFamily, tok: Tokenizer, out_dir: Path) -> None:
    """Tokenizer files, chat template and image-processor config, as transformers writes them."""
    tf = _transformers()
    processor: Any
    if family.architecture.startswith("Llava"):
        fast = tf.PreTrainedTokenizerFast(
            tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
        )
        image_processor = tf.CLIPImageProcessor(
            size={"shortest_edge": family.image_size},
            crop_size={"height": family.image_size, "width": family.image_size},
        )
        processor = tf.LlavaProcessor(
            image_processor=image_processor,
            tokenizer=fast,
            patch_size=family.patch_size,
            vision_feature_select_strategy="default",
            chat_template=LLAVA_CHAT_TEMPLATE,
            image_token="<image>",
            num_additional_image_tokens=1,
        )
    else:
        fast = tf.PreTrainedTokenizerFast(
            tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>"
        )
        image_processor = tf.Qwen2VLImageProcessor(
            min_pixels=QWEN_MIN_PIXELS,
            max_pixels=QWEN_MAX_PIXELS,
            patch_size=family.patch_size,
            merge_size=2,
            temporal_patch_size=2,
        )
        processor = tf.Qwen2VLProcessor(
            image_processor=image_processor,
            tokenizer=fast,
            video_processor=tf.Qwen2VLVideoProcessor(patch_size=family.patch_size, merge_size=2),
            chat_template=QWEN_CHAT_TEMPLATE,
        )
    processor.save_pretrained(str(out_dir))


def checkpoint_name(family: ModelFamily, hf_name: str) -> str:
    """transformers-5 module name -> the classic checkpoint name (llava-hf / Qwen2-VL releases)."""
    if family.architecture.startswith("Llava"):
        rules = [
            (r"^model\.language_model\.", "language_model.model."),
            (r"^lm_head\.", "language_model.lm_head."),
            (r"^model\.vision_tower\.", "vision_tower.vision_model."),
            (r"^model\.multi_modal_projector\.", "multi_modal_projector."),
        ]
    else:
        rules = [(r"^model\.language_model\.", "model."), (r"^model\.visual\.", "visual.")]
    for pattern, repl in rules:
        if re.match(pattern, hf_name):
            return re.sub(pattern, repl, hf_name)
    return hf_name


_LM_LINEAR = re.compile(r"layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)\.weight$")


def is_quantized_linear(family: ModelFamily, name: str) -> bool:
    """The LM's attention and MLP projections; towers, projector, embeddings and head stay BF16."""
    return bool(_LM_LINEAR.search(name)) and not any(name.startswith(m) for m in family.unquantized_modules)


def tensor_shapes(family: ModelFamily, cfg: Any) -> dict[str, tuple[int, ...]]:
    """Every parameter's classic name and shape, read off the transformers model built on the meta
    device (no memory, no random init)."""
    import transformers

    model_cls = getattr(transformers, family.architecture)
    with torch.device("meta"):
        model = model_cls(cfg)
    return {checkpoint_name(family, k): tuple(v.shape) for k, v in model.state_dict().items()}
