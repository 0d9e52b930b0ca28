"""The master side: walks the stages, tells workers when each starts, merges records, writes targets.

Runs in the Locust master (or in the single process of a local run). ``tick`` is what the load shape
returns each second: it starts stage *i* by announcing an absolute wall-clock start (a short lead
ahead, so every worker starts together), moves on when every worker reported the stage done (or the
stage overran its plan), then drains: workers stop sending, finish what is open, grade, forward.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

from loadgen.exporter import ClientMetrics, write_file_sd
from loadgen.profile import RunConfig
from loadgen.records import BackgroundWriter
from loadgen.schedule import StagePlan, build_plans

log = logging.getLogger(__name__)
LEAD_S = 0.5  # stage start announced this far ahead
OVERRUN_S = 30.0  # a stage that runs this long past its plan is ended by the master
HELLO_WAIT_S = 120.0  # how long the first stage waits for every connected worker's runtime
TickResult = tuple[int, float, list[Any] | None] | None


class Controller:
    def __init__(self, config: RunConfig, run_dir: Path, user_classes: dict[str, Any]) -> None:
        assert config.run_id is not None
        self.config, self.run_dir, self.user_classes = config, run_dir, user_classes
        self.profile = config.profile
        self.plans: list[StagePlan] = build_plans(config.profile)
        self.merged = BackgroundWriter(run_dir / "records.jsonl")
        self.generator_log = BackgroundWriter(run_dir / "generator.jsonl")
        self.metrics = ClientMetrics(config.run_id)
        generator = self.profile.generator
        self.metrics_port = self.metrics.serve(generator.metrics_host, generator.metrics_port)
        self.targets: dict[str, str] = {"master": f"{generator.metrics_host}:{self.metrics_port}"}
        self.write_targets()
        self.current: int | None = None
        self.stage_started = 0.0
        self.expected: set[str] = set()
        self.done: set[str] = set()
        self.draining = False
        self.drained: set[str] = set()
        self.drain_deadline = 0.0
        self.last_tick: TickResult = None
        self.last_record_at = time.monotonic()
        self.statuses: Counter[str] = Counter()
        self.finished = False
        self.hellos: set[str] = set()  # workers whose runtime is up (they said hello after init)
        self.created = time.monotonic()

    # ------------------------------------------------------------ worker messages
    def on_hello(self, data: dict[str, Any]) -> None:
        self.hellos.add(str(data["tag"]))
        self.targets[str(data["tag"])] = str(data["metrics"])
        self.write_targets()

    def on_records(self, data: dict[str, Any]) -> None:
        statuses = data.get("statuses") or [json.loads(line)["status"] for line in data["lines"]]
        self.merged.write_lines(list(data["lines"]))
        self.statuses.update(statuses)
        self.last_record_at = time.monotonic()

    def on_done(self, data: dict[str, Any]) -> None:
        self.generator_log.write_line(json.dumps({"event": "stage_done", **data}))
        if self.current is not None and int(data["index"]) == self.current:
            self.done.add(str(data["tag"]))

    def on_drained(self, data: dict[str, Any]) -> None:
        self.generator_log.write_line(json.dumps({"event": "drained", **data}))
        self.drained.add(str(data["tag"]))

    def write_targets(self) -> None:
        labels = {"run_id": str(self.config.run_id)}
        write_file_sd(
            self.run_dir / "prometheus" / "loadgen_targets.json", list(self.targets.values()), labels
        )
        if self.profile.generator.file_sd_path is not None:
            write_file_sd(self.profile.generator.file_sd_path, list(self.targets.values()), labels)

    # ------------------------------------------------------------ the shape
    def tick(self, workers: dict[str, int], send: Any) -> TickResult:
        """``workers``: tag -> position of every connected worker; ``send(type, data)`` broadcasts."""
        now = time.monotonic()
        if self.current is None:
            if not set(workers) <= self.hellos and now - self.created < HELLO_WAIT_S:
                # A worker that is connected but still building its runtime would miss the stage message.
                return (0, 1.0, None)
            self._start(
                0, {tag: i for i, tag in enumerate(sorted(set(workers) & self.hellos or workers))}, send
            )
        elif self.draining:
            if self.drained >= self.expected or now > self.drain_deadline:
                self.finish()
                return None
        else:
            plan = self.plans[self.current]
            elapsed = now - self.stage_started
            overran = (
                plan.planned_s is not None and elapsed > plan.planned_s + plan.hold_s + LEAD_S + OVERRUN_S
            )
            stalled = now - self.last_record_at > self.profile.request.timeout_s + OVERRUN_S
            if self.done >= self.expected or overran or (stalled and elapsed > (plan.planned_s or 0)):
                if overran or not self.done >= self.expected:
                    log.warning("stage %s ended by the master (workers did not all report done)", plan.name)
                if self.current + 1 < len(self.plans):
                    self._start(self.current + 1, workers, send)
                else:
                    self._begin_drain(send)
        self.write_status()
        return self.last_tick

    def _start(self, index: int, workers: dict[str, int], send: Any) -> None:
        plan = self.plans[index]
        self.current, self.stage_started = index, time.monotonic()
        self.expected, self.done = set(workers), set()
        start_wall_ns = time.time_ns() + int(LEAD_S * 1e9)
        send(
            "m3_stage",
            {"index": index, "start_wall_ns": start_wall_ns, "workers": len(workers), "positions": workers},
        )
        self.generator_log.write_line(
            json.dumps(
                {
                    "event": "stage_start",
                    "index": index,
                    "name": plan.name,
                    "start_wall_ns": start_wall_ns,
                    "workers": sorted(workers),
                    # the stage's clock, so a summary can cut its measure phase by time (loadgen.summary)
                    "warmup_s": plan.warmup_s,
                    "measure_s": plan.measure_s,
                    "measure_requests": plan.measure_requests,
                }
            )
        )
        if plan.mode == "closed":
            users = int(plan.target)
            previous = int(plan.previous_target)
            rate = (
                abs(users - previous) / plan.ramp_s if plan.ramp_s > 0 and users != previous else users * 10.0
            )
            self.metrics.target_concurrency(plan.name, users)
            self.last_tick = (users, max(rate, 1.0), [self.user_classes["closed"]])
        else:
            self.last_tick = (len(workers), len(workers) * 10.0, [self.user_classes["open"]])
        log.info(
            "stage %d/%d %s: %s %g",
            index + 1,
            len(self.plans),
            plan.name,
            "concurrency" if plan.mode == "closed" else "rate",
            plan.target,
        )

    def _begin_drain(self, send: Any) -> None:
        self.draining = True
        self.drain_deadline = time.monotonic() + self.profile.request.timeout_s + 660
        send("m3_drain", {})
        self.generator_log.write_line(json.dumps({"event": "drain"}))

    def stop_early(self, send: Any, drain_s: float) -> None:
        """A stop signal (``m3bench load run`` got SIGTERM/SIGINT): stop sending now, let open requests
        finish for at most ``drain_s``, then finish as usual."""
        if not self.draining:
            self._begin_drain(send)
        self.drain_deadline = min(self.drain_deadline, time.monotonic() + drain_s)
        self.generator_log.write_line(json.dumps({"event": "stop_signal", "drain_s": drain_s}))

    def write_status(self) -> None:
        plan = self.plans[self.current] if self.current is not None else None
        status = {
            "stage_index": self.current,
            "stages": len(self.plans),
            "stage": plan.name if plan else None,
            "draining": self.draining,
            "finished": self.finished,
            "records": self.merged.count,
            "statuses": dict(self.statuses),
            "workers": sorted(self.expected),
            "stage_elapsed_s": round(time.monotonic() - self.stage_started, 1) if plan else 0.0,
        }
        temporary = self.run_dir / ".status.json.tmp"
        temporary.write_text(json.dumps(status), encoding="utf-8")
        temporary.replace(self.run_dir / "status.json")

    def finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        self.merged.sync()
        self.merged.close()
        self.generator_log.close()
        self.write_status()
