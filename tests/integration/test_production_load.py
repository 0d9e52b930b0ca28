"""Production-shaped load against the real embedded stack (issue 18): vLLM's CPU backend behind Ray Serve,
serving one trained tiny VLM twice, with prefix caching on and off (the catalog's
``engine.enable_prefix_caching``).

* Trace replay end to end: a Mooncake-format and an Azure-format sample trace (written here, a few hundred
  rows each, rescaled to a rate these 2 cores carry) are replayed as two trace stages of one run: every
  row is one request, sent once, with the row's output length enforced by vLLM (``max_tokens`` +
  ``ignore_eos``), and the summary holds the over-time figures (offered vs achieved per 10 s bucket,
  latency and SLO attainment per bucket).
* Multi-turn image conversations: a session stage against both engines at once; TTFT by turn index and
  model in the summary (the prefix-caching figures in docs/loadgen.md come from this test's output).
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from loadgen.profile import Profile, RunConfig
from loadgen.records import read_records
from loadgen.run import run_load
from loadgen.summary_model import RunSummary
from loadgen.traces import read_trace
from loadgen.traces.formats import TraceRow, write_mooncake
from serving.catalog import load_catalog
from serving.stack import ServeStack, StackConfig
from tests.support.ports import free_port_plan

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]
REPO = Path(__file__).resolve().parents[2]
BASE_MODEL = "tiny-llava-bf16"
CACHED, UNCACHED = "tiny-llava-bf16-prefix-cache", "tiny-llava-bf16-no-prefix-cache"
ROWS = 150
RATE = 3.0  # requests/s the traces are rescaled to (a one-replica CPU engine here carries more)


def _tasks() -> Path:
    from benchmark.tasks.builder import BuildOptions, build
    from serving.embedded.build import default_cache_dir

    out = default_cache_dir().parent / "tasks" / "demo-1"
    build(BuildOptions(out_dir=out, limit_per_language=1))
    return out


def write_mooncake_sample(path: Path, seed: int = 1) -> list[TraceRow]:
    """ROWS rows over about a minute: bursts, long and short prompts, rows sharing their first block."""
    rng = random.Random(seed)
    rows, at = [], 0.0
    for line in range(1, ROWS + 1):
        at += rng.gammavariate(0.4, 1 / 0.4) * 0.4
        first_block = rng.choice([1, 2, 3]) if rng.random() < 0.5 else 100 + line
        rows.append(
            TraceRow(line, at, rng.randrange(120, 280), rng.randrange(2, 24), (first_block, 1000 + line))
        )
    write_mooncake(rows, path)
    return rows


def write_azure_sample(path: Path, seed: int = 2) -> int:
    """ROWS rows of the Azure LLM inference trace's CSV layout (7-digit fractional seconds)."""
    rng = random.Random(seed)
    start = datetime(2023, 11, 16, 18, 15, 0)
    lines, at = ["TIMESTAMP,ContextTokens,GeneratedTokens"], 0.0
    for _ in range(ROWS):
        at += rng.expovariate(1.0) * 0.4
        stamp = (start + timedelta(seconds=at)).strftime("%Y-%m-%d %H:%M:%S.%f") + "0"
        lines.append(f"{stamp},{rng.randrange(120, 280)},{rng.randrange(2, 24)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return ROWS


def _catalog() -> Any:
    """The embedded catalog's BF16 LLaVA, twice: prefix caching on and off (one engine each)."""
    catalog = load_catalog(REPO / "deploy/models/embedded-cpu.yaml").select([BASE_MODEL])
    base = catalog.models[0]
    entries = [
        base.model_copy(
            update={"id": name, "engine": base.engine.model_copy(update={"enable_prefix_caching": caching})}
        )
        for name, caching in ((CACHED, True), (UNCACHED, False))
    ]
    return type(catalog).model_validate({**catalog.model_dump(), "models": [e.model_dump() for e in entries]})


def _summary(value: Any) -> RunSummary:
    return value if isinstance(value, RunSummary) else RunSummary.model_validate(value)


def test_traces_and_conversations_on_the_embedded_stack(tmp_path: Path) -> None:
    tasks = _tasks()
    mooncake = tmp_path / "sample-mooncake.jsonl"
    azure = tmp_path / "sample-azure.csv"
    mooncake_rows = write_mooncake_sample(mooncake)
    write_azure_sample(azure)
    azure_rows = read_trace(azure).rows
    assert len(azure_rows) == ROWS
    plan = free_port_plan(46000, 60000)
    config = StackConfig(
        ports=plan,
        temp_dir=Path(f"/tmp/m3trace-{plan.base}"),  # short: Ray's socket paths
        state_dir=tmp_path / "serve-state",
        ready_timeout_s=600,
    )
    trace_stage = {"image_tokens": 64, "rate": RATE}
    traces = Profile.model_validate(
        {
            "name": "trace-replay",
            "mode": "open",
            "stages": [
                {"name": "mooncake", "trace": {"path": str(mooncake), **trace_stage}, "cooldown_s": 5},
                {"name": "azure", "trace": {"path": str(azure), **trace_stage}, "cooldown_s": 5},
            ],
            "grading": {"enabled": False},  # answers cut or stretched to the row's length: not gradable
            "slo": {"ttft_s": 1.0},
            "request": {"timeout_s": 120},
        }
    )
    conversations = Profile.model_validate(
        {
            "name": "conversations",
            "mode": "open",
            "arrival": {"kind": "poisson"},
            "stages": [
                {
                    "name": "sessions",
                    "rate": 0.5,
                    "measure_s": 60,
                    "cooldown_s": 30,
                    "sessions": {
                        "follow_ups_min": 2,
                        "follow_ups_max": 2,
                        "think_time": {"kind": "exponential", "mean_s": 1.0},
                        "follow_up_max_tokens": 16,
                    },
                }
            ],
            "sampling": {"groups": ["image"]},
            "request": {"timeout_s": 120},
            "seed": 18,
        }
    )
    with ServeStack(_catalog(), config=config) as stack:
        replayed = run_load(
            RunConfig(
                endpoint=stack.endpoint,
                tasks=tasks,
                models=[CACHED],
                profile=traces,
                out_dir=tmp_path / "load",
                run_id="trace-replay",
            )
        )
        talked = run_load(
            RunConfig(
                endpoint=stack.endpoint,
                tasks=tasks,
                models=[CACHED, UNCACHED],
                profile=conversations,
                out_dir=tmp_path / "load",
                run_id="conversations",
            )
        )

    # ---- trace replay: every row once, its output length enforced, the over-time figures
    records = read_records(replayed.records_path)
    summary = _summary(replayed.summary)
    for index, rows in enumerate((mooncake_rows, azure_rows)):
        mine = [r for r in records if r.stage_index == index]
        assert sorted(r.trace_line or 0 for r in mine) == sorted(row.line for row in rows)
        failed = [f"{r.trace_line}: {r.status} {r.error[:200]}" for r in mine if r.status != "ok"]
        assert not failed, failed
        wanted = {row.line: max(1, row.output_tokens) for row in rows}
        assert all(r.output_tokens == wanted[r.trace_line or 0] for r in mine)
        stage = summary.stages[index]
        over = stage.over_time
        assert over is not None
        assert sum(b.offered for b in over.buckets) == len(rows)
        assert sum(b.sent for b in over.buckets) == len(rows)
        assert all(b.slo_attainment is not None for b in over.buckets if b.offered)
        print(f"\n{stage.stage}: lag p99 {stage.latency_s.schedule_lag.p99}, per 10 s bucket:")
        for b in over.buckets:
            rates = f"offered {b.offered_rate_per_s:.1f}/s achieved {b.achieved_rate_per_s:.1f}/s"
            print(
                f"  t={b.start_s:5.0f}s {rates} ttft p50 {b.ttft_p50_s} p99 {b.ttft_p99_s} {b.slo_attainment}"
            )
    prompt_by_line = {r.trace_line: r.prompt_tokens for r in records if r.stage_index == 0}
    shared = [row for row in mooncake_rows if row.hash_ids[0] in (1, 2, 3)]
    tasks_of_block: dict[int, set[str]] = {}
    task_by_line = {r.trace_line: r.task_id for r in records if r.stage_index == 0}
    for row in shared:
        tasks_of_block.setdefault(row.hash_ids[0], set()).add(task_by_line[row.line])
    assert all(len(ids) == 1 for ids in tasks_of_block.values())  # a shared prefix block: one task
    assert all(prompt_by_line.values())

    # ---- conversations: every turn a record of its session, TTFT per turn, grading on turn 0 only
    turns = [r for r in read_records(talked.records_path) if r.turn is not None]
    assert {r.model for r in turns} == {CACHED, UNCACHED}
    sessions: dict[str, list[int]] = {}
    for record in turns:
        sessions.setdefault(record.session_id or "", []).append(record.turn or 0)
    complete = [s for s, numbers in sessions.items() if sorted(numbers) == [0, 1, 2]]
    born_measured = {r.session_id for r in turns if r.turn == 0 and r.phase != "cooldown"}
    assert born_measured <= set(complete), sessions  # only sessions born in the cooldown may be cut
    ok_first = [r for r in turns if r.turn == 0 and r.status == "ok"]
    assert ok_first
    assert all(r.grade != "ungraded" for r in ok_first)
    assert all(r.grade == "ungraded" for r in turns if r.turn)
    by_session = {}
    for record in turns:
        by_session[record.session_id, record.turn] = record
    grew = [  # the history is in the prompt
        (by_session[s, 2].prompt_tokens or 0)
        > (by_session[s, 1].prompt_tokens or 0)
        > (by_session[s, 0].prompt_tokens or 0)
        for s in complete
        if all(by_session[s, k].status == "ok" for k in (0, 1, 2))
    ]
    assert grew
    assert all(grew)
    stage = _summary(talked.summary).stages[0]
    assert stage.turns is not None
    print("\nTTFT by turn (model, turn: n, p50, p90, mean prompt tokens):")
    for turn in stage.turns:
        print(
            f"  {turn.model} turn {turn.turn}: n={turn.ttft.n} p50 {turn.ttft.p50} s p90 {turn.ttft.p90} s "
            f"mean {turn.ttft.mean} s, prompt {turn.prompt_tokens_mean} tokens"
        )
    assert {(t.model, t.turn) for t in stage.turns} >= {(m, t) for m in (CACHED, UNCACHED) for t in (0, 1, 2)}

    # ---- the report of each run: over-time panels of the trace stages, TTFT by turn of the sessions
    from m3bench.report.traffic import write_traffic_report

    for run, stages in ((replayed, ("mooncake", "azure")), (talked, ("sessions",))):
        paths = write_traffic_report(run.run_dir)
        markdown = paths["markdown"].read_text(encoding="utf-8")
        for name in stages:
            assert f"## Stage {name}" in markdown
        assert markdown.count("![") == len(stages)
        print(f"report: {paths['markdown']}")
