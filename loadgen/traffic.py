"""Summary figures of production-shaped stages: trace stages over time, session stages by turn.

``over_time``: a trace stage cut into ``bucket_s`` slices from the stage start (the start the master
announced, from generator.jsonl; without it, the first scheduled send). Per slice: *offered* = requests
scheduled in it (one per trace row), *sent* = requests actually sent in it, both also per second; TTFT,
E2E and schedule-lag percentiles and SLO attainment of the requests *scheduled* in it (every phase: the
trace's whole curve); scheduled offsets are rounded to 0.1 ms. SLO attainment = requests scheduled in
the slice that ended ok and met every set SLO / requests scheduled in it (None without an SLO).
``turns``: a session stage's measure-phase requests grouped by model and turn index (0 = the question
about the image, 1.. follow-ups with the history).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loadgen.profile import Slo
from loadgen.records import RequestRecord
from loadgen.stats import quantile
from loadgen.summary_model import OverTime, StageSummary, TimeBucket, TurnSummary
from loadgen.timings import e2e_s, schedule_lag_s, tpot_s, ttft_s, wall_s

DEFAULT_BUCKET_S = 10.0
# Scheduled offsets are rounded to 0.1 ms before bucketing: a worker's clock and the master's announced
# stage start agree to a few microseconds, not exactly, and a row on a bucket edge (a trace in whole
# milliseconds has many) must land in the bucket the trace puts it in.
OFFSET_DIGITS = 4


def bucket_width(run_config: Path) -> float:
    """The first trace stage's ``bucket_s`` in a run.json, else ``DEFAULT_BUCKET_S``."""
    try:
        profile = json.loads(run_config.read_text(encoding="utf-8"))["profile"]
    except (OSError, ValueError, KeyError, TypeError):
        return DEFAULT_BUCKET_S
    for stage in profile.get("stages") or []:
        trace = stage.get("trace") if isinstance(stage, dict) else None
        if isinstance(trace, dict) and trace.get("bucket_s"):
            return float(trace["bucket_s"])
    return DEFAULT_BUCKET_S


def meets_slo(record: RequestRecord, slo: Slo) -> bool:
    """ok and within every set SLO (an undefined TPOT meets a TPOT SLO, as in the summary's goodput)."""
    if record.status != "ok":
        return False
    for limit, value, optional in (
        (slo.ttft_s, ttft_s(record), False),
        (slo.e2e_s, e2e_s(record), False),
        (slo.tpot_s, tpot_s(record), True),
    ):
        if limit is None or (value is None and optional):
            continue
        if value is None or value > limit:
            return False
    return True


def _p(values: list[float], q: float) -> float | None:
    return quantile(values, q) if values else None


def over_time(
    records: Sequence[RequestRecord], slo: Slo, start_unix_s: float | None, bucket_s: float
) -> OverTime:
    """Offered vs achieved rate, latency and SLO attainment per ``bucket_s`` slice of a trace stage."""
    scheduled = [r for r in records if r.scheduled_ns is not None]
    anchor = "stage start (generator.jsonl stage_start)"
    if start_unix_s is None:
        start_unix_s = min((wall_s(r, r.scheduled_ns) for r in scheduled if r.scheduled_ns), default=0.0)
        anchor = "first scheduled send"
    by_schedule: dict[int, list[RequestRecord]] = defaultdict(list)
    sent: dict[int, int] = defaultdict(int)
    for record in scheduled:
        assert record.scheduled_ns is not None
        at = round(wall_s(record, record.scheduled_ns) - start_unix_s, OFFSET_DIGITS)
        by_schedule[math.floor(at / bucket_s)].append(record)
        sent[math.floor((wall_s(record, record.sent_ns) - start_unix_s) / bucket_s)] += 1
    keys = set(by_schedule) | set(sent)
    slo_set = any(limit is not None for limit in (slo.ttft_s, slo.tpot_s, slo.e2e_s))
    buckets = []
    for key in range(min(keys, default=0), max(keys, default=-1) + 1):
        members = by_schedule.get(key, [])
        ok = [r for r in members if r.status == "ok"]
        ttfts = [v for v in (ttft_s(r) for r in ok) if v is not None]
        e2es = [v for v in (e2e_s(r) for r in ok) if v is not None]
        lags = [v for v in (schedule_lag_s(r) for r in members) if v is not None]
        buckets.append(
            TimeBucket(
                start_s=key * bucket_s,
                offered=len(members),
                sent=sent.get(key, 0),
                offered_rate_per_s=len(members) / bucket_s,
                achieved_rate_per_s=sent.get(key, 0) / bucket_s,
                ok=len(ok),
                errors=len(members) - len(ok),
                ttft_p50_s=_p(ttfts, 0.5),
                ttft_p99_s=_p(ttfts, 0.99),
                e2e_p50_s=_p(e2es, 0.5),
                e2e_p99_s=_p(e2es, 0.99),
                schedule_lag_p99_s=_p(lags, 0.99),
                slo_attainment=sum(meets_slo(r, slo) for r in members) / len(members)
                if slo_set and members
                else None,
            )
        )
    return OverTime(bucket_s=bucket_s, anchor=anchor, buckets=buckets)


def turns(records: Sequence[RequestRecord]) -> list[TurnSummary]:
    """Measure-phase requests of a session stage by model and turn index: TTFT, E2E, mean prompt tokens."""
    from loadgen.summary import distribution

    grouped: dict[tuple[str, int], list[RequestRecord]] = defaultdict(list)
    for record in records:
        if record.turn is not None and record.phase == "measure":
            grouped[record.model, record.turn].append(record)
    out = []
    for model, turn in sorted(grouped):
        members = grouped[model, turn]
        ok = [r for r in members if r.status == "ok"]
        prompts = [r.prompt_tokens for r in ok if r.prompt_tokens is not None]
        out.append(
            TurnSummary(
                model=model,
                turn=turn,
                requests=len(members),
                ok=len(ok),
                ttft=distribution([v for v in (ttft_s(r) for r in ok) if v is not None]),
                e2e=distribution([v for v in (e2e_s(r) for r in ok) if v is not None]),
                prompt_tokens_mean=sum(prompts) / len(prompts) if prompts else None,
            )
        )
    return out


def add_traffic(
    summary: StageSummary,
    records: Sequence[RequestRecord],
    slo: Slo,
    health: Sequence[dict[str, Any]],
    bucket_s: float = DEFAULT_BUCKET_S,
) -> StageSummary:
    """The stage's summary with ``over_time`` (a trace stage) and ``turns`` (a session stage) set."""
    update: dict[str, Any] = {}
    if any(r.trace_line is not None for r in records):
        start = next(
            (
                int(row["start_wall_ns"]) / 1e9
                for row in health
                if row.get("event") == "stage_start" and int(row.get("index", -1)) == summary.stage_index
            ),
            None,
        )
        update["over_time"] = over_time(records, slo, start, bucket_s)
    if any(r.turn is not None for r in records):
        update["turns"] = turns(records)
    return summary.model_copy(update=update) if update else summary
