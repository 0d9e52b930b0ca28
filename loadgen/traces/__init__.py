"""Arrival traces: read the public formats, cut and rescale them, synthesize a day, map rows to tasks.

A trace is a list of :class:`TraceRow` (arrival offset, input and output length, prefix-block hashes).
``read_trace`` reads Mooncake JSONL, Azure LLM inference CSV, BurstGPT CSV and m3bench's own
``records.jsonl``; a malformed row becomes a problem line (file:line: what) and the rest is kept.
``window``/``rescale`` cut and speed up a trace without resampling it (inter-arrival times are scaled, so
its burstiness stays); ``synth.synthesize`` writes a day with a daily cycle and gamma bursts; the trace
load mode (``loadgen.profile.TraceSpec``) replays rows at their offsets through the open-loop scheduler.
"""

from loadgen.traces.formats import FORMATS, Trace, TraceError, TraceRow, read_trace
from loadgen.traces.transform import offered_rate, rescale, window

__all__ = [
    "FORMATS",
    "Trace",
    "TraceError",
    "TraceRow",
    "offered_rate",
    "read_trace",
    "rescale",
    "window",
]
