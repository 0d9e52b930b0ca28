"""vLLM general plugin (entry point ``vllm.general_plugins``: ``m3bench_cpu_int4``).

vLLM calls :func:`register` in every process it starts (API server, engine core, workers). On CPU
platforms it puts :class:`TorchInt4CPULinearKernel` first in vLLM's list of mixed-precision kernels
for CPUs; the kernel's ``can_implement`` declines unless it is the selected backend, so where the
native kernel exists vLLM's own choice is untouched. On other platforms it does nothing.
"""

from __future__ import annotations

import logging

logger = logging.getLogger("m3bench.int4_cpu")

_REGISTERED = False


def register() -> None:
    global _REGISTERED  # noqa: PLW0603 - vLLM may call a plugin several times per process
    if _REGISTERED:
        return
    from vllm.platforms import PlatformEnum, current_platform

    if not current_platform.is_cpu():
        return
    from vllm.model_executor.kernels import linear as linear_kernels

    from serving.int4_cpu.kernel import TorchInt4CPULinearKernel
    from serving.int4_cpu.select import selected_backend

    kernels = linear_kernels._POSSIBLE_KERNELS.setdefault(PlatformEnum.CPU, [])
    if TorchInt4CPULinearKernel not in kernels:
        kernels.insert(0, TorchInt4CPULinearKernel)
    _REGISTERED = True
    logger.info("m3bench CPU int4 plugin registered; int4 backend: %s", selected_backend().value)
