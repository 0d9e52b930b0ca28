"""How a run ended, in one exit status and one line: from its records and what the generator reported.

``judge`` is pure (records in, verdict out), so every rule below is unit-tested on synthetic records:

- ``EXIT_OK`` (0): every planned stage measured requests and none failed more often than
  ``Profile.max_error_fraction``;
- ``EXIT_ERRORS``: the run completed, but a stage's measured error fraction is above the threshold (or
  a stage measured nothing);
- ``EXIT_GENERATOR_FAILED``: Locust failed (start-up error, a process that died, an overrun);
- ``128 + signal number``: stopped by SIGTERM/SIGINT (the summary is still written).

The line names the measured counts by status and the main cause of the errors: the record's classified
``cause`` (engine_dead, out_of_memory, bad_request, not_found) where known, else its status and the
start of its error text.
"""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from loadgen.records import STATUSES, RequestRecord

EXIT_OK = 0
EXIT_ERRORS = 3
EXIT_GENERATOR_FAILED = 4


@dataclass
class Outcome:
    code: int
    verdict: str  # ok | errors_above_threshold | generator_failed | interrupted
    line: str
    by_status: dict[str, int] = field(default_factory=dict)  # measured requests
    main_cause: str | None = None
    causes: dict[str, int] = field(default_factory=dict)  # error key -> measured errors
    reasons: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def error_key(record: RequestRecord) -> str:
    """What an error is counted under: its classified cause, else its status."""
    return record.cause or record.status


def _sample(records: Sequence[RequestRecord], key: str) -> str:
    for record in records:
        if record.status != "ok" and error_key(record) == key and record.error:
            text = " ".join(record.error.split())
            return text if len(text) <= 100 else text[:97] + "..."
    return ""


def judge(
    records: Sequence[RequestRecord],
    stages: Sequence[str],
    max_error_fraction: float,
    problems: Sequence[str] = (),
    interrupted: int | None = None,
) -> Outcome:
    """``stages``: every planned stage name in order; ``problems``: generator failures (one line each);
    ``interrupted``: the signal number that stopped the run, if one did."""
    measured = [r for r in records if r.phase == "measure"]
    by_status: dict[str, int] = {s: sum(1 for r in measured if r.status == s) for s in STATUSES}
    causes = Counter(error_key(r) for r in measured if r.status != "ok")
    reasons: list[str] = []
    for name in stages:
        in_stage = [r for r in measured if r.stage == name]
        if not in_stage:
            reasons.append(f"stage {name} measured no request")
            continue
        errors = sum(r.status != "ok" for r in in_stage)
        if errors / len(in_stage) > max_error_fraction:
            reasons.append(
                f"stage {name}: {errors}/{len(in_stage)} errors "
                f"({errors / len(in_stage):.1%} > {max_error_fraction:.1%})"
            )
    counts = ", ".join(f"{n} {status}" for status, n in by_status.items() if n) or "no request"
    main = causes.most_common(1)[0][0] if causes else None
    cause_text = (
        f"; main cause: {main} ({causes[main]}x"
        + (f': "{sample}")' if (sample := _sample(measured, main)) else ")")
        if main is not None
        else ""
    )
    summary = f"{counts} measured{cause_text}"
    if interrupted is not None:
        name = signal.Signals(interrupted).name if interrupted in signal.valid_signals() else str(interrupted)
        code, verdict = 128 + interrupted, "interrupted"
        line = f"interrupted by {name}: {summary}"
    elif problems:
        code, verdict = EXIT_GENERATOR_FAILED, "generator_failed"
        reasons = [*problems, *reasons]
        line = f"load generator failed: {problems[0]}; {summary}"
    elif reasons:
        code, verdict = EXIT_ERRORS, "errors_above_threshold"
        line = f"errors above threshold: {reasons[0]}; {summary}"
    else:
        code, verdict = EXIT_OK, "ok"
        line = f"ok: {summary}"
    return Outcome(code, verdict, f"{line} (exit {code})", by_status, main, dict(causes), reasons)
