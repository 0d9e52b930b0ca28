"""The calibration server's own accuracy: how late each send was against its absolute deadline.

Lateness is kept in a fixed histogram of 10 microsecond bins (up to 1 s, then one overflow bin), so
recording one send costs one list increment and a run of any length uses constant memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from loadgen.stats import histogram_quantile

BIN_NS = 10_000
BINS = 100_001  # 100_000 bins of 10 us (1 s) and one overflow bin


@dataclass
class LatenessHistogram:
    """Counts of ``actual send - deadline`` in 10 us bins; quantiles interpolate inside a bin."""

    counts: list[int] = field(default_factory=lambda: [0] * BINS)
    total: int = 0
    max_ns: int = 0

    def add(self, lateness_ns: int) -> None:
        lateness_ns = max(lateness_ns, 0)
        index = lateness_ns // BIN_NS
        self.counts[index if index < BINS else BINS - 1] += 1
        self.total += 1
        self.max_ns = max(self.max_ns, lateness_ns)

    def quantile_s(self, q: float) -> float | None:
        """``loadgen.stats.histogram_quantile``: linear inside the 10 us bin that holds rank q * total."""
        if self.total == 0:
            return None
        buckets: list[tuple[float, float]] = []
        seen = 0
        for index, count in enumerate(self.counts):
            if not count:
                continue
            last = index == BINS - 1
            buckets.append((index * BIN_NS / 1e9, float(seen)))  # this bin's lower edge
            seen += count
            buckets.append((math.inf if last else (index + 1) * BIN_NS / 1e9, float(seen)))
        if not math.isinf(buckets[-1][0]):
            buckets.append((math.inf, float(seen)))
        return histogram_quantile(buckets, q).estimate

    def summary(self) -> dict[str, Any]:
        return {
            "count": self.total,
            "p50_s": self.quantile_s(0.5),
            "p90_s": self.quantile_s(0.9),
            "p99_s": self.quantile_s(0.99),
            "p999_s": self.quantile_s(0.999),
            "max_s": self.max_ns / 1e9 if self.total else None,
        }


@dataclass
class ServerStats:
    """Everything ``GET /calibration/stats`` reports."""

    first_token: LatenessHistogram = field(default_factory=LatenessHistogram)
    later_tokens: LatenessHistogram = field(default_factory=LatenessHistogram)
    requests: int = 0
    streams_done: int = 0
    max_open_streams: int = 0
    chunks_sent: int = 0
    queued: int = 0  # --capacity-tps: requests that waited for the engine
    request_ids: list[str] = field(default_factory=list)

    def as_json(self, open_streams: int, cpu_s: float, wall_s: float) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "streams_done": self.streams_done,
            "open_streams": open_streams,
            "max_open_streams": self.max_open_streams,
            "chunks_sent": self.chunks_sent,
            "queued": self.queued,
            "first_token_lateness": self.first_token.summary(),
            "token_lateness": self.later_tokens.summary(),
            "cpu_s": cpu_s,
            "wall_s": wall_s,
            "request_id_count": len(self.request_ids),
        }
