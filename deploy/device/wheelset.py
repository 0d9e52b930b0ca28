"""Pick the wheels the H200 image lacks from a pip resolution report (stdlib only).

    python deploy/device/wheelset.py REPORT.json > pins.tsv

Each output line: ``group<TAB>name==version``; group is ``main`` (installed into the first target
dir), ``tf4`` (transformers 4.57.6 and the tokenizers/huggingface_hub it needs, installed into a
second target dir placed after the first on PYTHONPATH: the image's transformers 5.17 breaks vLLM
0.22.0 with ``cannot import name 'PixtralRotaryEmbedding'``). Names the image already has, the
placeholder torch stack, and kernels LLaVA/Qwen-VL never use are left out (see GPU-NOTES.md).
"""

from __future__ import annotations

import json
import re
import sys

# Already in the device image ('cuda', KINDS.md's package list; versions it reported where known).
IMAGE = {
    "torch",
    "torchvision",
    "torchaudio",
    "triton",
    "numpy",
    "numba",
    "llvmlite",
    "opencv-python-headless",
    "pillow",
    "protobuf",
    "grpcio",
    "aiohttp",
    "aiohappyeyeballs",
    "aiosignal",
    "multidict",
    "yarl",
    "frozenlist",
    "propcache",
    "attrs",
    "cuda-bindings",
    "cuda-core",
    "cuda-pathfinder",
    "cuda-python",
    "safetensors",
    "sentencepiece",
    "tiktoken",
    "uvloop",
    "anyio",
    "h11",
    "httpx",
    "httpcore",
    "idna",
    "certifi",
    "charset-normalizer",
    "urllib3",
    "requests",
    "click",
    "pygments",
    "rich",
    "markdown-it-py",
    "mdurl",
    "typer",
    "shellingham",
    "packaging",
    "filelock",
    "fsspec",
    "jinja2",
    "markupsafe",
    "pyyaml",
    "regex",
    "tqdm",
    "six",
    "python-dateutil",
    "psutil",
    "msgpack",
    "cloudpickle",
    "pandas",
    "pyarrow",
    "scipy",
    "einops",
    "setuptools",
    "py-cpuinfo",
    "pybind11",
    "ninja",
    "meson",
    "werkzeug",
    "tabulate",
    "iniconfig",
    "pluggy",
    "pytest",
    "ml-dtypes",
    "nvidia-ml-py",
    "nvidia-cuda-runtime",
    "nvidia-cuda-nvrtc",
    "hf-xet",
    "wrapt",
    "annotated-doc",
    "typing-extensions",
    "prometheus-client",
}
# Never imported on the LLaVA / Qwen2.5-VL path with FLASH_ATTN and VLLM_USE_FLASHINFER_SAMPLER=0:
# ahead-of-time kernels for other attention backends, MLA models, KV transfer, compilers.
UNNEEDED = {
    "flashinfer-cubin",
    "nvidia-cutlass-dsl",
    "nvidia-cutlass-dsl-libs-base",
    "nvidia-cutlass-dsl-libs-cu13",
    "quack-kernels",
    "tilelang",
    "z3-solver",
    "tokenspeed-mla",
    "tokenspeed-triton",
    "nvidia-cuda-nvcc",
    "nvidia-cuda-crt",
    "nvidia-nvvm",
    "nvidia-cuda-cccl",
    "nixl",
    "nixl-cu12",
    "nixl-cu13",
    "hf-transfer",
    "cuda-tile",
    "av",  # PyAV: video/audio decoding only, imported lazily behind a placeholder
}
TF4 = {"transformers", "huggingface-hub", "tokenizers"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main(report_path: str) -> None:
    with open(report_path, encoding="utf-8") as fh:
        report = json.load(fh)
    rows = []
    for item in report["install"]:
        meta = item["metadata"]
        name, version = canonical(meta["name"]), meta["version"]
        if name in IMAGE or name in UNNEEDED or "+stub" in version:
            continue
        rows.append(("tf4" if name in TF4 else "main", f"{name}=={version}"))
    for group, pin in sorted(rows):
        print(f"{group}\t{pin}")


if __name__ == "__main__":
    main(sys.argv[1])
