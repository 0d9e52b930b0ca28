"""Load levels that reach the knee: a quick probe, then levels placed around where throughput flattens.

A closed loop at ``c`` streams with per-request latency ``L(c)`` carries ``X(c) = c / L(c)``. Below the
knee latency barely grows and ``X`` follows ``c``; past it ``X`` stays at the capacity and latency grows
with ``c`` (Little's law). The probe measures ``X(1)`` and ``X(P)`` at a high level ``P`` (the engine's
batch size). Unloaded, ``c`` streams would carry ``c * X(1)``, so the knee is near

    c* = X(P) / X(1)      (streams needed to carry the throughput seen at P without queueing)

and the sweep's levels are 1, c*, 2 c*, top = max(4 c*, 2 P) (rounded, distinct, at most
``max_concurrency``): two levels below or at the knee (where the SLOs hold), two past it (throughput flat:
saturation; latency 4x the knee's, and at least twice the engine's batch in flight, so requests wait for a
slot: the SLOs break), so the report gets both a capacity and an interpolated rate at SLO. When
even ``P`` did not flatten (``X(P) / X(1)`` close to ``P``), the knee is at least ``P`` and the levels
reach 4 P.

The top level is also held to what its measure window can see (``window_cap``): past the knee a request
lasts about ``c / X(P)`` (Little's law), and a level whose median request outlasts its window gets no
throughput (loadgen.summary) and, with ``drain_measured``, holds the sweep for a whole request after the
window. So ``top <= share * window * X(P)``; where that cap falls below 2 c*, the third level moves to
halfway between c* and the top.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Probe:
    concurrency: int
    throughput: float | None  # requests/s over the measured window
    ok: int


def probe_rates(run_dir: Path, warmup_s: float, measure_s: float) -> list[Probe]:
    """Each probe stage's request rate from the tokens that arrived in [start + warmup, start + warmup +
    measure]: tokens / measure / mean tokens per reply. Tokens, not completions: at a concurrency the engine
    batches whole, fixed-length replies finish together in rounds, and one round can outlast a short stage
    (nor the summary's first-to-last-send window, which one round of sends makes ~0)."""
    from loadgen.records import read_records
    from loadgen.summary import token_arrivals

    starts = {}
    for line in (run_dir / "generator.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if row.get("event") == "stage_start":
            starts[int(row["index"])] = int(row["start_wall_ns"]) / 1e9
    records = read_records(run_dir / "records.jsonl")
    probes = []
    for index, start in sorted(starts.items()):
        mine = [r for r in records if r.stage_index == index and r.status == "ok" and r.output_tokens]
        begin, end = start + warmup_s, start + warmup_s + measure_s
        arrived = [sum(n for at, n in token_arrivals(r) if begin <= at <= end) for r in mine]
        per_reply = sum(r.output_tokens or 0 for r in mine) / len(mine) if mine else 0.0
        tokens = sum(arrived)
        target = int(mine[0].target) if mine else 0
        rate = tokens / measure_s / per_reply if per_reply else None
        probes.append(Probe(target, rate, sum(1 for n in arrived if n > 0)))
    return probes


def knee(low: Probe, high: Probe) -> float | None:
    """``c*`` from the probe, or None when a probe level completed nothing or the high level carried less
    than the low one (in a steady state more streams never carry fewer tokens: its window saw a batch
    round's prefill, not the round; 0.05 against 0.25 req/s at 16 streams on 0.4-core engines, 6 s)."""
    if not low.throughput or not high.throughput or low.ok == 0 or high.ok == 0:
        return None
    if high.throughput < low.throughput:
        return None
    per_stream = low.throughput / low.concurrency
    return max(1.0, high.throughput / per_stream)


def window_cap(high: Probe, measure_s: float, share: float = 0.75) -> int | None:
    """The most streams a level can have while its requests (about ``c / X(P)`` s each past the knee)
    last at most ``share`` of its ``measure_s`` window; None without a probe throughput."""
    if not high.throughput:
        return None
    return max(2, int(share * measure_s * high.throughput))


def choose_levels(
    knee_streams: float | None, probe_high: int, max_concurrency: int, cap: int | None = None
) -> list[int]:
    """Levels around the knee (see the module's docstring); a failed probe falls back to a ladder up to
    4x the probe's high level. ``cap`` (``window_cap``) bounds the top level of a probed sweep."""
    if knee_streams is None:
        raw = [1.0, probe_high / 4, probe_high, 2.0 * probe_high, 4.0 * probe_high]
    else:
        top = max(4 * knee_streams, 2.0 * probe_high)  # past the engine's batch: requests queue, TTFT grows
        if cap is not None:
            top = max(knee_streams, min(top, cap))
        raw = [1.0, knee_streams, min(2 * knee_streams, (knee_streams + top) / 2), top]
    levels: list[int] = []
    for value in raw:
        level = min(max_concurrency, max(1, round(value)))
        if level not in levels and (not levels or level > levels[-1]):
            levels.append(level)
    return levels


def scaled(levels: list[int], replicas: int, max_concurrency: int) -> list[int]:
    """A ``replicas``-replica sweep's levels: the 1-replica levels times ``replicas`` (same per-replica
    load, so predicted and measured compare level by level)."""
    out: list[int] = []
    for level in levels:
        value = min(max_concurrency * replicas, level * replicas)
        if value not in out:
            out.append(value)
    return out
