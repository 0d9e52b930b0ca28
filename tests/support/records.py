"""Synthetic request records for unit tests. ``record``: one ok, graded request on fixed timestamps, so that
every formula has a value to recompute by hand (TTFT 100 ms from send, two gaps of 10 and 80 ms, E2E
190 ms). ``bare_record``: only the fields a record must carry, for tests that set their own times."""

from __future__ import annotations

from typing import Any

from loadgen.records import RequestRecord

MS = 1_000_000

# What every record must carry, at values no formula reads: a test overrides those it is about.
_REQUIRED: dict[str, Any] = {
    "run_id": "r",
    "request_id": "r-1",
    "stage": "s0",
    "stage_index": 0,
    "phase": "measure",
    "mode": "open",
    "target": 2.0,
    "worker": "w0",
    "model": "m",
    "task_id": "t",
    "language": "en",
    "timing": "kernel",
    "anchor_wall_ns": 10**18,
    "anchor_perf_ns": 0,
    "status": "ok",
}
_TIMED: dict[str, Any] = {
    "scheduled_ns": 0,
    "sent_ns": 2 * MS,
    "first_token_ns": 102 * MS,
    "end_ns": 192 * MS,
    "chunk_offsets_ns": [100 * MS, 110 * MS, 190 * MS],
    "prompt_tokens": 5,
    "output_tokens": 10,
    "grade": "pass",
}


def bare_record(**fields: Any) -> RequestRecord:
    """The required fields with `fields` applied, RequestRecord's defaults for the rest (validated, so a
    wrong field fails the test); ``sent_ns`` and ``end_ns`` have no default and must be given."""
    return RequestRecord.model_validate({**_REQUIRED, **fields})


def record(**overrides: Any) -> RequestRecord:
    """The synthetic record with `overrides` applied (validated, so a wrong field fails the test)."""
    return bare_record(**{**_TIMED, **overrides})
