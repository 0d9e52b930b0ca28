"""What the embedded models are: two families (LLaVA-1.5 style, Qwen2-VL style) and their variants.

Dimensions are chosen so that every INT4 kernel accepts the LM linears (in and out features
multiples of 128, so group sizes 32..128 divide them) and so that the quantized linears carry most
of the weights, as in a 7B model; the vision towers stay BF16 in every variant, as in published AWQ
and GPTQ VLM checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Quantization = Literal["none", "awq", "gptq"]


@dataclass(frozen=True)
class TextDims:
    hidden: int = 512
    intermediate: int = 1536
    layers: int = 4
    heads: int = 8
    kv_heads: int = 4
    max_positions: int = 4096


@dataclass(frozen=True)
class ModelFamily:
    name: str
    architecture: str
    text: TextDims
    # LLaVA: CLIP tower; Qwen2-VL: its own ViT with 2x2 patch merging.
    vision_hidden: int = 256
    vision_layers: int = 2
    vision_heads: int = 4
    vision_intermediate: int = 512
    image_size: int = 224  # LLaVA only: fixed square input, (224/14)^2 = 256 image tokens
    patch_size: int = 14
    unquantized_modules: tuple[str, ...] = ()


@dataclass(frozen=True)
class Variant:
    suffix: str
    quantization: Quantization
    group_size: int = 128

    @property
    def is_int4(self) -> bool:
        return self.quantization != "none"


VOCAB_SIZE = 4096
SEED = 20260128

FAMILIES: dict[str, ModelFamily] = {
    "llava": ModelFamily(
        name="tiny-llava",
        architecture="LlavaForConditionalGeneration",
        text=TextDims(),
        unquantized_modules=("vision_tower", "multi_modal_projector"),
    ),
    "qwen2vl": ModelFamily(
        name="tiny-qwen2vl",
        architecture="Qwen2VLForConditionalGeneration",
        text=TextDims(),
        unquantized_modules=("visual",),
    ),
}

VARIANTS: dict[str, Variant] = {
    "bf16": Variant("bf16", "none"),
    "awq": Variant("awq", "awq", 128),
    "gptq": Variant("gptq", "gptq", 128),
    # A finer grouping: more scales, less rounding error; the accuracy gap to group 128 is a finding.
    "awq-g32": Variant("awq-g32", "awq", 32),
    "gptq-g32": Variant("gptq-g32", "gptq", 32),
}


def model_name(family: ModelFamily, variant: Variant) -> str:
    return f"{family.name}-{variant.suffix}"
