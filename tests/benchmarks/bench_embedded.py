"""Benchmark of the embedded models on this CPU, in one run: model build time, vLLM engine start
time, decode throughput (output tokens/s at a fixed batch) and resident weight memory, BF16 against
INT4 (AWQ and GPTQ), with INT4 served by vLLM's native kernel where this CPU has it and by m3bench's
torch int4 kernel.

    .venv/bin/python tests/benchmarks/bench_embedded.py [--out docs/results/embedded-bench.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from serving.embedded import build_models  # noqa: E402
from serving.int4_cpu import native_kernel_available  # noqa: E402
from tests.support.engine import run_probe  # noqa: E402

BATCH, MAX_TOKENS = 8, 64


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "results" / "embedded-bench.json")
    ap.add_argument("--families", default="tiny-llava,tiny-qwen2vl")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        built = build_models(cache_dir=Path(tmp) / "fresh")
        build_all_s = time.perf_counter() - t0
        print(f"build: all {len(built)} models from scratch in {build_all_s:.1f} s")
        models = {m.name: m for m in build_models()}
        native = native_kernel_available()
        cases: list[tuple[str, str]] = []
        for fam in args.families.split(","):
            cases.append((f"{fam}-bf16", "auto"))
            for q in ("awq", "gptq"):
                if native:
                    cases.append((f"{fam}-{q}", "native"))
                cases.append((f"{fam}-{q}", "torch"))
        rows = []
        for name, backend in cases:
            run = run_probe(
                models[name].path,
                Path(tmp) / f"{name}-{backend}.json",
                backend=backend,
                decode_requests=BATCH,
                max_tokens=MAX_TOKENS,
            )
            if run.result is None:
                print(f"{name} [{backend}]: FAILED\n{run.stderr[-2000:]}")
                return 1
            r = run.result
            row = {
                "model": name,
                "int4_kernel": "-" if name.endswith("bf16") else backend,
                "engine_start_s": round(r["engine_start_s"], 1),
                "output_tok_per_s": round(r["decode_output_tokens"] / r["decode_seconds"], 1),
                "weight_mib_total": round(r["weight_bytes_total"] / 2**20, 2),
                "weight_mib_lm_linears": round(r["weight_bytes_lm_linears"] / 2**20, 2),
            }
            rows.append(row)
            print(json.dumps(row))
    by = {(r["model"], r["int4_kernel"]): r for r in rows}
    for row in rows:
        base = by[(row["model"].rsplit("-", 1)[0] + "-bf16", "-")]
        row["weight_ratio_lm_linears"] = round(
            row["weight_mib_lm_linears"] / base["weight_mib_lm_linears"], 3
        )
        row["weight_ratio_total"] = round(row["weight_mib_total"] / base["weight_mib_total"], 3)
        row["throughput_ratio"] = round(row["output_tok_per_s"] / base["output_tok_per_s"], 2)
    header = list(rows[0].keys())
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(row[h]) for h in header) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "command": "python tests/benchmarks/bench_embedded.py",
                "machine": {"cpu": platform.processor() or platform.machine(), "native_int4": native},
                "batch": BATCH,
                "max_tokens": MAX_TOKENS,
                "build_all_from_scratch_s": round(build_all_s, 1),
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
