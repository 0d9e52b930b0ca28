"""A synthetic day of traffic, for users without a trace of their own.

Arrivals form a gamma renewal process (shape = ``burstiness``; 1 is Poisson, below 1 burstier) in
unit-rate time, mapped onto a daily cycle by inverting the cumulative rate: rate(t) = mean * (1 + a *
sin(2 pi (t - peak_at_s) / period_s + pi / 2)) with a = (r - 1) / (r + 1) for a peak/trough ratio r, so
the highest rate is at ``peak_at_s`` and highest / lowest = r exactly. Input and output lengths are
log-normal (median, sigma of the log), clipped to [1, max]. Prefix blocks: each row gets
``ceil(input / block_tokens)`` hash ids, the first ``shared_prefix_blocks`` of which are drawn from a
small pool of "documents" (Zipf-like reuse) so that rows share prefixes as real traffic does.
"""

from __future__ import annotations

import math
import random

from pydantic import BaseModel, ConfigDict, Field

from loadgen.traces.formats import TraceRow


class SynthSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    duration_s: float = Field(default=86_400.0, gt=0)
    mean_rate: float = Field(default=2.0, gt=0, description="Mean requests per second over a whole cycle.")
    peak_to_trough: float = Field(default=4.0, ge=1)
    period_s: float = Field(default=86_400.0, gt=0)
    peak_at_s: float = Field(default=14 * 3600.0, ge=0, description="Offset of the daily peak.")
    burstiness: float = Field(default=0.5, gt=0, description="Gamma shape of the inter-arrival times.")
    input_median: float = Field(default=700.0, gt=0)
    input_sigma: float = Field(default=0.6, ge=0)
    input_max: int = Field(default=4000, ge=1)
    output_median: float = Field(default=200.0, gt=0)
    output_sigma: float = Field(default=0.8, ge=0)
    output_max: int = Field(default=1024, ge=1)
    block_tokens: int = Field(default=512, ge=1)
    shared_prefix_blocks: int = Field(default=1, ge=0)
    documents: int = Field(default=50, ge=1, description="Distinct shared prefixes (images + leading text).")
    seed: int = 0


def _amplitude(settings: SynthSettings) -> float:
    r = settings.peak_to_trough
    return (r - 1) / (r + 1)


def rate_at(settings: SynthSettings, t: float) -> float:
    phase = 2 * math.pi * (t - settings.peak_at_s) / settings.period_s
    return settings.mean_rate * (1 + _amplitude(settings) * math.cos(phase))


def cumulative(settings: SynthSettings, t: float) -> float:
    """Expected arrivals in [0, t]: the integral of rate_at."""
    w = 2 * math.pi / settings.period_s
    a = _amplitude(settings)
    phase0 = -w * settings.peak_at_s
    return settings.mean_rate * (t + a / w * (math.sin(w * t + phase0) - math.sin(phase0)))


def _time_of(settings: SynthSettings, units: float, guess: float) -> float:
    """The t with cumulative(t) = units (Newton from ``guess``; cumulative is strictly increasing)."""
    t = max(guess, 0.0)
    for _ in range(50):
        step = (cumulative(settings, t) - units) / rate_at(settings, t)
        t -= step
        if abs(step) < 1e-9:
            break
    return max(t, 0.0)


def synthesize(settings: SynthSettings) -> list[TraceRow]:
    gaps = random.Random(f"m3bench-synth-gaps:{settings.seed}")
    lengths = random.Random(f"m3bench-synth-lengths:{settings.seed}")
    rows: list[TraceRow] = []
    units, t = 0.0, 0.0
    total = cumulative(settings, settings.duration_s)
    next_hash = settings.documents * max(settings.shared_prefix_blocks, 1)
    while True:
        t = _time_of(settings, units, t)
        if units >= total or t >= settings.duration_s:
            break
        tokens_in = min(
            settings.input_max,
            max(1, round(lengths.lognormvariate(math.log(settings.input_median), settings.input_sigma))),
        )
        tokens_out = min(
            settings.output_max,
            max(1, round(lengths.lognormvariate(math.log(settings.output_median), settings.output_sigma))),
        )
        blocks = math.ceil(tokens_in / settings.block_tokens)
        document = min(int(lengths.paretovariate(1.2)) - 1, settings.documents - 1)
        shared = min(settings.shared_prefix_blocks, blocks)
        hashes = [document * settings.shared_prefix_blocks + k for k in range(shared)]
        for _ in range(blocks - shared):
            hashes.append(next_hash)
            next_hash += 1
        rows.append(TraceRow(len(rows) + 1, t, tokens_in, tokens_out, tuple(hashes)))
        units += gaps.gammavariate(settings.burstiness, 1.0 / settings.burstiness)
    return rows
