"""m3bench against ``vllm bench serve`` on one server, in one run: output tok/s, TTFT and TPOT side by side.

One bare vLLM CPU server (``python -m vllm.entrypoints.openai.api_server`` with the engine arguments of the
embedded catalog's model, tiny-llava-awq by default) is measured by both tools in turn, alternating
(m3bench, vllm, m3bench, vllm, ...) so a change in the machine's load hits both. Both send the same
text prompts (the calibration task set's prompts, text only: ``vllm bench serve --dataset-name custom
--skip-chat-template`` gets them as its JSONL, m3bench as a task set), closed loop at the same
concurrency, the same fixed output length (``ignore_eos``), greedy sampling (temperature 0), streamed
chat completions.

Figures per run:

* m3bench: its summary's steady-state window (first to last measure-phase send; tokens counted by
  arrival, loadgen/summary.py FORMULAS), after a warmup; TTFT and TPOT percentiles of the measured
  requests (``loadgen.stats``).
* vllm bench serve: what it reports (``output_throughput`` = output tokens / benchmark duration, from
  its first request to its last completion; its own TTFT/TPOT percentiles). With fixed lengths the
  closed loop runs in lockstep waves, so its ramp and drain cost little; ``--vllm-requests`` sets the
  number of prompts (default 50 x concurrency: the drain is then under 1 % of its duration).

``throughput_ratio`` = m3bench's mean output tok/s / vllm bench serve's mean over the rounds. Written
to ``--json`` (default docs/results/crosscheck-2026-12-05/crosscheck.json) after every run, so a crash
loses nothing measured; the machine's load average is recorded with every run. Runs under the heavy lock::

    flock /tmp/m3-heavy.lock .venv/bin/python tests/benchmarks/bench_crosscheck.py

``--ray`` also measures the Ray Serve LLM path (``m3bench serve up``, proxy with 0 ms stream batching)
the same way, as a second server.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "benchmarks"))

import psutil  # noqa: E402
from bench_serve_overhead import (  # noqa: E402
    MODES,
    WHERE,
    mode_catalog,
    start_bare,
    start_ray,
)

from benchmark.tasks.schema import TaskRecord  # noqa: E402
from loadgen.calibration.tasks import PROMPTS  # noqa: E402
from loadgen.profile import Profile, RunConfig  # noqa: E402
from loadgen.run import run_load  # noqa: E402
from serving.stack.ports import port_is_free  # noqa: E402

PY = sys.executable
VLLM_BENCH = (
    "from vllm.benchmarks.serve import add_cli_args, main; "
    "from vllm.utils.argparse_utils import FlexibleArgumentParser; "
    "p = FlexibleArgumentParser(); add_cli_args(p); main(p.parse_args())"
)


def text_prompts() -> list[str]:
    """Short prose prompts in several languages (the calibration set's, varied so no two are equal)."""
    base = list(PROMPTS.values())
    return [f"{base[i % len(base)]} ({i})" for i in range(64)]


def write_tasks(directory: Path, prompts: list[str], max_tokens: int) -> Path:
    """A text-only task set of the prompts (no images: both tools send the same text)."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = []
    for number, prompt in enumerate(prompts):
        record = TaskRecord.model_validate(
            {
                "id": f"crosscheck/{number}",
                "source": {
                    "benchmark": "m3bench-crosscheck",
                    "source_id": str(number),
                    "license": "Apache-2.0",
                },
                "natural_language": "en",
                "prompt": prompt,
                "grading": {"method": "exact_match", "timeout_s": 5.0},
                "expected_answer": "",
                "gen": {"max_tokens": max_tokens},
                "metadata": {"image_required": False, "group": "text-only"},
            }
        )
        lines.append(record.model_dump_json())
    (directory / "tasks.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory


def cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its children (0 when it is gone)."""
    try:
        process = psutil.Process(pid)
        total = sum(process.cpu_times()[:2])
        for child in process.children(recursive=True):
            try:
                total += sum(child.cpu_times()[:2])
            except psutil.Error:
                continue
        return float(total)
    except psutil.Error:
        return 0.0


def run_m3bench(
    endpoint: str, model: str, tasks: Path, out: Path, run_id: str, cfg: dict[str, Any]
) -> dict[str, Any]:
    profile = Profile.model_validate(
        {
            "mode": "closed",
            "stages": [
                {
                    "concurrency": cfg["concurrency"],
                    "warmup_s": cfg["warmup_s"],
                    "measure_requests": cfg["m3bench_requests"],
                }
            ],
            "sampling": {"by": "task"},
            "request": {
                "max_tokens": cfg["max_tokens"],
                "extra_body": {"ignore_eos": True},  # what vllm bench serve's --ignore-eos sends
                "temperature": 0.0,
                "timeout_s": 600,
            },
            "grading": {"enabled": False},
        }
    )
    config = RunConfig(
        endpoint=endpoint, tasks=tasks, models=[model], profile=profile, out_dir=out, run_id=run_id
    )
    started = time.monotonic()
    result = run_load(config)
    stage = result.summary.stages[0]
    ttft, tpot = stage.latency_s.ttft, stage.latency_s.tpot
    return {
        "tool": "m3bench",
        "output_tokens_per_s": stage.throughput.output_tokens_per_s,
        "output_tokens_per_s_basis": "steady-state window, tokens by arrival (loadgen/summary.py)",
        "born_output_tokens_per_s": stage.throughput.born_output_tokens_per_s,
        "requests_per_s": stage.throughput.requests_per_s,
        "window_s": stage.window.window_s,
        "ttft_ms": {k: _ms(ttft.at(k)) for k in ("p50", "p90", "p99")},
        "tpot_ms": {k: _ms(tpot.at(k)) for k in ("p50", "p90", "p99")},
        "requests": stage.counts.measured,
        "ok": stage.counts.ok,
        "valid": stage.generator.valid,
        "invalid_reasons": stage.generator.invalid_reasons,
        "tokens_per_write": stage.timing.tokens_per_write,
        "wall_s": round(time.monotonic() - started, 1),
        "run_dir": str(result.run_dir),
    }


def run_vllm(
    endpoint: str, model: str, dataset: Path, out: Path, name: str, cfg: dict[str, Any]
) -> dict[str, Any]:
    command = [
        PY, "-c", VLLM_BENCH,
        "--backend", "openai-chat", "--base-url", endpoint, "--endpoint", "/v1/chat/completions",
        "--model", model, "--tokenizer", cfg["tokenizer"],
        "--dataset-name", "custom", "--dataset-path", str(dataset), "--skip-chat-template",
        "--custom-output-len", str(cfg["max_tokens"]), "--ignore-eos", "--temperature", "0",
        "--num-prompts", str(cfg["vllm_requests"]), "--max-concurrency", str(cfg["concurrency"]),
        "--request-rate", "inf", "--num-warmups", str(cfg["concurrency"]),
        "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,90,99",
        "--disable-tqdm", "--save-result", "--result-dir", str(out), "--result-filename", f"{name}.json",
    ]  # fmt: skip
    started = time.monotonic()
    with (out / f"{name}.log").open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        cpu = 0.0
        while process.poll() is None:
            cpu = max(cpu, cpu_seconds(process.pid))
            time.sleep(0.5)
    if process.returncode != 0:
        raise RuntimeError(f"vllm bench serve failed ({process.returncode}); see {out / f'{name}.log'}")
    result = json.loads((out / f"{name}.json").read_text())
    return {
        "tool": "vllm bench serve",
        "output_tokens_per_s": result["output_throughput"],
        "output_tokens_per_s_basis": "total output tokens / benchmark duration (vllm.benchmarks.serve)",
        "requests_per_s": result["request_throughput"],
        "duration_s": result["duration"],
        "ttft_ms": {f"p{q}": result.get(f"p{q}_ttft_ms") for q in (50, 90, 99)},
        "tpot_ms": {f"p{q}": result.get(f"p{q}_tpot_ms") for q in (50, 90, 99)},
        "requests": cfg["vllm_requests"],
        "ok": result["completed"],
        "wall_s": round(time.monotonic() - started, 1),
        "cpu_s_seen": round(cpu, 1),
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e3, 3)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def compare(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over the rounds and the ratio m3bench / vllm bench serve."""
    by_tool: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by_tool.setdefault(run["tool"], []).append(run)
    if set(by_tool) != {"m3bench", "vllm bench serve"}:
        return {}
    mine = [r["output_tokens_per_s"] for r in by_tool["m3bench"] if r["output_tokens_per_s"]]
    theirs = [r["output_tokens_per_s"] for r in by_tool["vllm bench serve"] if r["output_tokens_per_s"]]
    summary: dict[str, Any] = {
        "m3bench_output_tokens_per_s": round(_mean(mine), 2),
        "vllm_bench_serve_output_tokens_per_s": round(_mean(theirs), 2),
        "throughput_ratio": round(_mean(mine) / _mean(theirs), 4),
        "per_round_ratio": [round(a / b, 4) for a, b in zip(mine, theirs, strict=False)],
        "m3bench_round_spread": round((max(mine) - min(mine)) / _mean(mine), 4),
        "vllm_round_spread": round((max(theirs) - min(theirs)) / _mean(theirs), 4),
    }
    for metric in ("ttft_ms", "tpot_ms"):
        for q in ("p50", "p99"):
            a = [r[metric][q] for r in by_tool["m3bench"] if r[metric][q] is not None]
            b = [r[metric][q] for r in by_tool["vllm bench serve"] if r[metric][q] is not None]
            if a and b:
                summary[f"{metric[:-3]}_{q}_ms"] = {"m3bench": round(_mean(a), 2), "vllm": round(_mean(b), 2)}
    return summary


def write(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(document, indent=1) + "\n")
    temporary.replace(path)


def measure_server(
    name: str,
    endpoint: str,
    model: str,
    cfg: dict[str, Any],
    out: Path,
    document: dict[str, Any],
    json_path: Path,
) -> None:
    tasks = write_tasks(out / "tasks", text_prompts(), cfg["max_tokens"])
    dataset = out / "prompts.jsonl"
    dataset.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in text_prompts()))
    entry: dict[str, Any] = {"endpoint": endpoint, "runs": []}
    document["servers"][name] = entry
    for round_index in range(cfg["rounds"]):
        for tool in ("m3bench", "vllm"):
            load_before = os.getloadavg()[0]
            label = f"{name}-{tool}-{round_index}"
            print(f"  {label} ...", flush=True)
            if tool == "m3bench":
                run = run_m3bench(endpoint, model, tasks, out / "load", label, cfg)
            else:
                run = run_vllm(endpoint, model, dataset, out, label, cfg)
            run.update({"round": round_index, "load_avg_1m_before": round(load_before, 2)})
            run["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
            entry["runs"].append(run)
            print(
                f"  {label}: {run['output_tokens_per_s']:.1f} out tok/s, "
                f"TTFT p50 {run['ttft_ms']['p50']} ms, TPOT p50 {run['tpot_ms']['p50']} ms "
                f"(load {run['load_avg_1m_before']} -> "
                f"{run['load_avg_1m_after']})",
                flush=True,
            )
            entry.update(compare(entry["runs"]))
            write(json_path, document)
    print(
        f"{name}: m3bench {entry['m3bench_output_tokens_per_s']} / vllm bench serve "
        f"{entry['vllm_bench_serve_output_tokens_per_s']} out tok/s = "
        f"throughput_ratio {entry['throughput_ratio']}",
        flush=True,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--warmup-s", type=float, default=10.0)
    ap.add_argument("--m3bench-requests", type=int, default=None, help="default: 40 x concurrency")
    ap.add_argument("--vllm-requests", type=int, default=None, help="default: 50 x concurrency")
    ap.add_argument("--ray", action="store_true", help="also the Ray Serve LLM path (proxy, 0 ms batching)")
    ap.add_argument("--port-base", type=int, default=37200)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=REPO / "docs/results/crosscheck-2026-12-05/crosscheck.json")
    args = ap.parse_args()
    from serving.app import engine_arguments, resolve_models
    from serving.catalog import load_catalog

    where = WHERE["cpu"]
    catalog_path = Path(where["catalog"]).resolve()
    catalog = load_catalog(catalog_path).select([where["model"]])
    (model,) = resolve_models(catalog, catalog_path.parent)
    kwargs = engine_arguments(catalog, model)
    cfg: dict[str, Any] = {
        "model": where["model"],
        "concurrency": args.concurrency,
        "max_tokens": args.max_tokens,
        "rounds": args.rounds,
        "warmup_s": args.warmup_s,
        "m3bench_requests": args.m3bench_requests or 40 * args.concurrency,
        "vllm_requests": args.vllm_requests or 50 * args.concurrency,
        "tokenizer": str(kwargs["model"]),
    }
    out = args.out or Path(tempfile.mkdtemp(prefix="m3bench-crosscheck-"))
    out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    document: dict[str, Any] = {
        "started": stamp,
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "machine": {"cpus": os.cpu_count(), "load_avg_at_start": [round(x, 2) for x in os.getloadavg()]},
        "settings": cfg,
        "servers": {},
    }
    bare_port = args.port_base + 149
    if not port_is_free(bare_port):
        print(f"error: port {bare_port} is in use; pass another --port-base", file=sys.stderr)
        return 2
    try:
        with ExitStack() as stack:
            endpoint = start_bare(kwargs, where["model"], bare_port, out / "bare-vllm.log", stack)
            measure_server("bare_vllm", endpoint, where["model"], cfg, out, document, args.json)
        if args.ray:
            base = catalog.model_dump(mode="json", exclude_defaults=False)
            if model.source.kind == "local":
                base["models"][0]["source"] = model.source.location
            with ExitStack() as stack:
                ray_args = argparse.Namespace(port_base=args.port_base)
                endpoint, _state = start_ray(
                    "proxy-0ms", mode_catalog(base, "proxy-0ms", out), ray_args, out, stack
                )
                measure_server("ray_serve_proxy_0ms", endpoint, where["model"], cfg, out, document, args.json)
    except (RuntimeError, OSError, ValueError) as exc:
        print(f"error: {' '.join(str(exc).split())[:400]}", file=sys.stderr)
        return 1
    document["machine"]["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    write(args.json, document)
    print(f"figures in {args.json}; records and logs in {out}", flush=True)
    assert MODES  # the Ray modes bench_serve_overhead knows (proxy-0ms among them)
    return 0


if __name__ == "__main__":
    sys.exit(main())
