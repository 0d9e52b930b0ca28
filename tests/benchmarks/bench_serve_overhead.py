"""The serving tax: the same model and engine arguments served by a bare ``vllm serve``
(``python -m vllm.entrypoints.openai.api_server``) and by Ray Serve LLM in each serving mode, measured
by m3bench's load generator in one sitting, one server after the other.

Modes (the catalog's ``ingress`` / ``direct_streaming`` / ``stream_batching_interval_ms``):
  proxy-0ms       Ray's Python proxy + OpenAiIngress, every chunk sent as it comes
  proxy-50ms      the same with Ray Serve LLM's default 50 ms stream batching
  haproxy         HAProxy + RAY_SERVE_THROUGHPUT_OPTIMIZED, OpenAiIngress kept, 50 ms batching
  haproxy-direct  HAProxy + direct streaming: the LLMServer replica is the ingress (Ray's high-
                  throughput mode; batching does not apply)

Each server is started, warmed up (one image request), measured in closed loop at every concurrency
(image + text prompts, fixed output length via ``ignore_eos``), then stopped. Every Ray mode is
brought up by ``m3bench serve up`` in its own process (Ray reads the mode's variables at import).
Per (mode, concurrency) row: output-token throughput ÷ bare's, TTFT p50/p99 added to bare's, TPOT
p50/p99 (and added), and the CPU seconds per 1,000 output tokens of every process group (proxy,
ingress, HAProxy, LLMServer replica, engine, bare API server, other Ray processes, the generator,
everything else on the machine), over each whole load run. Rows are merged into ``--json`` after
every server, so a crash loses nothing measured.

    flock /tmp/m3-heavy.lock .venv/bin/python tests/benchmarks/bench_serve_overhead.py --where cpu
    python3 tests/benchmarks/bench_serve_overhead.py --where h200 --modes haproxy-direct,proxy-50ms
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import psutil  # noqa: E402
import yaml  # noqa: E402

from loadgen.calibration.tasks import write_calibration_tasks  # noqa: E402
from loadgen.profile import Profile, RunConfig  # noqa: E402
from loadgen.records import read_records  # noqa: E402
from loadgen.run import RunResult, run_load  # noqa: E402
from loadgen.summary_model import RunSummary  # noqa: E402
from serving.stack.ports import port_is_free  # noqa: E402
from serving.stack.smoke import chat_body, image_data_url, stream_chat  # noqa: E402

MODES: dict[str, dict[str, Any]] = {
    "proxy-0ms": {"ingress": "proxy", "direct_streaming": False, "stream_batching_interval_ms": 0},
    "proxy-50ms": {"ingress": "proxy", "direct_streaming": False, "stream_batching_interval_ms": 50},
    "haproxy": {"ingress": "haproxy", "direct_streaming": False, "stream_batching_interval_ms": 50},
    "haproxy-direct": {"ingress": "haproxy", "direct_streaming": True, "stream_batching_interval_ms": 0},
}
WHERE: dict[str, dict[str, Any]] = {
    # 2 shared cores: the tiny models bear a few streams; the generator shares the cores.
    "cpu": {
        "catalog": REPO / "deploy/models/embedded-cpu.yaml",
        "model": "tiny-llava-awq",
        "concurrency": [1, 4, 16],
        "max_tokens": 64,
        "warmup_s": 5.0,
        "measure_s": 20.0,
        "workers": 0,
    },
    # One H200; 5 servers x 4 stages of ~20 s plus engine starts: split --modes over two calls if a
    # cold engine start (about 160 s the first time) does not fit the call.
    "h200": {
        "catalog": REPO / "deploy/device/models/h200-dummy.yaml",
        "model": "llava-1.5-7b-awq",
        "concurrency": [1, 16, 64, 256],
        "max_tokens": 128,
        "warmup_s": 4.0,
        "measure_s": 12.0,
        "workers": 4,
    },
}
_NOT_FLAGS = {"model", "served_model_name", "distributed_executor_backend", "enable_log_requests"}
_ON_BY_DEFAULT = {"enable_prefix_caching", "enable_chunked_prefill"}  # vLLM's --no-... flags
# Process groups for CPU attribution, first match wins (Ray titles its workers ray::<Actor>).
GROUPS: list[tuple[str, Callable[[str], bool]]] = [
    ("haproxy", lambda c: c.split(" ")[0].endswith("haproxy")),
    ("proxy", lambda c: "ProxyActor" in c),
    ("ingress", lambda c: "OpenAiIngress" in c),
    ("llm_server", lambda c: "LLMServer" in c or "ServeReplica" in c),
    # vLLM titles its processes VLLM::EngineCore and VLLM::Worker (the model runs in the worker)
    ("engine", lambda c: "VLLM::" in c or "EngineCore" in c or "VllmWorker" in c or "CPUWorker" in c),
    ("bare_api_server", lambda c: "vllm.entrypoints.openai.api_server" in c),
]
INGRESS_PATH = ("haproxy", "proxy", "ingress")


def m3bench_command(*args: str) -> list[str]:
    """``m3bench ...`` in a fresh interpreter (works where the console script is not installed)."""
    code = "import sys; from m3bench.cli import main; sys.argv[0] = 'm3bench'; main()"
    return [sys.executable, "-c", code, *args]


def gpu_name() -> str | None:
    """This machine's first GPU as ``nvidia-smi`` names it ("NVIDIA H100 80GB HBM3"); None without one."""
    try:
        return subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout.splitlines()[0].strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def detected_accelerator(name: str | None, default: str) -> str:
    """Ray's type name of the GPU ``name`` ("NVIDIA H100 80GB HBM3" -> H100), so the H200 catalog also
    serves on an H100 (the one that came: the device lends either); else ``default``."""
    from serving.catalog import gpu_types

    words = set((name or "").replace("-", " ").split())
    found = sorted(t for t in gpu_types() if t in words)
    return found[0] if len(found) == 1 else default


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
        elif value is False and key in _ON_BY_DEFAULT:
            cmd.append("--no-" + flag.removeprefix("--"))  # else bare vLLM would turn it on
        elif value is not False:
            cmd += [flag, json.dumps(value) if isinstance(value, dict) else str(value)]
    return cmd


def start_bare(kwargs: dict[str, Any], model: str, port: int, log: Path, stack: ExitStack) -> str:
    with log.open("w") as out:
        process = subprocess.Popen(
            bare_server_command(kwargs, model, port), stdout=out, stderr=subprocess.STDOUT
        )

    def stop() -> None:
        for child in psutil.Process(process.pid).children(recursive=True):
            child.terminate()
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()

    stack.callback(stop)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"bare vLLM server exited ({process.returncode}); see {log}")
        try:
            with urllib.request.urlopen(f"{endpoint}/v1/models", timeout=5):
                return endpoint
        except OSError:
            time.sleep(2)
    raise RuntimeError(f"bare vLLM server not up after 900 s; see {log}")


def start_ray(
    mode: str, catalog_file: Path, args: argparse.Namespace, out: Path, stack: ExitStack
) -> tuple[str, Path]:
    """``m3bench serve up`` of the one-model catalog in ``mode``; the model's base URL, the state dir."""
    state = out / f"serve-state-{mode}"
    log = out / f"serve-{mode}.log"
    up = m3bench_command(
        "serve", "up", "--catalog", str(catalog_file), "--port-base", str(args.port_base),
        "--http-port", str(args.port_base + 150), "--state-dir", str(state),
    )  # fmt: skip
    down = m3bench_command("serve", "down", "--state-dir", str(state))
    temp_dir = Path(f"/tmp/m3bench-ray-{args.port_base}")  # serve up's default temp dir
    stack.callback(lambda: shutil.rmtree(temp_dir, ignore_errors=True))  # runs after `serve down`
    stack.callback(lambda: subprocess.run(down, capture_output=True, timeout=300, check=False))
    with log.open("w") as err:
        done = subprocess.run(up, stdout=subprocess.PIPE, stderr=err, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        # Ray Serve's own logs (controller, replicas) go with the records: the cluster's dir is removed
        logs = temp_dir / "session_latest/logs/serve"
        if logs.is_dir():
            shutil.copytree(logs, out / f"ray-serve-logs-{mode}", dirs_exist_ok=True)
        raise RuntimeError(f"serve up ({mode}) failed: {log.read_text()[-400:]}")
    info = json.loads((state / "serve-info.json").read_text())
    (entry,) = info["models"]
    print(f"  {mode}: serving mode {info['serving_mode']['label']!r} at {entry['endpoint']}", flush=True)
    return str(entry["endpoint"]), state


def mode_catalog(base: dict[str, Any], mode: str, out: Path) -> Path:
    path = out / f"catalog-{mode}.yaml"
    path.write_text(yaml.safe_dump({**base, **MODES[mode], "name": f"overhead-{mode}"}, sort_keys=False))
    return path


def stack_pids(state_dir: Path | None) -> set[int]:
    """The processes of the local Ray cluster ``serve up`` started (HAProxy and engines included)."""
    if state_dir is None:
        return set()
    from serving.stack.cluster import LocalRayCluster

    state = json.loads((state_dir / "serve-state.json").read_text())
    return {p.pid for p in LocalRayCluster.from_state(state["cluster"]).processes()}


def cpu_snapshot(state_dir: Path | None) -> dict[int, tuple[str, float]]:
    """CPU seconds used so far by every process, with its group: this process and its children (the
    generator, a bare server), the stack's cluster by role, and "other" for the rest of the machine
    (other users' work: part of the load the figures were measured under)."""
    mine = {os.getpid()} | {p.pid for p in psutil.Process().children(recursive=True)}
    ours = mine | stack_pids(state_dir)
    found = {}
    for process in psutil.process_iter(["cmdline", "name"]):
        try:
            times = process.cpu_times()
            command = " ".join(process.info["cmdline"] or [process.info["name"] or "?"])
        except psutil.Error:
            continue
        if process.pid not in ours:
            group = "other"
        else:
            group = next((g for g, match in GROUPS if match(command)), None) or (
                "generator" if process.pid in mine else "ray_other"
            )
        found[process.pid] = (group, times.user + times.system)
    # Children that ended and were reaped (the load generator's processes end with each run; a
    # snapshot of live processes alone would miss them).
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    found[-1] = ("generator", reaped.ru_utime + reaped.ru_stime)
    return found


def cpu_used(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    used: dict[str, float] = {}
    for pid, (group, seconds) in after.items():
        used[group] = used.get(group, 0.0) + seconds - before.get(pid, (group, 0.0))[1]
    return used


def run_stage(
    endpoint: str, model: str, tasks: Path, out: Path, run_id: str, concurrency: int, cfg: dict[str, Any]
) -> RunResult:
    profile = Profile.model_validate(
        {
            "mode": "closed",
            "stages": [
                {
                    "name": f"c{concurrency}",
                    "concurrency": concurrency,
                    "warmup_s": cfg["warmup_s"],
                    "measure_s": cfg["measure_s"],
                    "cooldown_s": 0,
                }
            ],
            "request": {
                "max_tokens": cfg["max_tokens"],
                "extra_body": {"ignore_eos": True, "min_tokens": cfg["max_tokens"]},
                "timeout_s": 300,
            },
            "grading": {"enabled": False},
            "generator": {"workers": cfg["workers"]},
        }
    )
    config = RunConfig(
        endpoint=endpoint, tasks=tasks, models=[model], profile=profile, out_dir=out, run_id=run_id
    )
    return run_load(config)


def figures(summary: RunSummary) -> dict[str, Any]:
    """The load generator's own figures of the run's one stage (loadgen.summary): output-token throughput
    (tokens that arrived in the stage clock's measure window) and latency percentiles over the ok
    measure-phase requests, in ms."""
    (stage,) = summary.stages
    counts, latency = stage.counts, stage.latency_s
    if not counts.ok:
        return {"requests": 0, "errors": counts.measured}

    def ms(value: float | None) -> float:
        return float("nan") if value is None else value * 1e3

    return {
        "output_tokens_per_s": stage.throughput.output_tokens_per_s,
        # the formula of the rows before 2026-12-05 13:00: measured requests' tokens / (last end - first
        # send), biased low by the drain tail when a request lasts a good part of the window
        "born_output_tokens_per_s": stage.throughput.born_output_tokens_per_s,
        "ttft_p50_ms": ms(latency.ttft.p50),
        "ttft_p99_ms": ms(latency.ttft.p99),
        "tpot_p50_ms": ms(latency.tpot.p50),
        "tpot_p99_ms": ms(latency.tpot.p99),
        "requests": counts.ok,
        "errors": counts.measured - counts.ok,
    }


def measure(
    name: str,
    endpoint: str,
    model: str,
    tasks: Path,
    out: Path,
    cfg: dict[str, Any],
    stamp: str,
    state_dir: Path | None = None,
) -> list[dict[str, Any]]:
    """One closed-loop run per concurrency, with the CPU every process group used during it."""
    assert stream_chat(endpoint, chat_body(model, image_data_url(), 8), timeout_s=300).ok, name
    rows = []
    for concurrency in cfg["concurrency"]:
        before = cpu_snapshot(state_dir)
        result = run_stage(
            endpoint, model, tasks, out / "load", f"{stamp}-{name}-c{concurrency}", concurrency, cfg
        )
        used = cpu_used(before, cpu_snapshot(state_dir))
        records = list(read_records(result.records_path))
        tokens = sum(r.output_tokens or 0 for r in records if r.status == "ok")  # the whole run, as the CPU
        per_k = {g: round(1e3 * s / tokens, 3) for g, s in sorted(used.items())} if tokens else {}
        per_k["ingress_path"] = round(sum(per_k.get(g, 0.0) for g in INGRESS_PATH), 3)
        row = {"mode": name, "concurrency": concurrency, **figures(result.summary)}
        row["cpu_s_per_1k_tokens"] = per_k
        row["cpu_s"] = {g: round(s, 1) for g, s in sorted(used.items())}
        row["load_avg_1m"] = round(os.getloadavg()[0], 2)
        print(f"  {name} c={concurrency}: {json.dumps(row)}", flush=True)
        rows.append(row)
    return rows


def relative(rows: list[dict[str, Any]], bare: dict[int, dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """Rows as throughput ÷ bare and latencies added to bare's, at the same concurrency."""
    out = []
    for row in rows:
        base = bare.get(row["concurrency"])
        full: dict[str, Any] = {"where": where, "mode": row["mode"], "concurrency": row["concurrency"]}
        if base and base.get("requests") and row.get("requests"):
            full["throughput_ratio"] = round(row["output_tokens_per_s"] / base["output_tokens_per_s"], 4)
            for key in ("ttft_p50", "ttft_p99", "tpot_p50", "tpot_p99"):
                full[f"{key}_added_ms"] = round(row[f"{key}_ms"] - base[f"{key}_ms"], 2)
        full.update({k: v for k, v in row.items() if k not in full})
        out.append(full)
    return out


def merge(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` into the JSON list at ``path``, replacing rows of the same where/mode/concurrency."""
    kept = json.loads(path.read_text()) if path.exists() else []
    keys = {(r["where"], r["mode"], r["concurrency"]) for r in rows}
    kept = [r for r in kept if (r["where"], r["mode"], r["concurrency"]) not in keys]
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(kept + rows, indent=1) + "\n")
    temporary.replace(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--where", choices=sorted(WHERE), default="cpu")
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated Ray modes (bare always runs)")
    ap.add_argument("--catalog", type=Path, default=None, help="default: the --where catalog")
    ap.add_argument("--model", default=None)
    ap.add_argument("--concurrency", default=None, help="comma-separated, e.g. 1,4,16")
    ap.add_argument("--max-tokens", type=int, default=None)
    ap.add_argument("--measure-s", type=float, default=None)
    ap.add_argument("--accelerator", default=None, help="Ray GPU type (default: this machine's, nvidia-smi)")
    ap.add_argument("--port-base", type=int, default=37000)
    ap.add_argument("--out", type=Path, default=None, help="records and logs (default: a temp dir)")
    ap.add_argument("--json", type=Path, default=REPO / "docs/results/serving-tax-2026-12-05/overhead.json")
    args = ap.parse_args()
    cfg = dict(WHERE[args.where])
    for key in ("catalog", "model", "max_tokens", "measure_s"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    if args.concurrency:
        cfg["concurrency"] = [int(c) for c in args.concurrency.split(",")]
    modes = [m for m in args.modes.split(",") if m]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        print(f"error: unknown mode {unknown[0]!r}; known: {', '.join(MODES)}", file=sys.stderr)
        return 2
    try:
        return run(args, cfg, modes)
    except (RuntimeError, OSError, ValueError) as e:
        print(f"error: {' '.join(str(e).split())[:400]}", file=sys.stderr)
        return 1


def run(args: argparse.Namespace, cfg: dict[str, Any], modes: list[str]) -> int:
    from serving.app import engine_arguments, resolve_models
    from serving.catalog import load_catalog

    out = args.out or Path(tempfile.mkdtemp(prefix="m3bench-overhead-"))
    out.mkdir(parents=True, exist_ok=True)
    catalog_path = Path(cfg["catalog"]).resolve()
    catalog = load_catalog(catalog_path).select([cfg["model"]])
    (model,) = resolve_models(catalog, catalog_path.parent)
    kwargs = engine_arguments(catalog, model)
    base = catalog.model_dump(mode="json", exclude_defaults=False)
    where, card = args.where, None
    if model.entry.accelerator != "cpu":  # Ray places the replica only on a node of this type
        card = gpu_name()
        accelerator = args.accelerator or detected_accelerator(card, model.entry.accelerator)
        base["models"][0]["accelerator"] = accelerator
        where = accelerator.lower()  # the rows say which card measured them: h200 or h100
    if model.source.kind in ("local", "embedded"):  # the built directory: no relative path, no rebuild
        base["models"][0]["source"] = model.source.location
    tasks = write_calibration_tasks(
        out / "tasks", per_language=4, languages=("en", "zh"), max_tokens=cfg["max_tokens"]
    )
    bare_port = args.port_base + 149  # inside the plan's block, apart from every port it names
    if not port_is_free(bare_port):
        raise RuntimeError(f"port {bare_port} is in use; pass another --port-base")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    context = {"where": where, "model": cfg["model"], "started": stamp, "cpus": os.cpu_count(), "gpu": card}
    print(
        f"serving tax: {json.dumps({**context, 'modes': modes, 'concurrency': cfg['concurrency']})}",
        flush=True,
    )
    bare: dict[int, dict[str, Any]] = {}
    with ExitStack() as stack:
        print(f"bare: {' '.join(bare_server_command(kwargs, cfg['model'], bare_port))}", flush=True)
        endpoint = start_bare(kwargs, cfg["model"], bare_port, out / "bare-vllm.log", stack)
        rows = measure("bare", endpoint, cfg["model"], tasks, out, cfg, stamp)
    bare = {r["concurrency"]: r for r in rows}
    merge(args.json, [{**r, **context} for r in relative(rows, bare, where)])
    failed = []
    for mode in modes:
        try:
            with ExitStack() as stack:
                endpoint, state_dir = start_ray(mode, mode_catalog(base, mode, out), args, out, stack)
                rows = measure(mode, endpoint, cfg["model"], tasks, out, cfg, stamp, state_dir)
        except (RuntimeError, OSError, AssertionError) as e:  # the next mode still runs
            traceback.print_exc()
            failed.append(f"{mode}: {e}")
            continue
        merge(args.json, [{**r, **context, **MODES[mode]} for r in relative(rows, bare, where)])
    print(f"rows in {args.json}; records in {out}", flush=True)
    for line in failed:
        print(f"error: {line}"[:400], file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
