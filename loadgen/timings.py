"""Per-request latency formulas (docs/design.md), computed from a record's raw timestamps.

Every function returns ``None`` when the quantity does not exist for that request (no token came, no
usage was reported, ...); nothing falls back to a stand-in value.
"""

from __future__ import annotations

import itertools

from loadgen.records import RequestRecord

NS = 1e9


def ttft_s(record: RequestRecord) -> float | None:
    """TTFT = first content token arrival - send."""
    if record.first_token_ns is None:
        return None
    return (record.first_token_ns - record.sent_ns) / NS


def e2e_s(record: RequestRecord) -> float | None:
    """E2E = last byte arrival - send (complete replies only)."""
    if record.status != "ok":
        return None
    return (record.end_ns - record.sent_ns) / NS


def tpot_s(record: RequestRecord) -> float | None:
    """TPOT = (E2E - TTFT) / (output_tokens - 1), output_tokens from the server's usage."""
    ttft = ttft_s(record)
    e2e = e2e_s(record)
    if ttft is None or e2e is None or record.output_tokens is None or record.output_tokens < 2:
        return None
    return (e2e - ttft) / (record.output_tokens - 1)


def itl_s(record: RequestRecord) -> list[float]:
    """ITL = gaps between consecutive content chunks (a chunk may carry several tokens)."""
    offsets = record.chunk_offsets_ns
    return [(b - a) / NS for a, b in itertools.pairwise(offsets)]


def schedule_lag_s(record: RequestRecord) -> float | None:
    """Schedule lag = send - scheduled send (open loop only)."""
    if record.scheduled_ns is None:
        return None
    return (record.sent_ns - record.scheduled_ns) / NS


def ttft_from_scheduled_s(record: RequestRecord) -> float | None:
    """TTFT as seen by a user who arrived on schedule: first token - scheduled send.

    Unlike TTFT from the send, this includes any delay in sending, so coordinated omission shows.
    """
    if record.first_token_ns is None or record.scheduled_ns is None:
        return None
    return (record.first_token_ns - record.scheduled_ns) / NS


def e2e_from_scheduled_s(record: RequestRecord) -> float | None:
    """E2E from the scheduled send: last byte - scheduled send."""
    if record.status != "ok" or record.scheduled_ns is None:
        return None
    return (record.end_ns - record.scheduled_ns) / NS


def wall_s(record: RequestRecord, perf_ns: int) -> float:
    """A time of this record's process on the wall clock (seconds since the epoch)."""
    return (record.anchor_wall_ns + (perf_ns - record.anchor_perf_ns)) / NS
