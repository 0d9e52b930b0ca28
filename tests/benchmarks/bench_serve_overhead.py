"""What Ray Serve costs: the same tiny INT4 model, engine arguments and load, served by Ray Serve LLM
(``serve up``'s stack) and by a bare ``python -m vllm.entrypoints.openai.api_server``, measured with
m3bench's load generator in one run.

Both servers stay up for the whole run and the load alternates between them (bare, Ray, bare, Ray, ...)
so that whatever else the machine does at the time weighs on both alike. Each round is a closed loop at
a fixed concurrency with image + text requests and a fixed output length (``ignore_eos``). Figures:
output-token throughput (ok requests' usage tokens / measure window) pooled over rounds, its Ray/bare
ratio, and TTFT p50/p99 over all ok measure-phase requests, plus the per-round throughput ratios and
the CPU seconds every process used in each round (where Ray Serve's cost goes).

    .venv/bin/python tests/benchmarks/bench_serve_overhead.py --rounds 3 --concurrency 4 --measure-s 30
    .venv/bin/python tests/benchmarks/bench_serve_overhead.py --batching-ms 50   # Ray Serve LLM's default
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from loadgen.calibration.tasks import write_calibration_tasks
from loadgen.profile import Profile, RunConfig
from loadgen.records import read_records
from loadgen.run import run_load
from loadgen.timings import ttft_s, wall_s
from serving.app import engine_arguments, resolve_models
from serving.catalog import load_catalog
from serving.stack import PortPlan, ServeStack, StackConfig
from serving.stack.ports import port_is_free
from serving.stack.smoke import chat_body, image_data_url, stream_chat

REPO = Path(__file__).resolve().parents[2]
CATALOG = REPO / "deploy/models/embedded-cpu.yaml"
_NOT_FLAGS = {"model", "served_model_name", "distributed_executor_backend", "enable_log_requests"}


def bare_server_command(kwargs: dict[str, Any], model: str, port: int) -> list[str]:
    """``vllm.entrypoints.openai.api_server`` with the engine arguments Ray Serve LLM hands vLLM."""
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(kwargs["model"])]
    cmd += ["--served-model-name", model, "--host", "127.0.0.1", "--port", str(port)]
    for key, value in sorted(kwargs.items()):
        if key in _NOT_FLAGS:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            cmd.append(flag)
        elif value is not False:
            cmd += [flag, json.dumps(value) if isinstance(value, dict) else str(value)]
    return cmd


def start_bare(kwargs: dict[str, Any], model: str, port: int, log: Path, stack: ExitStack) -> str:
    with log.open("w") as out:
        process = subprocess.Popen(
            bare_server_command(kwargs, model, port), stdout=out, stderr=subprocess.STDOUT
        )

    def stop() -> None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()

    stack.callback(stop)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"bare vLLM server exited ({process.returncode}); see {log}")
        try:
            with urllib.request.urlopen(f"{endpoint}/v1/models", timeout=5):
                return endpoint
        except OSError:
            time.sleep(2)
    raise RuntimeError(f"bare vLLM server not up after 600 s; see {log}")


def run_round(
    endpoint: str, model: str, tasks: Path, out: Path, run_id: str, args: argparse.Namespace
) -> Path:
    profile = Profile.model_validate(
        {
            "mode": "closed",
            "stages": [
                {"concurrency": args.concurrency, "warmup_s": 5, "measure_s": args.measure_s, "cooldown_s": 1}
            ],
            "request": {"max_tokens": args.max_tokens, "extra_body": {"ignore_eos": True}, "timeout_s": 120},
            "grading": {"enabled": False},
        }
    )
    result = run_load(
        RunConfig(endpoint=endpoint, tasks=tasks, models=[model], profile=profile, out_dir=out, run_id=run_id)
    )
    return result.records_path


def cpu_snapshot() -> dict[int, tuple[str, float]]:
    """CPU seconds used so far by every process, labelled by its title (Ray and vLLM name theirs)."""
    found = {}
    for process in psutil.process_iter(["name", "cmdline"]):
        try:
            times = process.cpu_times()
            label = process.info["name"] or "?"
            if label.startswith("python"):
                label = " ".join((process.info["cmdline"] or [])[1:3])[-48:]
            found[process.pid] = (label, times.user + times.system)
        except psutil.Error:
            continue
    return found


def cpu_used(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds per process label between two snapshots (labels above 0.5 s)."""
    used: dict[str, float] = {}
    for pid, (label, seconds) in after.items():
        delta = seconds - before.get(pid, (label, 0.0))[1]
        used[label] = used.get(label, 0.0) + delta
    return {k: round(v, 1) for k, v in sorted(used.items(), key=lambda kv: -kv[1]) if v > 0.5}


def figures(paths: list[Path]) -> dict[str, Any]:
    tokens, window, ttfts, errors = 0, 0.0, [], 0
    for path in paths:
        measured = [r for r in read_records(path) if r.phase == "measure"]
        ok = [r for r in measured if r.status == "ok"]
        errors += len(measured) - len(ok)
        tokens += sum(r.output_tokens or 0 for r in ok)
        window += max(wall_s(r, r.end_ns) for r in measured) - min(wall_s(r, r.sent_ns) for r in measured)
        ttfts += [t for t in (ttft_s(r) for r in ok) if t is not None]
    p50, p99 = np.percentile(ttfts, [50, 99])
    return {
        "output_tokens_per_s": tokens / window,
        "ttft_p50_ms": 1e3 * p50,
        "ttft_p99_ms": 1e3 * p99,
        "requests": len(ttfts),
        "errors": errors,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--catalog", type=Path, default=CATALOG)
    ap.add_argument("--model", default="tiny-llava-awq")
    ap.add_argument(
        "--batching-ms", type=float, default=None, help="override the catalog's stream_batching_interval_ms"
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--measure-s", type=float, default=30.0)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--port-base", type=int, default=37000)
    ap.add_argument("--out", type=Path, default=None, help="keep records and the figures here")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="m3bench-overhead-"))
    out.mkdir(parents=True, exist_ok=True)
    catalog = load_catalog(args.catalog).select([args.model])
    if args.batching_ms is not None:
        catalog = catalog.model_copy(update={"stream_batching_interval_ms": args.batching_ms})
    (model,) = resolve_models(catalog, args.catalog.resolve().parent)
    kwargs = engine_arguments(catalog, model)
    tasks = write_calibration_tasks(
        out / "tasks", per_language=4, languages=("en", "zh"), max_tokens=args.max_tokens
    )
    bare_port = args.port_base + 151
    if not port_is_free(bare_port):
        raise SystemExit(f"port {bare_port} is in use; pass another --port-base")
    temp_dir = Path(f"/tmp/m3bo-{args.port_base}")  # short: Ray's socket paths
    paths: dict[str, list[Path]] = {"bare": [], "ray": []}
    cpu: dict[str, list[dict[str, float]]] = {"bare": [], "ray": []}  # CPU seconds per process, per round
    with ExitStack() as stack:
        print(f"bare vLLM: {' '.join(bare_server_command(kwargs, args.model, bare_port))}", flush=True)
        endpoints = {"bare": start_bare(kwargs, args.model, bare_port, out / "bare-vllm.log", stack)}
        config = StackConfig(
            ports=PortPlan(args.port_base, http=args.port_base + 150),
            temp_dir=temp_dir,
            state_dir=out / "serve-state",
        )
        serve = ServeStack(catalog, config=config, progress=lambda m: print(f"serve: {m}", flush=True))
        stack.callback(lambda: shutil.rmtree(temp_dir, ignore_errors=True))
        stack.callback(serve.down)
        serve.up()
        endpoints["ray"] = serve.endpoint
        for name, endpoint in endpoints.items():  # same warm-up for both (serve up already sent one)
            assert stream_chat(endpoint, chat_body(args.model, image_data_url(), 8), timeout_s=300).ok, name
        for round_index in range(args.rounds):
            for name in ("bare", "ray"):
                run_id = f"{name}-{round_index}"
                before = cpu_snapshot()
                paths[name].append(run_round(endpoints[name], args.model, tasks, out / "load", run_id, args))
                cpu[name].append(cpu_used(before, cpu_snapshot()))
                row = {**figures(paths[name][-1:]), "cpu_s": cpu[name][-1]}
                print(f"round {round_index} {name}: {json.dumps(row)}", flush=True)
    result = {name: figures(p) for name, p in paths.items()}
    ratios = [
        figures([r])["output_tokens_per_s"] / figures([b])["output_tokens_per_s"]
        for b, r in zip(paths["bare"], paths["ray"], strict=True)
    ]
    result["throughput_ratio_ray_over_bare"] = (
        result["ray"]["output_tokens_per_s"] / result["bare"]["output_tokens_per_s"]
    )
    result["per_round_ratios"] = ratios
    result["ttft_p50_delta_ms"] = result["ray"]["ttft_p50_ms"] - result["bare"]["ttft_p50_ms"]
    result["ttft_p99_delta_ms"] = result["ray"]["ttft_p99_ms"] - result["bare"]["ttft_p99_ms"]
    result["stream_batching_interval_ms"] = catalog.stream_batching_interval_ms
    result["cpu_seconds_per_round"] = cpu
    result["settings"] = {
        **vars(args),
        "out": str(out),
        "engine_args": kwargs,
        "cpus": os.cpu_count(),
        "load_avg": os.getloadavg(),
    }
    (out / "overhead.json").write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
