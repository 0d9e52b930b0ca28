"""Suite-wide settings: one model cache for every test (the embedded models are built once per
machine, ~20 s), and the ``slow`` marker for tests that start real services."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Tests share the cache a user's demo run would use, unless the caller chose one.
os.environ.setdefault("M3BENCH_CACHE", str(REPO / ".cache" / "m3bench"))
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
