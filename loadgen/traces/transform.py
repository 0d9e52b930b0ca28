"""Cut a trace to a window and change its speed without resampling it.

Speeding a trace up (``speedup``) or setting its mean rate (``rate``) divides every arrival offset by
one factor, so the inter-arrival times shrink together and the trace keeps its burstiness (coefficient
of variation) and its shape over time; no arrival is added or dropped. ``rate`` is the mean offered
rate over the (windowed) trace: (rows - 1) / (last - first arrival).
"""

from __future__ import annotations

from dataclasses import replace

from loadgen.traces.formats import TraceError, TraceRow


def offered_rate(rows: list[TraceRow]) -> float | None:
    """Mean arrivals per second between the first and the last row (None below two distinct times)."""
    if len(rows) < 2 or rows[-1].at_s <= rows[0].at_s:
        return None
    return (len(rows) - 1) / (rows[-1].at_s - rows[0].at_s)


def window(rows: list[TraceRow], start_s: float = 0.0, duration_s: float | None = None) -> list[TraceRow]:
    """Rows arriving in [start_s, start_s + duration_s), offsets re-based to the window's start."""
    if start_s < 0 or (duration_s is not None and duration_s <= 0):
        raise TraceError(
            f"trace window start {start_s} s, duration {duration_s} s: need start >= 0 < duration"
        )
    end = float("inf") if duration_s is None else start_s + duration_s
    chosen = [replace(row, at_s=row.at_s - start_s) for row in rows if start_s <= row.at_s < end]
    if not chosen:
        raise TraceError(f"no trace row arrives in [{start_s:g}, {end:g}) s")
    return chosen


def rescale(rows: list[TraceRow], speedup: float | None = None, rate: float | None = None) -> list[TraceRow]:
    """Offsets divided by ``speedup``, or by the factor that makes the mean rate ``rate`` (not both)."""
    if speedup is not None and rate is not None:
        raise TraceError("set a trace's speedup or its rate, not both")
    factor = 1.0
    if speedup is not None:
        if speedup <= 0:
            raise TraceError(f"trace speedup must be > 0, got {speedup:g}")
        factor = speedup
    elif rate is not None:
        current = offered_rate(rows)
        if rate <= 0 or current is None:
            raise TraceError(f"cannot rescale to {rate:g}/s: the trace has no measurable rate")
        factor = rate / current
    if factor == 1.0:
        return list(rows)
    return [replace(row, at_s=row.at_s / factor) for row in rows]
