"""Session stages (issue 18): profile validation, deterministic conversation plans, follow-up bodies that
extend the previous turn's body (so a prefix cache can reuse it), and TTFT per model and turn index."""

from __future__ import annotations

import json
import random
import statistics
from pathlib import Path

import pytest

from loadgen.profile import ProfileError, SessionSpec, ThinkTime, load_profile
from loadgen.sessions import QUESTIONS, Conversations, plan_session, think_time


def test_session_stage_profile() -> None:
    profile = load_profile(
        json.dumps(
            {
                "mode": "open",
                "stages": [
                    {"rate": 2, "measure_s": 5, "sessions": {"follow_ups_min": 1, "follow_ups_max": 2}}
                ],
            }
        )
    )
    from loadgen.schedule import build_plans

    plan = build_plans(profile)[0]
    assert plan.sessions is not None
    assert plan.sessions.follow_ups_max == 2
    assert plan.target == 2
    with pytest.raises(ProfileError, match="follow_ups_max must be >= follow_ups_min"):
        load_profile(
            "{mode: open, stages: [{rate: 1, measure_s: 1,"
            " sessions: {follow_ups_min: 3, follow_ups_max: 1}}]}"
        )
    with pytest.raises(ProfileError, match="exactly one of"):
        load_profile("{mode: open, stages: [{measure_s: 1, sessions: {}}]}")


def test_conversation_plans_are_seeded_and_bounded() -> None:
    spec = SessionSpec(
        follow_ups_min=1, follow_ups_max=4, think_time=ThinkTime(kind="exponential", mean_s=2.0)
    )
    plans = [plan_session(spec, seed=7, stage_index=0, session_index=i) for i in range(400)]
    assert plans == [plan_session(spec, seed=7, stage_index=0, session_index=i) for i in range(400)]
    assert plans != [plan_session(spec, seed=8, stage_index=0, session_index=i) for i in range(400)]
    assert {len(p) for p in plans} == {1, 2, 3, 4}
    assert all(f.question in QUESTIONS for p in plans for f in p)
    thinks = [f.think_s for p in plans for f in p]
    assert statistics.mean(thinks) == pytest.approx(2.0, rel=0.15)
    rng = random.Random(1)
    lognormal = [think_time(ThinkTime(kind="lognormal", mean_s=3.0, sigma=0.5), rng) for _ in range(4000)]
    assert statistics.mean(lognormal) == pytest.approx(3.0, rel=0.05)
    assert think_time(ThinkTime(kind="constant", mean_s=1.5), rng) == 1.5


def test_follow_up_bodies_extend_the_conversation(tmp_path: Path) -> None:
    from loadgen.calibration.tasks import write_calibration_tasks
    from loadgen.profile import RequestOptions, Sampling
    from loadgen.workload import Workload

    tasks = write_calibration_tasks(tmp_path / "tasks", per_language=1, languages=("en",))
    workload = Workload(tasks, ["m"], Sampling(), RequestOptions(extra_body={"top_p": 0.9}))
    first = json.loads(workload.body(0, "m"))
    conversations = Conversations(workload, SessionSpec(follow_up_max_tokens=12))
    one = conversations.body(0, "m", [("answer one", "why?")])
    two = conversations.body(0, "m", [("answer one", "why?"), ('answer "two"', "and then?")])
    parsed = json.loads(two)
    assert parsed["messages"][0] == first["messages"][0]  # the image and the task's prompt
    assert parsed["messages"][1:] == [
        {"role": "assistant", "content": "answer one"},
        {"role": "user", "content": "why?"},
        {"role": "assistant", "content": 'answer "two"'},
        {"role": "user", "content": "and then?"},
    ]
    assert parsed["max_tokens"] == 12
    assert parsed["model"] == "m"
    assert parsed["top_p"] == 0.9
    assert parsed["stream"] is True
    assert "stop" not in parsed
    # turn 2's body starts with turn 1's messages, byte for byte: the server sees a shared prefix
    prefix_one = one[: one.index(b"]")]
    assert two.startswith(prefix_one)
    completions = Workload(
        tasks,
        ["m"],
        Sampling(),
        RequestOptions(api="completions"),
        tasks=[t.model_copy(update={"images": []}) for t in workload.tasks],
    )
    with pytest.raises(ValueError, match="api 'chat'"):
        Conversations(completions, SessionSpec())


def _turn_record(index: int, model: str, turn: int, ttft: float) -> dict[str, object]:
    return {
        "run_id": "r",
        "request_id": f"q{index}",
        "stage": "s0",
        "stage_index": 0,
        "phase": "measure",
        "mode": "open",
        "target": 1.0,
        "worker": "local",
        "model": model,
        "task_id": "t",
        "language": "en",
        "session_id": f"s{index // 3}",
        "turn": turn,
        "scheduled_ns": index * 10**9,
        "sent_ns": index * 10**9,
        "first_token_ns": index * 10**9 + int(ttft * 1e9),
        "end_ns": index * 10**9 + int((ttft + 0.1) * 1e9),
        "chunk_offsets_ns": [int(ttft * 1e9)],
        "timing": "kernel",
        "anchor_wall_ns": 10**18,
        "anchor_perf_ns": 0,
        "prompt_tokens": 100 + 50 * turn,
        "output_tokens": 1,
        "status": "ok",
    }


def test_summary_gives_ttft_per_model_and_turn() -> None:
    from loadgen.records import RequestRecord
    from loadgen.summary import summarize

    rows = []
    for session in range(4):
        for turn in range(3):
            index = session * 3 + turn
            rows.append(_turn_record(index, "cached", turn, 0.2 if turn == 0 else 0.05))
            rows.append(_turn_record(100 + index, "uncached", turn, 0.2 + 0.05 * turn))
    summary = summarize([RequestRecord.model_validate(r) for r in rows])
    turns = summary.stages[0].turns
    assert turns is not None
    table = {(t.model, t.turn): (t.requests, t.ttft.p50, t.prompt_tokens_mean) for t in turns}
    assert table[("cached", 0)] == pytest.approx((4, 0.2, 100))
    assert table[("cached", 2)] == pytest.approx((4, 0.05, 200))
    assert table[("uncached", 2)] == pytest.approx((4, 0.3, 200))
    assert summary.stages[0].over_time is None  # not a trace stage


class _Runtime:
    """The parts of ``WorkerRuntime`` a session uses; ``perform`` answers from a script instead of a server
    (the real exchange is covered by tests/integration/test_traces.py against the calibration server)."""

    def __init__(self, workload: object, answers: list[tuple[int, str]]) -> None:
        from gevent.event import Event

        self.workload = workload
        self.conversations: dict[int, Conversations] = {}
        self.run_id = "run"
        self.chat = True
        self.draining = False
        self.stage: object = None
        self.stage_changed = Event()
        self.profile = type("P", (), {"seed": 3})()
        self.answers = answers
        self.sent: list[tuple[int, int | None, bytes | None, int]] = []

    def perform(
        self, stage: object, phase: str, model: str, task_index: int, scheduled_ns: int, *, turn: object
    ) -> object:
        import time

        from loadgen.calibration import protocol
        from loadgen.http_stream import RawReply

        status, text = self.answers[len(self.sent)]
        self.sent.append((turn.index, scheduled_ns, turn.body, time.perf_counter_ns()))  # type: ignore[attr-defined]
        frames = protocol.build_frames(
            chat=True,
            request_id="x",
            model=model,
            token_text=text,
            output_tokens=1,
            prompt_tokens=5,
            include_usage=True,
        )
        body = frames.first + frames.tail
        now = time.perf_counter_ns()
        return RawReply(
            sent_ns=now,
            end_ns=now,
            status=status,
            headers={"content-type": "text/event-stream"},
            body=bytearray(body),
            reads=[(now, now, len(body))],
            complete=True,
        )


def test_a_session_sends_its_follow_ups_with_the_history(tmp_path: Path) -> None:
    import time

    from loadgen.calibration.tasks import write_calibration_tasks
    from loadgen.profile import RequestOptions, Sampling
    from loadgen.schedule import StagePlan
    from loadgen.sessions import run_session
    from loadgen.workload import Workload

    tasks = write_calibration_tasks(tmp_path / "tasks", per_language=1, languages=("en",))
    workload = Workload(tasks, ["m"], Sampling(), RequestOptions())
    spec = SessionSpec(follow_ups_min=2, follow_ups_max=2, think_time=ThinkTime(kind="constant", mean_s=0.05))
    plan = StagePlan(0, "s0", "open", 1.0, 1.0, 0.0, 0.0, 10.0, None, 0.0, sessions=spec)
    stage = type("S", (), {"plan": plan})()
    runtime = _Runtime(workload, [(200, "first"), (200, "second"), (200, "third")])
    runtime.stage = stage
    start = time.perf_counter_ns()
    run_session(runtime, stage, "measure", "m", 0, start, 7)  # type: ignore[arg-type]
    assert [turn for turn, *_ in runtime.sent] == [0, 1, 2]
    assert runtime.sent[0][2] is None  # turn 0: the task's own prebuilt body
    second = json.loads(runtime.sent[2][2] or b"")
    assert [m["content"] for m in second["messages"][1:]] == ["first", QUESTIONS[0], "second", QUESTIONS[1]]
    for (_, due, _, sent_at), (_, previous_due, _, _) in zip(runtime.sent[1:], runtime.sent, strict=False):
        assert due is not None
        assert previous_due is not None
        assert sent_at >= due  # never before its think time is over
        assert due - previous_due >= 50_000_000

    failing = _Runtime(workload, [(500, "nope")])
    failing.stage = stage
    run_session(failing, stage, "measure", "m", 0, time.perf_counter_ns(), 8)  # type: ignore[arg-type]
    assert [turn for turn, *_ in failing.sent] == [0]  # a failed turn ends the conversation
