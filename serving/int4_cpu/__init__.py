"""INT4 (AWQ / GPTQ) serving on any x86 CPU: a vLLM plugin that adds a weight-only int4 linear kernel
built on PyTorch's own CPU int4 ops, selected only where vLLM's native CPU kernel is missing."""

from serving.int4_cpu.select import Int4Backend, native_kernel_available, selected_backend

__all__ = ["Int4Backend", "native_kernel_available", "selected_backend"]
