"""Trace files in the formats users have, read into one row type.

- ``mooncake`` (JSONL): ``timestamp`` (ms), ``input_length``, ``output_length``, ``hash_ids`` (prefix blocks);
- ``azure`` (Azure LLM inference trace CSV): ``TIMESTAMP`` (date and time), ``ContextTokens``,
  ``GeneratedTokens``;
- ``burstgpt`` (BurstGPT CSV): ``Timestamp`` (s), ``Request tokens``, ``Response tokens``;
- ``m3bench`` (a run's ``records.jsonl``): scheduled (else sent) time, ``prompt_tokens``, ``output_tokens``.

Arrival offsets are seconds from the trace's first row. Rows keep their order by time (a stable sort:
equal times keep file order). A malformed row is skipped and reported as ``file:line: what``; reading
fails only when no row is usable or the file cannot be read.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from loadgen.profile import LoadgenError

FORMATS = ("mooncake", "azure", "burstgpt", "m3bench")


class TraceError(LoadgenError):
    """A trace that cannot be used at all (unreadable, unknown format, no valid row)."""


@dataclass(frozen=True)
class TraceRow:
    line: int  # 1-based line of the source file
    at_s: float  # arrival offset from the trace's first row
    input_tokens: int
    output_tokens: int
    hash_ids: tuple[int, ...] = ()


@dataclass
class Trace:
    source: str
    format: str
    rows: list[TraceRow]
    problems: list[str] = field(default_factory=list)  # "file:line: what" per skipped row

    @property
    def duration_s(self) -> float:
        return self.rows[-1].at_s - self.rows[0].at_s if self.rows else 0.0


class _RowError(ValueError):
    pass


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise _RowError(f"{name} must be a whole number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _RowError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number) or number < 0 or number != int(number):
        raise _RowError(f"{name} must be a whole number >= 0, got {value!r}")
    return int(number)


def _seconds(value: Any, name: str, scale: float = 1.0) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _RowError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise _RowError(f"{name} must be finite, got {value!r}")
    return number * scale


_AZURE_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2})(?:\.(\d+))?(.*)$")


def _azure_time(value: str) -> float:
    """Seconds since the epoch of an Azure trace TIMESTAMP (``2023-11-16 18:15:46.6805900``: 7 digits)."""
    match = _AZURE_TIME.match(value.strip())
    if not match:
        raise _RowError(f"TIMESTAMP {value!r} is not a date and time")
    whole, fraction, zone = match.groups()
    try:
        stamp = datetime.fromisoformat(whole + (zone.strip() or "+00:00"))
    except ValueError:
        raise _RowError(f"TIMESTAMP {value!r} is not a date and time") from None
    return stamp.timestamp() + (float("0." + fraction) if fraction else 0.0)


def _mooncake(line: int, text: str) -> tuple[float, TraceRow]:
    try:
        item = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _RowError(f"not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(item, dict):
        raise _RowError("a row must be a JSON object")
    for key in ("timestamp", "input_length", "output_length"):
        if key not in item:
            raise _RowError(f"missing {key!r}")
    hashes = item.get("hash_ids", [])
    if not isinstance(hashes, list) or not all(
        isinstance(h, int) and not isinstance(h, bool) for h in hashes
    ):
        raise _RowError("hash_ids must be a list of integers")
    at = _seconds(item["timestamp"], "timestamp", 1e-3)
    return at, TraceRow(
        line,
        0.0,
        _count(item["input_length"], "input_length"),
        _count(item["output_length"], "output_length"),
        tuple(hashes),
    )


def _read_jsonl(path: Path, parse: Any) -> tuple[list[tuple[float, TraceRow]], list[str]]:
    rows, problems = [], []
    with path.open(encoding="utf-8") as handle:
        for number, text in enumerate(handle, 1):
            if not text.strip():
                continue
            try:
                rows.append(parse(number, text))
            except _RowError as exc:
                problems.append(f"{path}:{number}: {exc}")
    return rows, problems


def _read_csv(
    path: Path, columns: tuple[str, str, str], time_of: Any
) -> tuple[list[tuple[float, TraceRow]], list[str]]:
    rows, problems = [], []
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        header = [name.strip() for name in reader.fieldnames or []]
        missing = [c for c in columns if c not in header]
        if missing:
            raise TraceError(
                f"{path}:1: missing column(s) {', '.join(missing)} (header: {', '.join(header)})"
            )
        reader.fieldnames = header
        for raw in reader:
            number = reader.line_num
            try:
                if None in raw or any(raw.get(c) is None for c in columns):
                    raise _RowError(f"expected {len(header)} fields")
                at = time_of(raw[columns[0]])
                row = TraceRow(
                    number, 0.0, _count(raw[columns[1]], columns[1]), _count(raw[columns[2]], columns[2])
                )
                rows.append((at, row))
            except _RowError as exc:
                problems.append(f"{path}:{number}: {exc}")
    return rows, problems


def _read_records(path: Path) -> tuple[list[tuple[float, TraceRow]], list[str]]:
    from loadgen.records import RequestRecord
    from loadgen.timings import wall_s

    def parse(number: int, text: str) -> tuple[float, TraceRow]:
        try:
            record = RequestRecord.model_validate_json(text)
        except ValueError as exc:
            raise _RowError(f"not a request record: {str(exc).splitlines()[0]}") from None
        if record.prompt_tokens is None or record.output_tokens is None:
            raise _RowError(f"request {record.request_id} has no token usage (status {record.status})")
        at = wall_s(record, record.scheduled_ns if record.scheduled_ns is not None else record.sent_ns)
        return at, TraceRow(number, 0.0, record.prompt_tokens, record.output_tokens)

    return _read_jsonl(path, parse)


def detect_format(path: Path) -> str:
    if path.name == "records.jsonl":
        return "m3bench"
    if path.suffix in (".jsonl", ".json"):
        return "mooncake"
    try:
        with path.open(encoding="utf-8") as handle:
            header = handle.readline()
    except OSError as exc:
        raise TraceError(f"cannot read trace {path}: {exc.strerror}") from None
    if "ContextTokens" in header:
        return "azure"
    if "Request tokens" in header:
        return "burstgpt"
    raise TraceError(f"cannot tell the format of {path}: pass one of {', '.join(FORMATS)}")


def read_trace(path: Path, format: str = "auto") -> Trace:
    """Every usable row of ``path``, sorted by arrival, offsets from the first row."""
    if not path.is_file():
        raise TraceError(f"trace {path} does not exist")
    kind = detect_format(path) if format == "auto" else format
    if kind not in FORMATS:
        raise TraceError(f"unknown trace format {kind!r}; known: {', '.join(FORMATS)}")
    try:
        if kind == "mooncake":
            timed, problems = _read_jsonl(path, _mooncake)
        elif kind == "azure":
            timed, problems = _read_csv(path, ("TIMESTAMP", "ContextTokens", "GeneratedTokens"), _azure_time)
        elif kind == "burstgpt":
            timed, problems = _read_csv(
                path, ("Timestamp", "Request tokens", "Response tokens"), lambda v: _seconds(v, "Timestamp")
            )
        else:
            timed, problems = _read_records(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceError(f"cannot read trace {path}: {exc}") from None
    if not timed:
        detail = f" (first problem: {problems[0]})" if problems else ""
        raise TraceError(f"trace {path} has no usable row{detail}")
    timed.sort(key=lambda pair: pair[0])
    first = timed[0][0]
    rows = [
        TraceRow(row.line, at - first, row.input_tokens, row.output_tokens, row.hash_ids) for at, row in timed
    ]
    return Trace(str(path), kind, rows, problems)


def write_mooncake(rows: list[TraceRow], path: Path) -> None:
    """Rows as Mooncake JSONL (timestamp in whole milliseconds, as the published trace has it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            item = {
                "timestamp": round(row.at_s * 1000),
                "input_length": row.input_tokens,
                "output_length": row.output_tokens,
                "hash_ids": list(row.hash_ids),
            }
            handle.write(json.dumps(item) + "\n")
