"""Checkpoint converters: rewrite published quantized checkpoints into the layout vLLM serves.

``convert_grace`` turns GRACE's AWQ-packed LLaVA-1.5 release (original LLaVA layout, AutoAWQ GEMM
tensors, ``awq_quantized_modules.json``) into a llava-hf ``LlavaForConditionalGeneration`` AWQ checkpoint.
"""

from serving.convert.grace import ConversionReport, convert_grace
from serving.convert.grace_layout import ConversionError

__all__ = ["ConversionError", "ConversionReport", "convert_grace"]
