"""Multi-turn image conversations: a session stage's arrivals start conversations, not single requests.

Arrival ``i`` of a session stage (the stage's open-loop process at ``rate`` sessions/s; every worker
generates it, worker ``i % N`` runs session ``i``) asks its task (image and prompt, the task's own body:
turn 0, graded as usual). Then the user asks ``follow_ups_min..follow_ups_max`` follow-up questions, each
a think time after the previous reply ended, with every earlier turn in the history: the task's message
(image included), then per turn the assistant's answer and the next question. Follow-ups carry no task,
so they are not graded. The number of follow-ups, the think times and the questions come from an RNG
keyed by (seed, stage, session index): the same on every worker and in every run with that seed.

Every turn is a record with ``session_id`` and ``turn`` (0, 1, ...); its ``scheduled_ns`` is the send it
was due at (the arrival for turn 0, previous end + think time after), so schedule lag covers follow-ups
too. A turn that fails ends its conversation (there is no answer to continue from); so do a new stage
and the drain. The prefix of turn k's body is turn k-1's body, so a server's prefix cache can reuse it:
``summary.turns`` gives TTFT per turn index and model.

Bodies: turn 0 is the task's prebuilt body; a follow-up's is the task's message list (cached per task)
plus the history, then the body's other members, then ``max_tokens`` and the model: bytes joined, only
the new answer and question are encoded.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gevent

from loadgen.profile import SessionSpec, ThinkTime
from loadgen.sse import parse_reply

if TYPE_CHECKING:
    from loadgen.records import Phase
    from loadgen.worker import ActiveStage, WorkerRuntime
    from loadgen.workload import Workload

QUESTIONS = (
    "Explain your answer in one sentence.",
    "Which part of the image did you use?",
    "Is there a shorter way to write it?",
    "What does it return for an empty input?",
)


@dataclass(frozen=True)
class Turn:
    session_id: str
    index: int  # 0: the task's question; 1..: follow-ups
    body: bytes | None  # None: the task's own prebuilt body


@dataclass(frozen=True)
class FollowUp:
    think_s: float
    question: str


def think_time(spec: ThinkTime, rng: random.Random) -> float:
    """One pause, mean ``spec.mean_s``."""
    if spec.mean_s == 0 or spec.kind == "constant":
        return spec.mean_s
    if spec.kind == "exponential":
        return rng.expovariate(1.0 / spec.mean_s)
    mu = math.log(spec.mean_s) - spec.sigma**2 / 2  # a log-normal with this mean
    return rng.lognormvariate(mu, spec.sigma)


def plan_session(spec: SessionSpec, seed: int, stage_index: int, session_index: int) -> list[FollowUp]:
    """Session ``session_index``'s follow-ups: how many, after which pauses, asking what."""
    rng = random.Random(f"m3bench-session:{seed}:{stage_index}:{session_index}")
    questions = spec.questions or list(QUESTIONS)
    count = rng.randint(spec.follow_ups_min, spec.follow_ups_max)
    return [FollowUp(think_time(spec.think_time, rng), questions[k % len(questions)]) for k in range(count)]


class Conversations:
    """Follow-up bodies of a workload's tasks (chat API only)."""

    def __init__(self, workload: Workload, spec: SessionSpec) -> None:
        if workload.request.api != "chat":
            raise ValueError("session stages need api 'chat' (a conversation is a list of messages)")
        self.workload = workload
        self.max_tokens = b',"max_tokens":%d' % spec.follow_up_max_tokens
        self._parts: dict[int, tuple[bytes, bytes]] = {}

    def _split(self, task_index: int) -> tuple[bytes, bytes]:
        """(the task's message list without its closing bracket, the body's other members)."""
        parts = self._parts.get(task_index)
        if parts is None:
            body: dict[str, Any] = json.loads(self.workload.body(task_index, ""))
            messages = body.pop("messages")
            for key in ("model", "stop", "max_tokens"):
                body.pop(key, None)
            head = _dump(messages)[:-1]
            rest = _dump(body)[1:-1]
            parts = self._parts[task_index] = (head, b"," + rest if rest else b"")
        return parts

    def body(self, task_index: int, model: str, history: list[tuple[str, str]]) -> bytes:
        """The task's messages, then (answer, question) per earlier turn, as one chat body."""
        head, rest = self._split(task_index)
        turns = b"".join(
            b',{"role":"assistant","content":'
            + _dump(answer)
            + b'},{"role":"user","content":'
            + _dump(question)
            + b"}"
            for answer, question in history
        )
        model_member = b',"model":' + _dump(model)
        return b'{"messages":' + head + turns + b"]" + rest + self.max_tokens + model_member + b"}"


def _dump(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def run_session(  # noqa: PLR0917 - one call site (WorkerRuntime)
    runtime: WorkerRuntime,
    stage: ActiveStage,
    phase: Phase,
    model: str,
    task_index: int,
    target_ns: int,
    session_index: int,
) -> None:
    """Session ``session_index``: turn 0 at ``target_ns``, then its follow-ups, each a think time after
    the previous reply ended. Ends early on a failed turn, a new stage or the drain."""
    spec = stage.plan.sessions
    assert spec is not None
    conversations = runtime.conversations.setdefault(stage.plan.index, Conversations(runtime.workload, spec))
    session_id = f"{runtime.run_id}-s{stage.plan.index}-{session_index}"
    follow_ups = plan_session(spec, runtime.profile.seed, stage.plan.index, session_index)
    reply = runtime.perform(stage, phase, model, task_index, target_ns, turn=Turn(session_id, 0, None))
    history: list[tuple[str, str]] = []
    for number, follow_up in enumerate(follow_ups, 1):
        parsed = parse_reply(reply, runtime.chat)
        if parsed.status != "ok":
            return
        history.append((parsed.text, follow_up.question))
        body = conversations.body(task_index, model, history)
        due_ns = reply.end_ns + int(follow_up.think_s * 1e9)
        if not _wait_until(runtime, stage, due_ns):
            return
        turn = Turn(session_id, number, body)
        reply = runtime.perform(stage, phase, model, task_index, due_ns, turn=turn)


def _wait_until(runtime: WorkerRuntime, stage: ActiveStage, due_ns: int) -> bool:
    """Sleep until ``due_ns`` (perf_counter_ns); False if the stage changed or the run drains meanwhile."""
    changed = runtime.stage_changed
    wait_ns = due_ns - time.perf_counter_ns()
    if wait_ns > 1_500_000 and changed.wait((wait_ns - 1_000_000) / 1e9):
        return False
    while time.perf_counter_ns() < due_ns:
        gevent.sleep(0)
    return runtime.stage is stage and not runtime.draining
