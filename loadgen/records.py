"""The request record (docs/design.md): one JSON line per request, written as the request ends.

Times are ``perf_counter_ns`` of the process that sent the request; ``anchor_wall_ns`` and
``anchor_perf_ns`` (taken once per process) place them on the wall clock, so records of several
workers can be put on one time line. Errors are records too: nothing that was sent is dropped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Literal

from pydantic import BaseModel, ConfigDict, Field

Status = Literal["ok", "http_error", "timeout", "disconnect", "bad_stream"]
Phase = Literal["warmup", "measure", "cooldown"]
Verdict = Literal["pass", "fail", "error", "timeout", "ungraded"]
Mode = Literal["closed", "open"]
STATUSES: tuple[Status, ...] = ("ok", "http_error", "timeout", "disconnect", "bad_stream")
VERDICTS: tuple[Verdict, ...] = ("pass", "fail", "error", "timeout", "ungraded")
SCHEMA_VERSION = 1


class RequestRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    run_id: str
    request_id: str = Field(description="Unique per run; also sent as the x-request-id header.")
    stage: str
    stage_index: int
    phase: Phase
    mode: Mode
    target: float = Field(description="The stage's concurrency (closed loop) or request rate /s (open loop).")
    worker: str = Field(description="Locust process that sent it: 'local' or 'w<index>'.")
    model: str
    task_id: str
    task_group: str | None = Field(
        default=None, description="The task's metadata.group, e.g. 'image' or 'text-only'."
    )
    trace_line: int | None = Field(default=None, description="Trace stage: the row's line in its file.")
    session_id: str | None = Field(default=None, description="Session stage: the conversation's id.")
    turn: int | None = Field(default=None, description="Session stage: 0 = first question, 1.. follow-ups.")
    language: str
    scheduled_ns: int | None = Field(
        default=None, description="Open loop: the absolute target send time. Closed loop: None."
    )
    sent_ns: int = Field(description="Taken just before the request bytes were written.")
    connect_ns: int | None = Field(
        default=None,
        description="Opening a new connection, just before sent_ns (so inside an open loop's schedule lag); "
        "None when a kept-alive connection was reused.",
    )
    first_token_ns: int | None = Field(default=None, description="Arrival of the first content token.")
    end_ns: int = Field(description="Arrival of the last byte (or the moment the failure was seen).")
    chunk_offsets_ns: list[int] = Field(
        default_factory=list, description="Arrival of every content chunk, minus sent_ns."
    )
    timing: Literal["kernel", "user"] = Field(
        description="'kernel': arrivals are SO_TIMESTAMPNS socket stamps; 'user': clock read after recv."
    )
    first_token_read_delay_ns: int | None = Field(
        default=None, description="User-space read time minus arrival of the first token: generator delay."
    )
    coalesced_reads: int = 0
    anchor_wall_ns: int
    anchor_perf_ns: int
    http_status: int | None = None
    prompt_tokens: int | None = None
    output_tokens: int | None = Field(default=None, description="From the server's usage chunk only.")
    finish_reason: str | None = None
    status: Status
    error: str = ""
    cause: str | None = Field(
        default=None,
        description="Known cause of an error (engine_dead, out_of_memory, bad_request, not_found), or None.",
    )
    output: str = ""
    grade: Verdict = "ungraded"
    grade_detail: str = ""
    grade_duration_s: float | None = None


class RecordWriter:
    """Appends one line per record and flushes it, so a crash loses nothing already written."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._handle: IO[str] = path.open("a", encoding="utf-8")
        self.count = 0

    def write_line(self, line: str) -> None:
        self._handle.write(line if line.endswith("\n") else line + "\n")
        self._handle.flush()
        self.count += 1

    def write(self, record: RequestRecord) -> None:
        self.write_line(record.model_dump_json())

    def write_lines(self, lines: list[str]) -> None:
        """Several finished records at once (one flush): what the master does with a forwarded batch."""
        self._handle.write("".join(line if line.endswith("\n") else line + "\n" for line in lines))
        self._handle.flush()
        self.count += len(lines)

    def sync(self) -> None:
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.flush()
            self._handle.close()


class BackgroundWriter:
    """A ``RecordWriter`` whose writes run, in order, on one native thread.

    Under heavy disk writeback a ``write`` can block for hundreds of milliseconds (dirty-page
    throttling); on the event loop that would stall every stream's reads. The thread releases the GIL
    in the syscall, so the loop keeps reading. Each line is still written and flushed on its own.
    """

    def __init__(self, path: Path) -> None:
        from gevent.threadpool import ThreadPool

        self.writer = RecordWriter(path)
        self.path = path
        self.pool = ThreadPool(1)
        self.count = 0

    def write_line(self, line: str) -> None:
        self.count += 1
        self.pool.spawn(self.writer.write_line, line)

    def write(self, record: RequestRecord) -> None:
        self.write_line(record.model_dump_json())

    def write_lines(self, lines: list[str]) -> None:
        self.count += len(lines)
        self.pool.spawn(self.writer.write_lines, lines)

    def sync(self) -> None:
        self.pool.spawn(self.writer.sync).get()

    def close(self) -> None:
        self.pool.spawn(self.writer.close).get()
        self.pool.kill()


def iter_records(path: Path) -> Iterator[RequestRecord]:
    """Every record of a records.jsonl; a torn last line (a crash mid-write) is skipped."""
    with path.open(encoding="utf-8") as handle:
        lines = handle.readlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if number == len(lines) and not line.endswith("\n"):
            break
        yield RequestRecord.model_validate_json(line)


def read_records(path: Path) -> list[RequestRecord]:
    return list(iter_records(path))


def read_grades(path: Path) -> dict[str, dict[str, object]]:
    """request_id -> {grade, grade_detail, grade_duration_s} from a worker's grades file."""
    grades: dict[str, dict[str, object]] = {}
    if not path.is_file():
        return grades
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.endswith("\n") and line.strip():
                row = json.loads(line)
                grades[row.pop("request_id")] = row
    return grades
