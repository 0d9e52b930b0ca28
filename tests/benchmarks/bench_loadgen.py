"""Load generators side by side against one programmed server: TTFT error and output tokens/s per core.

One calibration server (TTFT 100 ms, ITL 10 ms, 64 tokens per reply, SCHED_FIFO, pinned to CPU 0)
serves every tool in turn; each tool runs pinned to CPU 1 with the same priority (nice -10 by default), closed
loop at each concurrency, ``rounds`` requests per stream. Measured per tool and concurrency:

* TTFT error = the tool's own per-request TTFT - 100 ms (p50, p99, max);
* the server's own first-token lateness in that run (so the server's part of the error is visible);
* output tokens/s delivered (server side: tokens sent in the window from the first request received
  to the last reply ended), the tool's CPU use over that window (its whole process tree), and
  tokens per CPU-second: the output tokens/s one fully used core would sustain at that load;
* streams the server saw open at once (a tool that cannot hold C streams open shows it here).

Run (figures and command in docs/loadgen.md)::

    .venv/bin/python tests/benchmarks/bench_loadgen.py --concurrency 1,64,256 --out results/bench_loadgen

GuideLLM and AIPerf are used from their own virtual environments (``--guidellm``/``--aiperf``, default
``.cache/guidellm-venv`` and ``.cache/aiperf-venv``) and skipped when absent.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from loadgen.calibration.launch import RunningServer, calibration_server  # noqa: E402
from loadgen.calibration.tasks import write_calibration_tasks  # noqa: E402

TTFT_S, ITL_S, TOKENS = 0.100, 0.010, 64
PY = sys.executable


def build_tokenizer(directory: Path) -> Path:
    """A small byte-level BPE tokenizer, so no tool needs a download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if (directory / "tokenizer.json").is_file():
        return directory
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=800, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    words = [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "a",
        "lazy",
        "dog",
        "while",
        "seven",
        "tokens",
        "stream",
        "out",
        "of",
        "a",
        "server",
    ]
    corpus = [" ".join(words[(i + j) % len(words)] for j in range(40)) for i in range(400)]
    tokenizer.train_from_iterator(corpus, trainer)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>")
    wrapped.save_pretrained(str(directory))
    return directory


# ----------------------------------------------------------------------------- tools
def m3bench(
    url: str, c: int, n: int, work: Path, context: dict[str, Any]
) -> tuple[list[str], Callable[[], dict[str, Any]]]:
    profile = {
        "mode": "closed",
        "stages": [{"concurrency": c, "measure_requests": n}],
        "request": {"max_tokens": TOKENS},
        "grading": {"enabled": False},
    }
    command = [
        PY,
        "-c",
        "from loadgen.cli import app; app()",
        "run",
        "--endpoint",
        url,
        "--tasks",
        str(context["tasks"]),
        "--models",
        "calib",
        "--profile",
        json.dumps(profile),
        "--out",
        str(work),
        "--run-id",
        "run",
        "--no-preflight",
    ]

    def parse() -> dict[str, Any]:
        from loadgen.records import read_records

        records = [r for r in read_records(work / "run" / "records.jsonl") if r.phase == "measure"]
        ttfts = [(r.first_token_ns - r.sent_ns) / 1e9 for r in records if r.first_token_ns is not None]
        return {"ttft_s": ttfts, "ok": sum(r.status == "ok" for r in records), "sent": len(records)}

    return command, parse


def vllm(
    url: str, c: int, n: int, work: Path, context: dict[str, Any]
) -> tuple[list[str], Callable[[], dict[str, Any]]]:
    code = (
        "from vllm.benchmarks.serve import add_cli_args, main; "
        "from vllm.utils.argparse_utils import FlexibleArgumentParser; "
        "p = FlexibleArgumentParser(); add_cli_args(p); main(p.parse_args())"
    )
    command = [
        PY,
        "-c",
        code,
        "--backend",
        "openai-chat",
        "--base-url",
        url,
        "--endpoint",
        "/v1/chat/completions",
        "--model",
        "calib",
        "--tokenizer",
        str(context["tokenizer"]),
        "--dataset-name",
        "random",
        "--random-input-len",
        "16",
        "--random-output-len",
        str(TOKENS),
        "--num-prompts",
        str(n),
        "--max-concurrency",
        str(c),
        "--request-rate",
        "inf",
        "--ignore-eos",
        "--disable-tqdm",
        "--save-result",
        "--save-detailed",
        "--result-dir",
        str(work),
        "--result-filename",
        "vllm.json",
    ]

    def parse() -> dict[str, Any]:
        result = json.loads((work / "vllm.json").read_text())
        ttfts = [
            t
            for t, ok in zip(result["ttfts"], result.get("errors", [""] * len(result["ttfts"])), strict=False)
            if t and not ok
        ]
        return {"ttft_s": ttfts, "ok": result["completed"], "sent": n}

    return command, parse


def guidellm(
    url: str, c: int, n: int, work: Path, context: dict[str, Any]
) -> tuple[list[str], Callable[[], dict[str, Any]]]:
    exe = context["guidellm"] / "bin" / "guidellm"
    command = [
        str(exe),
        "run",
        "--backend",
        f"kind=openai_http,target={url},model=calib",
        "--profile",
        f"kind=concurrent,streams={c}",
        "--constraint",
        f"kind=max_requests,count={n}",
        "--data",
        f"kind=synthetic_text,prompt_tokens=16,output_tokens={TOKENS}",
        "--tokenizer",
        f"kind=hf_auto,model={context['tokenizer']}",
        "--output",
        f"kind=json,path={work / 'guidellm.json'}",
        "--disable-console-interactive",
    ]

    def parse() -> dict[str, Any]:
        report = json.loads((work / "guidellm.json").read_text())
        ttfts = [v / 1e3 for v in _find_values(report, "time_to_first_token_ms")]
        return {"ttft_s": ttfts, "ok": len(ttfts), "sent": n}

    return command, parse


def aiperf(
    url: str, c: int, n: int, work: Path, context: dict[str, Any]
) -> tuple[list[str], Callable[[], dict[str, Any]]]:
    exe = context["aiperf"] / "bin" / "aiperf"
    command = [
        str(exe),
        "profile",
        "--model",
        "calib",
        "--url",
        url,
        "--endpoint-type",
        "chat",
        "--streaming",
        "--tokenizer",
        str(context["tokenizer"]),
        "--concurrency",
        str(c),
        "--request-count",
        str(n),
        "--prompt-input-tokens-mean",
        "16",
        "--prompt-output-tokens-mean",
        str(TOKENS),
        "--extra-inputs",
        "ignore_eos:true",
        "--output-artifact-dir",
        str(work),
        "--ui",
        "none",
    ]

    def parse() -> dict[str, Any]:
        rows = [
            json.loads(line)
            for path in work.rglob("*.jsonl")
            for line in path.read_text().splitlines()
            if line.strip() and "time_to_first_token" in line
        ]
        ttfts = []
        for row in rows:
            metric = row.get("metrics", {}).get("time_to_first_token")
            if isinstance(metric, dict):
                unit = metric.get("unit", "ms")
                ttfts.append(float(metric["value"]) / (1e3 if unit == "ms" else 1e9 if unit == "ns" else 1.0))
        return {"ttft_s": ttfts, "ok": len(ttfts), "sent": n}

    return command, parse


def _find_values(node: Any, key: str) -> list[float]:
    """Every per-request value under ``key`` in a nested report (GuideLLM keeps them in request lists)."""
    found: list[float] = []
    if isinstance(node, dict):
        for name, value in node.items():
            if name == key and isinstance(value, (int, float)):
                found.append(float(value))
            else:
                found += _find_values(value, key)
    elif isinstance(node, list):
        for item in node:
            found += _find_values(item, key)
    return found


TOOLS = {"m3bench": m3bench, "vllm": vllm, "guidellm": guidellm, "aiperf": aiperf}


# ----------------------------------------------------------------------------- measurement
class TreeCpu:
    """CPU seconds of a process and all its descendants, sampled with perf_counter_ns stamps."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.seen: dict[int, float] = {}
        self.samples: list[tuple[int, float]] = []

    def sample(self) -> None:
        try:
            processes = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for process in processes:
            try:
                times = process.cpu_times()
                self.seen[process.pid] = times.user + times.system
            except psutil.NoSuchProcess:
                pass  # keep its last value: CPU it used is not forgotten when it exits
        self.samples.append((time.perf_counter_ns(), sum(self.seen.values())))

    def between(self, start_ns: int, end_ns: int) -> float:
        stamps = np.array([s[0] for s in self.samples], dtype=float)
        cpu = np.array([s[1] for s in self.samples])
        return float(np.interp(end_ns, stamps, cpu) - np.interp(start_ns, stamps, cpu))


PRIORITY = {"rt": ["chrt", "-f", "10"], "nice": ["nice", "-n", "-10"], "none": []}


def run_one(
    name: str,
    c: int,
    n: int,
    server: RunningServer,
    log: Path,
    work: Path,
    context: dict[str, Any],
    core: int,
    timeout_s: float,
) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    command, parse = TOOLS[name](server.url, c, n, work, context)
    command = [*PRIORITY[context["priority"]], "taskset", "-c", str(core), *command]
    offset = log.stat().st_size if log.exists() else 0
    server.reset()
    with (work / "tool.log").open("w") as output:
        process = subprocess.Popen(
            command,
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=str(ROOT),
            env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
        )
        cpu = TreeCpu(process.pid)
        deadline = time.monotonic() + timeout_s
        while process.poll() is None and time.monotonic() < deadline:
            cpu.sample()
            time.sleep(0.1)
        if process.poll() is None:
            process.kill()
        process.wait()
        cpu.sample()
    stats = server.stats()
    with log.open() as handle:
        handle.seek(offset)
        streams = sorted(
            (int(f[1]), int(f[2]), int(f[3])) for f in (line.split() for line in handle) if len(f) == 4
        )
    streams = streams[-n:]
    result: dict[str, Any] = {
        "tool": name,
        "concurrency": c,
        "requests": n,
        "exit_code": process.returncode,
        "max_open_streams": stats["max_open_streams"],
        "server_first_token_late_p99_ms": _ms(stats["first_token_lateness"]["p99_s"]),
    }
    try:
        parsed = parse()
    except (OSError, ValueError, KeyError) as exc:
        result["error"] = f"could not read the tool's output: {exc}"
        return result
    if not streams or not parsed["ttft_s"]:
        result["error"] = "no requests measured"
        return result
    start, end = streams[0][0], max(s[2] for s in streams)
    window = (end - start) / 1e9
    used = cpu.between(start, end)
    errors = (np.asarray(parsed["ttft_s"]) - TTFT_S) * 1e3
    result.update(
        {
            "ok": parsed["ok"],
            "measured": len(errors),
            "ttft_err_p50_ms": float(np.percentile(errors, 50)),
            "ttft_err_p99_ms": float(np.percentile(errors, 99)),
            "ttft_err_max_ms": float(errors.max()),
            "window_s": window,
            "output_tok_s": len(streams) * TOKENS / window,
            "cpu_fraction": used / window,
            "tok_per_cpu_s": len(streams) * TOKENS / used if used > 0 else None,
        }
    )
    return result


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", default="1,64,256")
    parser.add_argument("--tools", default="m3bench,vllm,guidellm,aiperf")
    parser.add_argument("--rounds", type=int, default=8, help="requests per stream (at least 20 requests)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "bench_loadgen")
    parser.add_argument("--guidellm", type=Path, default=ROOT / ".cache" / "guidellm-venv")
    parser.add_argument("--aiperf", type=Path, default=ROOT / ".cache" / "aiperf-venv")
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--tool-core", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument(
        "--priority",
        choices=sorted(PRIORITY),
        default="nice",
        help="the same for every tool: nice = nice -10; rt = SCHED_FIFO 10 (multi-process tools starve)",
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    context: dict[str, Any] = {
        "tokenizer": build_tokenizer(args.out / "tokenizer"),
        "guidellm": args.guidellm,
        "aiperf": args.aiperf,
        "priority": args.priority,
        "tasks": write_calibration_tasks(args.out / "tasks", per_language=2, max_tokens=TOKENS),
    }
    tools = [t for t in args.tools.split(",") if t]
    for name, venv in (("guidellm", args.guidellm), ("aiperf", args.aiperf)):
        if name in tools and not (venv / "bin" / name).exists():
            print(f"skipping {name}: not installed in {venv}", flush=True)
            tools.remove(name)
    log = args.out / "server-timing.txt"
    log.unlink(missing_ok=True)
    results = []
    server_args = (
        "--ttft-ms",
        str(TTFT_S * 1e3),
        "--itl-ms",
        str(ITL_S * 1e3),
        "--output-len",
        str(TOKENS),
        "--models",
        "*",
        "--realtime",
        "--timing-log",
        str(log),
    )
    with calibration_server(*server_args, cpus=[args.server_core]) as server:
        for c in (int(x) for x in args.concurrency.split(",")):
            n = max(20, c * args.rounds)
            for name in tools:
                work = args.out / f"c{c}" / name
                shutil.rmtree(work, ignore_errors=True)
                row = run_one(name, c, n, server, log, work, context, args.tool_core, args.timeout)
                results.append(row)
                print(json.dumps(row), flush=True)
    meta = {
        "priority": args.priority,
        "server_core": args.server_core,
        "tool_core": args.tool_core,
        "ttft_s": TTFT_S,
        "itl_s": ITL_S,
        "tokens": TOKENS,
        "rounds": args.rounds,
        "loadavg": os.getloadavg(),
    }
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print_table(results)


def print_table(results: list[dict[str, Any]]) -> None:
    def cell(value: Any, digits: int = 1) -> str:
        return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)

    print(
        "\n| tool | streams | TTFT err p50 ms | p99 ms | max ms | server late p99 ms | out tok/s | CPU | "
        "tok/s per core | max open |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        if "error" in r:
            print(f"| {r['tool']} | {r['concurrency']} | {r['error']} | | | | | | | |")
            continue
        print(
            f"| {r['tool']} | {r['concurrency']} | {cell(r['ttft_err_p50_ms'], 2)} "
            f"| {cell(r['ttft_err_p99_ms'], 2)} "
            f"| {cell(r['ttft_err_max_ms'])} | {cell(r['server_first_token_late_p99_ms'], 2)} | "
            f"{cell(r['output_tok_s'], 0)} | {r['cpu_fraction']:.0%} | {cell(r['tok_per_cpu_s'], 0)} | "
            f"{r['max_open_streams']} |"
        )


if __name__ == "__main__":
    main()
