"""The sending side of one Locust process: sends requests, writes records, grades, exports, forwards.

One ``WorkerRuntime`` per process that sends (a Locust worker, or the single process of a local run).
It follows the stage the master announces (``MSG_STAGE``), tags every request with stage and phase at
birth, writes the record to its own file before anything else happens to it (append + flush), grades
it in the grader pool, and forwards the final record to the master, which merges all of them.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import resource
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gevent
from gevent.event import Event

from loadgen.exporter import ClientMetrics
from loadgen.grading_pool import GradingPool
from loadgen.http_stream import ConnectionPool, Endpoint, RawReply, build_request, exchange
from loadgen.profile import Backoff, RunConfig
from loadgen.records import BackgroundWriter, Phase, RequestRecord
from loadgen.schedule import ClosedLoopPhases, OpenLoopPhases, StagePlan, build_plans
from loadgen.sessions import Conversations, Turn, run_session
from loadgen.sse import parse_reply
from loadgen.stats import quantile_sorted
from loadgen.traces.replay import Replay, ReplayRow
from loadgen.workload import Workload

log = logging.getLogger(__name__)
MSG_STAGE, MSG_DRAIN = "m3_stage", "m3_drain"  # master -> workers
MSG_HELLO, MSG_RECORDS, MSG_DONE, MSG_DRAINED = "m3_hello", "m3_records", "m3_done", "m3_drained"  # -> master
_perf = time.perf_counter_ns


@dataclass
class ActiveStage:
    plan: StagePlan
    start_ns: int  # perf_counter_ns of this process
    workers: int
    position: int
    closed: ClosedLoopPhases | None
    opened: OpenLoopPhases | None
    done_sent: bool = False
    cpu_at_start: float = 0.0
    runqueue_at_start: int = 0  # /proc/self/schedstat run-queue wait (ns) when the stage started
    sends: int = 0  # closed loop: this process's sends so far (its cycle slots: position + workers * k)
    backoffs: int = 0  # closed loop: waits after an immediate 5xx (Profile.backoff)
    backoff_s: float = 0.0  # their total length


class StreamBackoff:
    """One closed-loop stream's wait after an immediate 5xx: ``initial_s``, doubling per consecutive
    one, at most ``max_s``; any other reply resets it (``Profile.backoff``)."""

    def __init__(self, options: Backoff) -> None:
        self.options = options
        self.next_s = options.initial_s

    def wait_after(self, reply: RawReply) -> float:
        options = self.options
        quick = reply.end_ns - reply.sent_ns <= options.immediate_s * 1e9
        if not options.enabled or reply.status is None or reply.status < 500 or not quick:
            self.next_s = options.initial_s
            return 0.0
        wait, self.next_s = self.next_s, min(self.next_s * 2, options.max_s)
        return min(wait, options.max_s)


@dataclass
class Done:
    """A request whose reply has ended, waiting to be parsed and recorded."""

    stage: ActiveStage
    phase: Phase
    model: str
    task_index: int
    scheduled_ns: int | None
    request_id: str
    reply: RawReply
    trace_line: int | None = None  # a trace stage: the row's line in the trace file
    turn: Turn | None = None  # a session stage: the conversation and turn


def _runqueue_wait_ns() -> int | None:
    """Time this thread spent runnable but waiting for a CPU (Linux /proc/self/schedstat), or None."""
    try:
        with open("/proc/thread-self/schedstat", encoding="ascii") as handle:
            return int(handle.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class WorkerRuntime:
    def __init__(self, config: RunConfig, run_dir: Path, tag: str, send: Any) -> None:
        profile = config.profile
        self.config, self.profile, self.tag, self.send = config, profile, tag, send
        assert config.run_id is not None
        self.run_id = config.run_id
        self.plans = build_plans(profile)
        self.anchor_wall_ns, self.anchor_perf_ns = time.time_ns(), _perf()
        self.endpoint = Endpoint.parse(config.endpoint)
        self.workload = Workload(
            config.tasks, config.models, profile.sampling, profile.request, seed=profile.seed
        )
        self.workload.warm(pause=lambda: gevent.sleep(0))
        self.tasks_by_index = self.workload.tasks
        self.replays = {  # trace stages: row -> task and output length, mapped before any stage starts
            plan.index: Replay(plan.trace, self.workload.tasks) for plan in self.plans if plan.trace
        }
        self.conversations: dict[int, Conversations] = {}  # session stages: follow-up bodies per stage
        self.chat = profile.request.api == "chat"
        self.pool = ConnectionPool(self.endpoint, profile.request.connect_timeout_s)
        self.writer = BackgroundWriter(run_dir / "records" / f"{tag}.jsonl")
        self.grades = BackgroundWriter(run_dir / "records" / f"{tag}.grades.jsonl")
        self.grader = (
            GradingPool(profile.grading.processes, profile.grading.function)
            if profile.grading.enabled
            else None
        )
        self.metrics = ClientMetrics(self.run_id, profile.generator.export_itl)
        generator = profile.generator
        port = generator.metrics_port and generator.metrics_port + 1 + (
            int(tag[1:]) if tag[1:].isdigit() else 0
        )
        self.metrics_port = self.metrics.serve(generator.metrics_host, port)
        key = os.environ.get(profile.request.api_key_env or "", "") if profile.request.api_key_env else ""
        self.auth = f"authorization: Bearer {key}\r\n" if key else ""
        self.seq = itertools.count(1)
        self.user_seq = itertools.count()
        self.inflight = 0
        self.spawned = 0
        self.stage: ActiveStage | None = None
        self.stage_changed = Event()
        self.draining = False
        self.outbox: list[tuple[str, str]] = []  # (final record JSON, status)
        self.forwarded = 0
        self.loop_lags: list[float] = []
        self.finishing: deque[Done] = deque()
        self.finish_wakeup = Event()
        self.greenlets = [
            gevent.spawn(self._finish_loop),
            gevent.spawn(self._forward_loop),
            gevent.spawn(self._watch_loop),
            gevent.spawn(self._lag_loop),
        ]

    # ------------------------------------------------------------ messages from the master
    def hello(self) -> dict[str, Any]:
        return {
            "tag": self.tag,
            "pid": os.getpid(),
            "metrics": f"{self.profile.generator.metrics_host}:{self.metrics_port}",
        }

    def on_stage(self, data: dict[str, Any], position: int) -> None:
        plan = self.plans[int(data["index"])]
        start_ns = _perf() + (int(data["start_wall_ns"]) - time.time_ns())
        workers = int(data["workers"])
        self.stage = ActiveStage(
            plan=plan,
            start_ns=start_ns,
            workers=workers,
            position=position,
            closed=ClosedLoopPhases(plan, workers, position) if plan.mode == "closed" else None,
            opened=OpenLoopPhases(plan) if plan.mode == "open" else None,
            cpu_at_start=_cpu_s(),
            runqueue_at_start=_runqueue_wait_ns() or 0,
        )
        self.loop_lags = []
        if plan.mode == "open":
            self.metrics.target_rate(plan.name, plan.target / workers)
        self.stage_changed.set()
        self.stage_changed = Event()

    def on_drain(self) -> None:
        if not self.draining:
            self.draining = True
            self.stage_changed.set()
            gevent.spawn(self._drain)

    # ------------------------------------------------------------ closed loop
    def user_rng(self) -> random.Random:
        return random.Random(f"m3bench-user:{self.profile.seed}:{self.tag}:{next(self.user_seq)}")

    def stream_backoff(self) -> StreamBackoff:
        return StreamBackoff(self.profile.backoff)

    def closed_loop_step(self, rng: random.Random, backoff: StreamBackoff | None = None) -> None:
        stage = self.stage
        if stage is None or self.draining or stage.closed is None:
            gevent.sleep(0.05)
            return
        elapsed = (_perf() - stage.start_ns) / 1e9
        if elapsed < 0:  # every stream starts at the stage's start, together (a new stage or drain wakes it)
            self.stage_changed.wait(-elapsed)
            return
        if stage.closed.done(elapsed):
            # This worker's part of the stage is over (its share of measure_requests sent, or the planned
            # time passed): send nothing more until the next stage. Checked and counted without a yield
            # in between, so no stream can send past the count.
            self.stage_changed.wait(0.05)
            return
        slot = stage.position + stage.workers * stage.sends  # the workers interleave one cycle
        stage.sends += 1
        model, task_index = self.workload.draw(rng, slot)
        length = self.workload.length(rng)
        reply = self.perform(stage, stage.closed.phase(elapsed), model, task_index, None, length=length)
        if reply.error_kind == "connect":
            gevent.sleep(0.2)  # cannot connect: do not spin on a dead endpoint
        wait = backoff.wait_after(reply) if backoff is not None else 0.0
        if wait > 0 and not self.draining:
            stage.backoffs += 1
            stage.backoff_s += wait
            self.stage_changed.wait(wait)  # a new stage or a drain ends the wait

    # ------------------------------------------------------------ open loop
    def open_loop_drive(self) -> None:
        while not self.draining:
            stage = self.stage
            if stage is None or stage.opened is None:
                self.stage_changed.wait(0.1)
                continue
            self._run_open_stage(stage)
        gevent.sleep(0.1)  # Locust calls this task again at once: do not spin once draining

    def _run_open_stage(self, stage: ActiveStage) -> None:
        from loadgen.schedule import arrivals

        assert stage.opened is not None
        changed = self.stage_changed
        cap = self.profile.generator.max_inflight
        replay = self.replays.get(stage.plan.index)
        gauge_second = -1
        for index, offset, rng in arrivals(stage.plan, self.profile.arrival, self.profile.seed):
            model, task_index = self.workload.draw(rng, index)  # every worker draws every arrival
            length = self.workload.length(rng)
            row = replay.rows[index] if replay is not None else None
            if row is not None:
                task_index = row.task_index  # the trace row's task (loadgen/traces/mapping.py)
            phase = stage.opened.phase(offset)
            if phase is None:  # the stage's plan is over (every worker stops at the same arrival)
                changed.wait()
                return
            if index % stage.workers != stage.position:
                continue
            target_ns = stage.start_ns + int(offset * 1e9)
            wait_ns = target_ns - _perf()
            if wait_ns > 1_500_000 and changed.wait((wait_ns - 1_000_000) / 1e9):
                return
            while _perf() < target_ns:
                gevent.sleep(0)  # the last millisecond: yield without trusting the loop's timer resolution
            if self.stage is not stage or self.draining:
                return
            while self.inflight + self.spawned >= cap:
                gevent.sleep(0.001)
            self.spawned += 1  # counted until perform starts, so a drain cannot miss it
            if stage.plan.sessions is not None:  # arrival = a new conversation (loadgen/sessions.py)
                gevent.spawn(self._session_spawned, stage, phase, model, task_index, target_ns, index)
            else:
                gevent.spawn(
                    self._perform_spawned, stage, phase, model, task_index, target_ns, row=row, length=length
                )
            if replay is not None and int(offset) != gauge_second:  # the trace's rate, once a second
                gauge_second = int(offset)
                self.metrics.target_rate(stage.plan.name, replay.offered_rate(offset) / stage.workers)
        if replay is not None:  # every row is sent: nothing more until the next stage or the drain
            changed.wait()

    def _perform_spawned(
        self,
        stage: ActiveStage,
        phase: Phase,
        model: str,
        task_index: int,
        scheduled_ns: int,
        *,
        row: ReplayRow | None = None,
        length: bytes | None = None,
    ) -> None:
        self.spawned -= 1
        self.perform(stage, phase, model, task_index, scheduled_ns, row=row, length=length)

    def _session_spawned(  # noqa: PLR0917 - gevent.spawn's arguments
        self, stage: ActiveStage, phase: Phase, model: str, task_index: int, scheduled_ns: int, index: int
    ) -> None:
        self.spawned -= 1
        run_session(self, stage, phase, model, task_index, scheduled_ns, index)

    # ------------------------------------------------------------ one request
    def perform(
        self,
        stage: ActiveStage,
        phase: Phase,
        model: str,
        task_index: int,
        scheduled_ns: int | None,
        *,
        row: ReplayRow | None = None,
        turn: Turn | None = None,
        length: bytes | None = None,
    ) -> RawReply:
        """Send one request and read its reply; everything else happens later, when the loop is idle.
        ``row``: a trace row, whose output length replaces the task's (spliced into the prebuilt body);
        ``length``: else this request's own output limit (``Workload.length``)."""
        request_id = f"{self.run_id}-{self.tag}-{next(self.seq)}"
        headers = f"x-request-id: {request_id}\r\n{self.auth}"
        if turn is not None and turn.body is not None:
            body = turn.body  # a follow-up: the conversation so far (loadgen/sessions.py)
        elif row is not None:
            body = self.workload.body(task_index, model, row.length, row.keep_stop)
        else:
            body = self.workload.body(task_index, model, length)
        request = build_request(self.endpoint, self.workload.path, body, headers)
        measuring = stage.closed if phase == "measure" else None  # what a drain_measured stage waits for
        self.inflight += 1
        self.metrics.inflight(model, 1)
        if measuring is not None:
            measuring.measuring += 1
        try:
            reply = exchange(self.pool, request, self.profile.request.timeout_s)
        finally:
            self.inflight -= 1
            self.metrics.inflight(model, -1)
            if measuring is not None:
                measuring.measuring -= 1
        line = row.line if row is not None else None
        done = Done(stage, phase, model, task_index, scheduled_ns, request_id, reply, line, turn)
        self.finishing.append(done)
        self.finish_wakeup.set()
        return reply

    def _finish_loop(self) -> None:
        """Parse, record, export, grade: at idle priority, so reading streams always comes first."""
        while True:
            if not self.finishing:
                self.finish_wakeup.clear()
                self.finish_wakeup.wait()
                continue
            # Wait for the loop to have nothing else to do, but not forever: a saturated generator is
            # never idle, and its records must still be written.
            with gevent.Timeout(0.05, False):
                gevent.idle()
            self._finish(self.finishing.popleft())

    def _finish(self, done: Done) -> None:
        stage, phase, model, scheduled_ns, request_id, reply = (
            done.stage,
            done.phase,
            done.model,
            done.scheduled_ns,
            done.request_id,
            done.reply,
        )
        task = self.tasks_by_index[done.task_index]
        parsed = parse_reply(reply, self.chat)
        first = parsed.content_ns[0] if parsed.content_ns else None
        record = RequestRecord(
            run_id=self.run_id,
            request_id=request_id,
            stage=stage.plan.name,
            stage_index=stage.plan.index,
            phase=phase,
            mode=stage.plan.mode,
            target=stage.plan.target,
            worker=self.tag,
            model=model,
            task_id=task.id,
            trace_line=done.trace_line,
            session_id=done.turn.session_id if done.turn is not None else None,
            turn=done.turn.index if done.turn is not None else None,
            task_group=task.metadata.group,
            language=task.natural_language,
            scheduled_ns=scheduled_ns,
            sent_ns=reply.sent_ns,
            connect_ns=reply.connect_ns,
            first_token_ns=first,
            end_ns=max(reply.end_ns, reply.sent_ns),
            chunk_offsets_ns=[t - reply.sent_ns for t in parsed.content_ns],
            timing="kernel" if reply.kernel_stamps else "user",
            first_token_read_delay_ns=(parsed.content_user_ns[0] - first) if first is not None else None,
            coalesced_reads=parsed.coalesced_reads,
            anchor_wall_ns=self.anchor_wall_ns,
            anchor_perf_ns=self.anchor_perf_ns,
            http_status=reply.status,
            prompt_tokens=parsed.prompt_tokens,
            output_tokens=parsed.output_tokens,
            finish_reason=parsed.finish_reason,
            status=parsed.status,
            error=parsed.error,  # already clipped to its head and tail (loadgen.sse.clip_error)
            cause=parsed.cause,
            output=parsed.text,
        )
        line = record.model_dump_json()
        self.writer.write_line(line)
        self.metrics.observe(record)
        self._fire_locust_event(record, len(reply.body))
        if self.grader is not None and record.status == "ok" and not record.turn:  # follow-ups carry no task
            self.grader.submit(
                task,
                record.output,
                task.grading.timeout_s,
                lambda verdict, detail, seconds: self._graded(record, verdict, detail, seconds),
            )
        else:
            self.outbox.append((line, record.status))

    def _graded(self, record: RequestRecord, verdict: str, detail: str, seconds: float) -> None:
        record.grade = verdict if verdict in ("pass", "fail", "error", "timeout") else "error"  # type: ignore[assignment]
        record.grade_detail = detail[:2000]
        record.grade_duration_s = seconds
        self.grades.write_line(
            record.model_dump_json(include={"request_id", "grade", "grade_detail", "grade_duration_s"})
        )
        self.metrics.graded(record)
        self.outbox.append((record.model_dump_json(), record.status))

    def _fire_locust_event(self, record: RequestRecord, size: int) -> None:
        from locust import events

        failed = record.status != "ok"
        events.request.fire(  # type: ignore[no-untyped-call]
            request_type="POST",
            name=record.model,
            response_time=(record.end_ns - record.sent_ns) / 1e6,
            response_length=size,
            exception=RuntimeError(f"{record.status}: {record.error}") if failed else None,
            context={"stage": record.stage, "phase": record.phase},
        )

    # ------------------------------------------------------------ background greenlets
    def _forward_loop(self) -> None:
        while True:
            gevent.sleep(0.2)
            self.flush_outbox()

    def flush_outbox(self) -> None:
        if self.outbox:
            batch, self.outbox = self.outbox, []
            lines = [line for line, _ in batch]
            statuses = [status for _, status in batch]
            self.send(MSG_RECORDS, {"tag": self.tag, "lines": lines, "statuses": statuses})
            self.forwarded += len(lines)

    def _watch_loop(self) -> None:
        while True:
            gevent.sleep(0.05)
            stage = self.stage
            if stage is None or stage.done_sent:
                continue
            elapsed = (_perf() - stage.start_ns) / 1e9
            if stage.closed is not None:
                done = stage.closed.done(elapsed)
            else:
                assert stage.opened is not None
                plan = stage.plan
                end = stage.opened.measure_end_s
                if end is None and plan.measure_s is not None:
                    end = plan.warmup_s + plan.measure_s
                done = end is not None and elapsed >= end + plan.cooldown_s
            if done:
                stage.done_sent = True
                self.send(
                    MSG_DONE, {"tag": self.tag, "index": stage.plan.index, **self.health(stage, elapsed)}
                )

    def health(self, stage: ActiveStage, elapsed_s: float) -> dict[str, Any]:
        lags = sorted(self.loop_lags)
        waited = _runqueue_wait_ns()
        return {
            "cpu_s": _cpu_s() - stage.cpu_at_start,
            "wall_s": elapsed_s,
            "runqueue_wait_s": (waited - stage.runqueue_at_start) / 1e9 if waited is not None else None,
            "loop_lag_p99_s": quantile_sorted(lags, 0.99) if lags else None,
            "loop_lag_max_s": lags[-1] if lags else None,
            "backoffs": stage.backoffs,
            "backoff_s": round(stage.backoff_s, 3),
        }

    def _lag_loop(self) -> None:
        period = 0.005
        while True:
            before = _perf()
            gevent.sleep(period)
            lag = max(0.0, (_perf() - before) / 1e9 - period)
            self.loop_lags.append(lag)
            self.metrics.loop_lag(lag)

    def _drain(self) -> None:
        limit = time.monotonic() + self.profile.request.timeout_s + 5
        while (self.inflight or self.spawned or self.finishing) and time.monotonic() < limit:
            gevent.sleep(0.05)
        if self.grader is not None:
            self.grader.drain(timeout_s=600)
        self.flush_outbox()
        self.send(
            MSG_DRAINED,
            {
                "tag": self.tag,
                "records": self.writer.count,
                "forwarded": self.forwarded,
                "inflight_left": self.inflight,
            },
        )

    def close(self) -> None:
        for greenlet in self.greenlets:
            greenlet.kill(block=False)
        if self.grader is not None:
            self.grader.close()
        self.writer.close()
        self.grades.close()
        self.pool.close()
