"""A trace stage's arrivals and requests: the rows to replay, each row's task and output length.

``rows(spec)`` reads, windows and rescales the trace once per process (cached by file, size, mtime and
the spec), so the stage plan, the schedule and the worker all see the same offsets. ``Replay`` maps each
row to a task (``loadgen.traces.mapping``) and to the bytes that carry its output length; the worker
splices those into the task's prebuilt body at send time (``Workload.body``), as it does the model name,
so no body is built per row. Every worker builds the same ``Replay`` from the same rows and tasks, so
arrival ``i`` asks the same request whichever worker sends it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from benchmark.tasks.schema import TaskRecord
from loadgen.profile import TraceSpec
from loadgen.traces.formats import TraceError, TraceRow, read_trace
from loadgen.traces.mapping import map_rows
from loadgen.traces.transform import offered_rate, rescale, window

Loaded = tuple[tuple[TraceRow, ...], tuple[str, ...]]
TAIL_S = 0.5  # the stage's measure phase ends this long after the last row, so that row goes out first


@functools.lru_cache(maxsize=8)
def _rows(key: tuple[Path, int, int, str, float, float | None, float | None, float | None]) -> Loaded:
    """Rows of one trace file as windowed and rescaled; ``key``: path, size, mtime and the spec's figures."""
    path, _size, _mtime, format, start_s, duration_s, speedup, rate = key
    trace = read_trace(path, format)
    chosen = window(trace.rows, start_s, duration_s) if start_s or duration_s else trace.rows
    return tuple(rescale(chosen, speedup, rate)), tuple(trace.problems)


def rows(spec: TraceSpec) -> list[TraceRow]:
    """The rows a trace stage replays, offsets in seconds from the stage start."""
    return list(_load(spec)[0])


def problems(spec: TraceSpec) -> list[str]:
    """``file:line: what`` for every row of the trace that was skipped."""
    return list(_load(spec)[1])


def _load(spec: TraceSpec) -> Loaded:
    try:
        stat = spec.path.stat()
    except OSError as exc:
        raise TraceError(f"cannot read trace {spec.path}: {exc.strerror}") from None
    key = (spec.path, stat.st_size, stat.st_mtime_ns, spec.format, spec.start_s, spec.duration_s)
    return _rows((*key, spec.speedup, spec.rate))


def span_s(spec: TraceSpec) -> float:
    """Seconds from the stage start to the end of the replayed trace: the window's end (rescaled) or the
    last row, whichever is later."""
    chosen = rows(spec)
    end = chosen[-1].at_s
    if spec.duration_s is not None:
        end = max(end, spec.duration_s / _factor(spec))
    return end


def _factor(spec: TraceSpec) -> float:
    """The speed-up the spec applied (``transform.rescale``: speedup, or rate / the window's own rate)."""
    if spec.speedup is not None:
        return spec.speedup
    if spec.rate is not None:
        unscaled = _load(spec.model_copy(update={"rate": None}))[0]
        current = offered_rate(list(unscaled))
        return spec.rate / current if current else 1.0
    return 1.0


def length_fields(tokens: int, output_length: str) -> bytes:
    """The JSON members that set one request's output length (spliced in after the body's other keys)."""
    if output_length == "ignore_eos":
        return b',"max_tokens":%d,"ignore_eos":true' % tokens
    if output_length == "min_tokens":
        return b',"max_tokens":%d,"min_tokens":%d' % (tokens, tokens)
    return b',"max_tokens":%d' % tokens


@dataclass(frozen=True)
class ReplayRow:
    task_index: int
    length: bytes  # length_fields of the row's output length
    keep_stop: bool  # output_length "max_tokens": the task's stop strings stay in the body
    line: int  # the row's line in the trace file (recorded as trace_line)
    estimated_prompt_tokens: int


class Replay:
    """Row ``i`` of a trace stage as a request: task, output-length members, trace line."""

    def __init__(self, spec: TraceSpec, tasks: list[TaskRecord]) -> None:
        chosen = rows(spec)
        mapped = map_rows(chosen, tasks, spec.bytes_per_token, spec.image_tokens)
        keep_stop = spec.output_length == "max_tokens"
        self.rows = [
            ReplayRow(
                m.task_index,
                length_fields(m.max_tokens, spec.output_length),
                keep_stop,
                row.line,
                m.estimated_prompt_tokens,
            )
            for row, m in zip(chosen, mapped, strict=True)
        ]
        self.offsets = [row.at_s for row in chosen]
        self.bucket_s = spec.bucket_s

    def offered_rate(self, offset_s: float, window_s: float = 10.0) -> float:
        """Rows per second offered in the ``window_s`` before ``offset_s`` (the target-rate gauge)."""
        import bisect

        low = bisect.bisect_left(self.offsets, offset_s - window_s)
        high = bisect.bisect_right(self.offsets, offset_s)
        return (high - low) / window_s
