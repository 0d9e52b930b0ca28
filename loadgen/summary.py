"""Stage summaries, computed from records.jsonl alone (and, if present, generator.jsonl).

``summarize(records, ...)`` is what the report code calls; ``summarize_run(run_dir)`` re-reads a run
directory. Only measure-phase records count (phases are tagged when a request is born; this is the
one place that filters on them). Percentiles use linear interpolation between order statistics.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from loadgen.profile import Generator, Slo
from loadgen.records import STATUSES, VERDICTS, RequestRecord, read_records
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

FORMULAS = {
    "ttft_s": "first content token arrival - send",
    "e2e_s": "last byte arrival - send (ok requests)",
    "tpot_s": "(E2E - TTFT) / (output_tokens - 1); output_tokens from server usage; requests with >= 2",
    "itl_s": "gaps between consecutive content chunks (chunks, not tokens: see tokens_per_chunk)",
    "ttft_from_scheduled_s": "first content token - scheduled send (open loop; shows coordinated omission)",
    "e2e_from_scheduled_s": "last byte - scheduled send (open loop)",
    "schedule_lag_s": "send - scheduled send (open loop)",
    "window_s": "wall clock from the first send to the last end among measure-phase requests",
    "request_throughput": "ok measure-phase requests / window_s",
    "output_token_throughput": "sum of usage completion_tokens of ok measure-phase requests / window_s",
    "goodput": "ok measure-phase requests meeting every set SLO / window_s (undefined TPOT meets a TPOT SLO)",
    "accuracy": "pass / graded (graded = pass + fail + error + timeout) of ok measure-phase requests",
    "achieved_rate": "(measure-phase sends - 1) / (last send - first send)",
}


def distribution(values: Sequence[float]) -> dict[str, float | int | None]:
    if not values:
        return {
            "n": 0,
            "mean": None,
            "min": None,
            "p50": None,
            "p90": None,
            "p99": None,
            "p99.9": None,
            "max": None,
        }
    array = np.asarray(values, dtype=float)
    p50, p90, p99, p999 = np.percentile(array, [50, 90, 99, 99.9])
    return {
        "n": int(array.size),
        "mean": float(array.mean()),
        "min": float(array.min()),
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "p99.9": float(p999),
        "max": float(array.max()),
    }


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


def accuracy_table(records: Iterable[RequestRecord]) -> dict[str, dict[str, dict[str, Any]]]:
    """model -> language -> verdict counts, graded, accuracy (pass / graded)."""
    counts: dict[str, dict[str, Counter[str]]] = defaultdict(lambda: defaultdict(Counter))
    for record in records:
        counts[record.model][record.language][record.grade] += 1
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for model, languages in sorted(counts.items()):
        table[model] = {}
        for language, verdicts in sorted(languages.items()):
            graded = sum(verdicts[v] for v in VERDICTS if v != "ungraded")
            table[model][language] = {
                **{v: verdicts[v] for v in VERDICTS},
                "graded": graded,
                "accuracy": verdicts["pass"] / graded if graded else None,
            }
    return table


def summarize_stage(
    records: Sequence[RequestRecord], slo: Slo, limits: Generator, health: Sequence[dict[str, Any]] = ()
) -> dict[str, Any]:
    first = records[0]
    measured = [r for r in records if r.phase == "measure"]
    ok = [r for r in measured if r.status == "ok"]
    summary: dict[str, Any] = {
        "stage": first.stage,
        "stage_index": first.stage_index,
        "mode": first.mode,
        "target": first.target,
        "counts": {
            "by_phase": dict(Counter(r.phase for r in records)),
            "measure_by_status": {s: sum(1 for r in measured if r.status == s) for s in STATUSES},
        },
    }
    if measured:
        start = min(wall_s(r, r.sent_ns) for r in measured)
        end = max(wall_s(r, r.end_ns) for r in measured)
        window = max(end - start, 1e-9)
    else:
        start = end = window = 0.0
    output_tokens = sum(r.output_tokens or 0 for r in ok)
    sends = sorted(wall_s(r, r.sent_ns) for r in measured)
    summary["window"] = {"start_unix_s": start, "end_unix_s": end, "window_s": window}
    summary["latency_s"] = {
        "ttft": distribution(_present(ttft_s(r) for r in ok)),
        "itl": distribution([gap for r in ok for gap in itl_s(r)]),
        "tpot": distribution(_present(tpot_s(r) for r in ok)),
        "e2e": distribution(_present(e2e_s(r) for r in ok)),
        "ttft_from_scheduled": distribution(_present(ttft_from_scheduled_s(r) for r in ok)),
        "e2e_from_scheduled": distribution(_present(e2e_from_scheduled_s(r) for r in ok)),
        "schedule_lag": distribution(_present(schedule_lag_s(r) for r in measured)),
    }
    good = sum(1 for r in ok if _meets(r, slo))
    summary["throughput"] = {
        "requests_per_s": len(ok) / window if measured else None,
        "output_tokens_per_s": output_tokens / window if measured else None,
        "goodput_requests_per_s": good / window if measured else None,
        "goodput_fraction": good / len(ok) if ok else None,
        "achieved_send_rate_per_s": (len(sends) - 1) / (sends[-1] - sends[0]) if len(sends) > 2 else None,
        "output_tokens": output_tokens,
        "slo": slo.model_dump(),
        "missing_usage": sum(1 for r in ok if r.output_tokens is None),
    }
    summary["accuracy"] = accuracy_table(ok)
    chunks = sum(len(r.chunk_offsets_ns) for r in ok)
    summary["timing"] = {
        "kernel_timestamps_fraction": sum(r.timing == "kernel" for r in measured) / len(measured)
        if measured
        else None,
        "read_delay_s": distribution(
            _present(
                None if r.first_token_read_delay_ns is None else r.first_token_read_delay_ns / 1e9 for r in ok
            )
        ),
        "coalesced_reads": sum(r.coalesced_reads for r in ok),
        # first two tokens in one read: the generator read too late to tell them apart, TTFT is an upper bound
        "ttft_upper_bound_fraction": (
            sum(len(r.chunk_offsets_ns) > 1 and r.chunk_offsets_ns[0] == r.chunk_offsets_ns[1] for r in ok)
            / len(ok)
            if ok
            else None
        ),
        "tokens_per_chunk": output_tokens / chunks if chunks else None,
        "itl_basis": "content chunk gaps",
    }
    summary["generator"] = _validity(summary, list(health), limits)
    return summary


def _validity(summary: dict[str, Any], health: list[dict[str, Any]], limits: Generator) -> dict[str, Any]:
    reasons: list[str] = []
    read_p99 = summary["timing"]["read_delay_s"]["p99"]
    if read_p99 is not None and read_p99 > limits.max_read_delay_s:
        reasons.append(
            f"first-token read delay p99 {read_p99 * 1e3:.1f} ms > {limits.max_read_delay_s * 1e3:g} ms"
        )
    bounded = summary["timing"]["ttft_upper_bound_fraction"]
    if bounded is not None and bounded > limits.max_ttft_upper_bound_fraction:
        reasons.append(
            f"{bounded:.1%} of first tokens shared a read with the second (TTFT only an upper bound)"
        )
    lag_p99 = summary["latency_s"]["schedule_lag"]["p99"]
    if lag_p99 is not None and lag_p99 > limits.max_schedule_lag_s:
        reasons.append(f"schedule lag p99 {lag_p99 * 1e3:.1f} ms > {limits.max_schedule_lag_s * 1e3:g} ms")
    workers = []
    for row in health:
        cpu = row["cpu_s"] / row["wall_s"] if row.get("wall_s") else None
        workers.append(
            {
                "worker": row["tag"],
                "cpu_fraction": cpu,
                "loop_lag_p99_s": row.get("loop_lag_p99_s"),
                "loop_lag_max_s": row.get("loop_lag_max_s"),
            }
        )
        if cpu is not None and cpu > limits.max_cpu_fraction:
            reasons.append(f"{row['tag']} used {cpu:.0%} of a core (> {limits.max_cpu_fraction:.0%})")
        lag = row.get("loop_lag_p99_s")
        if lag is not None and lag > limits.max_loop_lag_s:
            reasons.append(
                f"{row['tag']} loop lag p99 {lag * 1e3:.1f} ms > {limits.max_loop_lag_s * 1e3:g} ms"
            )
    return {"valid": not reasons, "invalid_reasons": reasons, "workers": workers}


def summarize(
    records: Sequence[RequestRecord],
    slo: Slo | None = None,
    limits: Generator | None = None,
    health: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """Per-stage summaries and run totals from request records (any order, any number of workers)."""
    slo, limits = slo or Slo(), limits or Generator()
    stages: dict[int, list[RequestRecord]] = defaultdict(list)
    for record in records:
        stages[record.stage_index].append(record)
    stage_health: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in health:
        if row.get("event") == "stage_done":
            stage_health[int(row["index"])].append(row)
    ok_measured = [r for r in records if r.phase == "measure" and r.status == "ok"]
    return {
        "run_id": records[0].run_id if records else None,
        "records": len(records),
        "by_status": {s: sum(1 for r in records if r.status == s) for s in STATUSES},
        "stages": [summarize_stage(stages[i], slo, limits, stage_health[i]) for i in sorted(stages)],
        "accuracy": accuracy_table(ok_measured),
        "formulas": FORMULAS,
    }


def summarize_run(run_dir: Path, slo: Slo | None = None, limits: Generator | None = None) -> dict[str, Any]:
    """Recompute a run's summary from its directory (records.jsonl, optional generator.jsonl/run.json)."""
    run_config = run_dir / "run.json"
    if run_config.is_file() and (slo is None or limits is None):
        profile = json.loads(run_config.read_text(encoding="utf-8"))["profile"]
        slo = slo or Slo.model_validate(profile.get("slo", {}))
        limits = limits or Generator.model_validate(profile.get("generator", {}))
    health_path = run_dir / "generator.jsonl"
    health = (
        [json.loads(line) for line in health_path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if health_path.is_file()
        else []
    )
    return summarize(read_records(run_dir / "records.jsonl"), slo, limits, health)
