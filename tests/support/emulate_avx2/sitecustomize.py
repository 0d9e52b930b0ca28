"""Test support: make this interpreter (and every vLLM process it spawns, which inherit PYTHONPATH)
look like an AVX2-only x86 CPU to vLLM, so vLLM loads its AVX2 kernel library — the one without the
native W4A16 kernel — exactly as on the AVX2 machines of upstream issue #55613. On a real AVX2 host
this changes nothing. Enabled only when M3BENCH_EMULATE_AVX2=1 and this folder is on PYTHONPATH."""

import os

if os.environ.get("M3BENCH_EMULATE_AVX2") == "1":
    import torch

    torch.cpu._is_avx512_supported = lambda: False
    torch.cpu._is_avx512_bf16_supported = lambda: False
    torch.cpu._is_amx_tile_supported = lambda: False
