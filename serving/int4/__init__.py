"""INT4 weight-only quantization: round-to-nearest group quantization and the two on-disk layouts
vLLM loads (AutoAWQ GEMM and AutoGPTQ), plus their exact inverse for reference dequantization."""

from serving.int4.pack import (
    AWQ_PACK_ORDER,
    Int4Weight,
    dequantize,
    pack_awq,
    pack_gptq,
    quantize_rtn,
    unpack_awq,
    unpack_gptq,
)

__all__ = [
    "AWQ_PACK_ORDER",
    "Int4Weight",
    "dequantize",
    "pack_awq",
    "pack_gptq",
    "quantize_rtn",
    "unpack_awq",
    "unpack_gptq",
]
