"""Deterministic tiny vision-language models built from code (no downloads), in the weight layout
vLLM loads, each in BF16 and INT4 (AutoAWQ GEMM and AutoGPTQ) variants."""

from serving.embedded.build import BuiltModel, build_models, default_cache_dir
from serving.embedded.spec import FAMILIES, VARIANTS, ModelFamily, Variant

__all__ = [
    "FAMILIES",
    "VARIANTS",
    "BuiltModel",
    "ModelFamily",
    "Variant",
    "build_models",
    "default_cache_dir",
]
