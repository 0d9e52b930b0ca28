"""Stage summaries, computed from records.jsonl alone (and, if present, generator.jsonl).

``summarize(records, ...) -> RunSummary`` is what the report code calls; ``summarize_run(run_dir)``
re-reads a run directory. Latency percentiles use the measure-phase population (requests *born* in the
measure phase; phases are tagged when a request is born, and this is the one place that filters on
them). Throughput counts what *happened inside* the measure window: tokens by arrival time, requests by
completion, so requests longer than the window neither inflate nor dilute it. Percentiles are
``loadgen.stats.quantile`` (linear interpolation between order statistics). ``FORMULAS`` is written into
every summary.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from loadgen.profile import Generator, Slo
from loadgen.records import STATUSES, VERDICTS, RequestRecord, read_records
from loadgen.stats import percentiles
from loadgen.summary_model import (
    AccuracyCell,
    AccuracyTable,
    Counts,
    Distribution,
    Latency,
    RunSummary,
    StageSummary,
    Throughput,
    Timing,
    Window,
)
from loadgen.timings import (
    e2e_from_scheduled_s,
    e2e_s,
    itl_s,
    schedule_lag_s,
    tpot_s,
    ttft_from_scheduled_s,
    ttft_s,
    wall_s,
)
from loadgen.validity import first_read, judge

FORMULAS = {
    "percentiles": "linear interpolation between order statistics: h = (n-1) q, "
    "Q = x[floor h] + (h - floor h) (x[floor h + 1] - x[floor h]) (numpy's default; loadgen/stats.py)",
    "ttft_s": "first content token arrival - send",
    "e2e_s": "last byte arrival - send (ok requests)",
    "tpot_s": "(E2E - TTFT) / (output_tokens - 1); output_tokens from server usage; requests with >= 2",
    "itl_s": "gaps between consecutive content chunks (chunks, not tokens: see tokens_per_chunk); where the "
    "server writes several tokens at once (tokens_per_write > 1) ITL is a property of its write pattern",
    "ttft_from_scheduled_s": "first content token - scheduled send (open loop; shows coordinated omission)",
    "e2e_from_scheduled_s": "last byte - scheduled send (open loop)",
    "schedule_lag_s": "send - scheduled send (open loop)",
    "latency_population": "measure-phase requests (born in the measure phase, whenever they end); ok only",
    "window_s": "measure window. Open loop: the schedule's measure phase, first to last measure-phase send. "
    "Closed loop, a stage bounded by time: its measure phase by the stage's clock (generator.jsonl "
    "stage_start + warmup_s, for measure_s, cut at the stage's last byte if it stopped early), when "
    "concurrency is held "
    "at the target throughout (the ramp lies in warmup; the drain after it is excluded), what vllm bench "
    "serve users compare with; it does not depend on when requests happen to be sent, which matters when a "
    "request outlasts the stage (a batch of 32 replies sent at once gave a 3.6 s window by sends). Closed "
    "loop bounded by a request count (or without generator.jsonl): first to last measure-phase send",
    "token_arrival": "each content chunk carries output_tokens / content_chunks tokens of its request "
    "(usage completion_tokens spread evenly over the chunks; a reply with usage but no content chunk "
    "delivers them at its end); requests without usage add none (see missing_usage)",
    "output_token_throughput": "output tokens that arrived inside the window (any request of the stage, "
    "any phase, by token_arrival) / window_s",
    "request_throughput": "ok requests of the stage (any phase) that ended inside the window / window_s",
    "goodput": "ok requests that ended inside the window and met every set SLO / window_s "
    "(undefined TPOT meets a TPOT SLO)",
    "goodput_fraction": "ok measure-phase requests meeting every set SLO / ok measure-phase requests",
    "request_equivalent_per_s": "output_token_throughput / (usage completion_tokens / ok measure-phase "
    "requests): the request rate the token flow carries; smooth where completions come in batches (a "
    "12 s window sees one or two whole batch rounds end, or none)",
    "born_output_tokens_per_s": "schema 1 figure, biased low by the drain tail: usage completion_tokens of "
    "ok measure-phase requests / (last measure end - first measure send)",
    "accuracy": "pass / graded (graded = pass + fail + error + timeout) of ok measure-phase requests",
    "achieved_rate": "(measure-phase sends - 1) / (last send - first send)",
    "ttft_upper_bound_fraction": "ok measure-phase requests whose first two content chunks came in one read "
    "that was late (read delay > generator.max_read_delay_s, or no kernel stamp) / ok requests",
    "first_read_server_coalesced_fraction": "ok measure-phase requests whose first two content chunks came "
    "in one prompt read (kernel stamp, read delay <= max_read_delay_s): the server wrote them together",
    "tokens_per_write": "usage completion_tokens / distinct arrival stamps of content chunks (ok requests "
    "with usage): tokens per server network write when reads are prompt",
    "validity": "each finding names a party: client (generator), machine (generator waited for a CPU "
    "longer than it ran, /proc/self/schedstat), server; any invalid finding makes the stage invalid",
}


def distribution(values: Sequence[float]) -> Distribution:
    if not values:
        return Distribution()
    p50, p90, p99, p999 = percentiles(values, [50, 90, 99, 99.9])
    return Distribution.model_validate(
        {
            "n": len(values),
            "mean": sum(values) / len(values),
            "min": min(values),
            "p50": p50,
            "p90": p90,
            "p99": p99,
            "p99.9": p999,
            "max": max(values),
        }
    )


def _present(values: Iterable[float | None]) -> list[float]:
    return [value for value in values if value is not None]


def _meets(record: RequestRecord, slo: Slo) -> bool:
    checks = (
        ("ttft", slo.ttft_s, ttft_s(record)),
        ("e2e", slo.e2e_s, e2e_s(record)),
        ("tpot", slo.tpot_s, tpot_s(record)),
    )
    for name, limit, value in checks:
        if limit is None or (value is None and name == "tpot"):
            continue
        if value is None or value > limit:
            return False
    return True


def accuracy_table(records: Iterable[RequestRecord]) -> AccuracyTable:
    """model -> language -> verdict counts, graded, accuracy (pass / graded)."""
    counts: dict[str, dict[str, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))
    for record in records:
        counts[record.model][record.language][record.grade] += 1
    table: AccuracyTable = {}
    for model, languages in sorted(counts.items()):
        table[model] = {}
        for language, verdicts in sorted(languages.items()):
            graded = sum(verdicts[v] for v in VERDICTS if v != "ungraded")
            table[model][language] = AccuracyCell.model_validate(
                {
                    **{v: verdicts[v] for v in VERDICTS},
                    "graded": graded,
                    "accuracy": verdicts["pass"] / graded if graded else None,
                }
            )
    return table


def token_arrivals(record: RequestRecord) -> list[tuple[float, float]]:
    """(wall-clock arrival s, tokens) of each content chunk of a reply with usage (FORMULAS token_arrival)."""
    tokens = record.output_tokens
    if not tokens:
        return []
    offsets = record.chunk_offsets_ns
    if not offsets:
        return [(wall_s(record, record.end_ns), float(tokens))]
    share = tokens / len(offsets)
    return [(wall_s(record, record.sent_ns + offset), share) for offset in offsets]


def _clock(records: Sequence[RequestRecord], start: dict[str, Any] | None) -> tuple[float, float] | None:
    """The measure phase by the stage's clock (its generator.jsonl ``stage_start`` row), for a stage
    bounded by time only; None otherwise (a count-bounded stage ends when the count is sent)."""
    if not start or start.get("measure_s") is None or start.get("measure_requests") is not None:
        return None
    begin = int(start["start_wall_ns"]) / 1e9 + float(start.get("warmup_s") or 0.0)
    last = max((wall_s(r, r.end_ns) for r in records if r.end_ns), default=begin)
    end = min(begin + float(start["measure_s"]), last)  # a stage stopped early ends at its last byte
    return (begin, end) if end > begin else None


def _window(
    records: Sequence[RequestRecord],
    measured: Sequence[RequestRecord],
    mode: str,
    start: dict[str, Any] | None,
) -> Window:
    clock = _clock(records, start) if mode == "closed" else None
    if clock is not None:
        basis = (
            "closed loop measure phase by the stage clock (concurrency held throughout; ramp, drain excluded)"
        )
        return Window(start_unix_s=clock[0], end_unix_s=clock[1], window_s=clock[1] - clock[0], basis=basis)
    sends = [wall_s(r, r.sent_ns) for r in measured]
    first, last = (min(sends), max(sends)) if sends else (0.0, 0.0)
    basis = (
        "closed loop steady state: first to last measure-phase send (ramp and drain excluded)"
        if mode == "closed"
        else "open loop measure phase: first to last measure-phase send"
    )
    return Window(start_unix_s=first, end_unix_s=last, window_s=last - first, basis=basis)


def _throughput(
    records: Sequence[RequestRecord], measured: Sequence[RequestRecord], window: Window, slo: Slo
) -> Throughput:
    ok = [r for r in measured if r.status == "ok"]
    start, end, length = window.start_unix_s, window.end_unix_s, window.window_s
    timed = length > 0
    tokens = sum(share for r in records for at, share in token_arrivals(r) if start <= at <= end)
    completed = [r for r in records if r.status == "ok" and start <= wall_s(r, r.end_ns) <= end]
    good_in_window = sum(1 for r in completed if _meets(r, slo))
    output_tokens = sum(r.output_tokens or 0 for r in ok)
    born_end = max((wall_s(r, r.end_ns) for r in measured), default=start)
    sends = sorted(wall_s(r, r.sent_ns) for r in measured)
    return Throughput(
        requests_per_s=len(completed) / length if timed else None,
        output_tokens_per_s=tokens / length if timed else None,
        goodput_requests_per_s=good_in_window / length if timed else None,
        goodput_fraction=sum(1 for r in ok if _meets(r, slo)) / len(ok) if ok else None,
        achieved_send_rate_per_s=(len(sends) - 1) / (sends[-1] - sends[0])
        if len(sends) > 2 and sends[-1] > sends[0]
        else None,
        completed_in_window=len(completed),
        tokens_in_window=tokens,
        output_tokens=output_tokens,
        born_output_tokens_per_s=output_tokens / (born_end - start)
        if measured and born_end > start
        else None,
        request_equivalent_per_s=tokens / length / (output_tokens / len(ok))
        if timed and output_tokens
        else None,
        slo=slo,
        missing_usage=sum(1 for r in ok if r.output_tokens is None),
    )


def _timing(
    measured: Sequence[RequestRecord], ok: Sequence[RequestRecord], limits: Generator
) -> tuple[Timing, list[Any]]:
    kinds = [first_read(r, limits.max_read_delay_s) for r in ok]
    with_usage = [r for r in ok if r.output_tokens is not None]
    usage_tokens = sum(r.output_tokens or 0 for r in with_usage)
    usage_chunks = sum(len(r.chunk_offsets_ns) for r in with_usage)
    writes = sum(len(set(r.chunk_offsets_ns)) for r in with_usage)
    timing = Timing(
        kernel_timestamps_fraction=sum(r.timing == "kernel" for r in measured) / len(measured)
        if measured
        else None,
        read_delay_s=distribution(
            _present(
                None if r.first_token_read_delay_ns is None else r.first_token_read_delay_ns / 1e9 for r in ok
            )
        ),
        coalesced_reads=sum(r.coalesced_reads for r in ok),
        ttft_upper_bound_fraction=sum(k == "client_late" for k in kinds) / len(ok) if ok else None,
        first_read_server_coalesced_fraction=sum(k == "server_coalesced" for k in kinds) / len(ok)
        if ok
        else None,
        tokens_per_chunk=usage_tokens / usage_chunks if usage_chunks else None,
        tokens_per_write=usage_tokens / writes if writes else None,
        itl_basis="content chunk gaps",
    )
    return timing, [k for k in kinds if k is not None]


def summarize_stage(
    records: Sequence[RequestRecord],
    slo: Slo,
    limits: Generator,
    health: Sequence[dict[str, Any]] = (),
    start: dict[str, Any] | None = None,
) -> StageSummary:
    """One stage; ``health`` its stage_done rows, ``start`` its stage_start row (generator.jsonl)."""
    first = records[0]
    measured = [r for r in records if r.phase == "measure"]
    ok = [r for r in measured if r.status == "ok"]
    window = _window(records, measured, first.mode, start)
    latency = Latency(
        ttft=distribution(_present(ttft_s(r) for r in ok)),
        itl=distribution([gap for r in ok for gap in itl_s(r)]),
        tpot=distribution(_present(tpot_s(r) for r in ok)),
        e2e=distribution(_present(e2e_s(r) for r in ok)),
        ttft_from_scheduled=distribution(_present(ttft_from_scheduled_s(r) for r in ok)),
        e2e_from_scheduled=distribution(_present(e2e_from_scheduled_s(r) for r in ok)),
        schedule_lag=distribution(_present(schedule_lag_s(r) for r in measured)),
    )
    throughput = _throughput(records, measured, window, slo)
    timing, kinds = _timing(measured, ok, limits)
    return StageSummary(
        stage=first.stage,
        stage_index=first.stage_index,
        mode=first.mode,
        target=first.target,
        counts=Counts(
            by_phase=dict(Counter(r.phase for r in records)),
            measure_by_status={s: sum(1 for r in measured if r.status == s) for s in STATUSES},
        ),
        window=window,
        latency_s=latency,
        throughput=throughput,
        accuracy=accuracy_table(ok),
        timing=timing,
        generator=judge(
            timing, latency.schedule_lag, kinds, throughput.missing_usage, len(ok), health, limits
        ),
    )


def summarize(
    records: Sequence[RequestRecord],
    slo: Slo | None = None,
    limits: Generator | None = None,
    health: Sequence[dict[str, Any]] = (),
    bucket_s: float = 10.0,
) -> RunSummary:
    """Per-stage summaries and run totals from request records (any order, any number of workers).
    Trace and session stages also get figures over time (``bucket_s`` wide) and by turn
    (``loadgen.traffic``)."""
    from loadgen.traffic import add_traffic

    slo, limits = slo or Slo(), limits or Generator()
    stages: dict[int, list[RequestRecord]] = defaultdict(list)
    for record in records:
        stages[record.stage_index].append(record)
    stage_health: dict[int, list[dict[str, Any]]] = defaultdict(list)
    starts: dict[int, dict[str, Any]] = {}
    for row in health:
        if row.get("event") == "stage_done":
            stage_health[int(row["index"])].append(row)
        elif row.get("event") == "stage_start":
            starts[int(row["index"])] = row
    ok_measured = [r for r in records if r.phase == "measure" and r.status == "ok"]
    return RunSummary(
        run_id=records[0].run_id if records else None,
        records=len(records),
        by_status={s: sum(1 for r in records if r.status == s) for s in STATUSES},
        stages=[
            add_traffic(
                summarize_stage(stages[i], slo, limits, stage_health[i], starts.get(i)),
                stages[i],
                slo,
                health,
                bucket_s,
            )
            for i in sorted(stages)
        ],
        accuracy=accuracy_table(ok_measured),
        formulas=FORMULAS,
    )


def read_health(path: Path) -> list[dict[str, Any]]:
    """generator.jsonl rows; a torn last line (a crashed run) is skipped."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def summarize_run(run_dir: Path, slo: Slo | None = None, limits: Generator | None = None) -> RunSummary:
    """Recompute a run's summary from its directory (records.jsonl, optional generator.jsonl/run.json)."""
    run_config = run_dir / "run.json"
    if run_config.is_file() and (slo is None or limits is None):
        profile = json.loads(run_config.read_text(encoding="utf-8"))["profile"]
        slo = slo or Slo.model_validate(profile.get("slo", {}))
        limits = limits or Generator.model_validate(profile.get("generator", {}))
    from loadgen.traffic import bucket_width

    return summarize(
        read_records(run_dir / "records.jsonl"),
        slo,
        limits,
        read_health(run_dir / "generator.jsonl"),
        bucket_width(run_config),
    )


def read_summary(path: Path) -> RunSummary:
    """A summary.json written by this version (schema_version 2)."""
    return RunSummary.model_validate_json(path.read_text(encoding="utf-8"))
