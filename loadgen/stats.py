"""The one percentile definition of m3bench, its confidence interval, and the histogram quantile.

* ``quantile(values, q)``: linear interpolation between order statistics (Hyndman and Fan type 7, numpy's
  default): with the n values sorted x_0 <= ... <= x_{n-1}, h = (n - 1) q and
  Q(q) = x_floor(h) + (h - floor(h)) (x_floor(h)+1 - x_floor(h)). Summaries, the generator's loop-lag
  p99 that decides validity and the SLO search all use it.
* ``quantile_ci(values, q, confidence)``: the distribution-free confidence interval of the q-quantile
  by order statistics: the number of values below the true quantile is Binomial(n, q), so
  [x_(l), x_(u)] (1-based ranks) covers it with probability P(l <= B <= u - 1). l and u are the
  equal-tailed binomial bounds (each tail at most (1 - confidence) / 2); None when n is too small for
  any such interval (for the p99 at 95 %: n < 368, the smallest n with 0.99^n <= 0.025).
* ``histogram_quantile(buckets, q)``: the quantile of values known only as cumulative bucket counts
  (Prometheus buckets, the calibration server's lateness bins): the same linear interpolation, applied
  inside the bucket that holds rank q * total (Prometheus' ``histogram_quantile``). It cannot be the
  order-statistic definition because the values themselves are gone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def lerp(low: float, high: float, share: float) -> float:
    """The point ``share`` of the way from ``low`` to ``high`` (the interpolation every quantile uses).

    Exact at the ends, so an infinite neighbour (a failed request counted as +inf) does not turn a
    value that lies on an order statistic into NaN.
    """
    if share == 0 or low == high:
        return low
    return low + (high - low) * share


def quantile_sorted(ordered: Sequence[float], q: float) -> float:
    """Type-7 quantile of values already sorted ascending; ``q`` in [0, 1]."""
    if not ordered:
        raise ValueError("quantile of no values")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile level {q} is outside [0, 1]")
    position = (len(ordered) - 1) * q
    below = math.floor(position)
    if below + 1 >= len(ordered):
        return float(ordered[-1])
    return lerp(float(ordered[below]), float(ordered[below + 1]), position - below)


def quantile(values: Iterable[float], q: float) -> float:
    return quantile_sorted(sorted(values), q)


def percentiles(values: Iterable[float], levels: Sequence[float]) -> list[float]:
    """Several percentiles (levels in percent, e.g. 50, 99, 99.9) of one set of values."""
    ordered = sorted(values)
    return [quantile_sorted(ordered, level / 100.0) for level in levels]


def _binomial_cdfs(n: int, p: float) -> list[float]:
    """[P(B <= k) for k = 0..n] for B ~ Binomial(n, p), from log-space terms (exact enough for any n)."""
    log_p, log_q = math.log(p), math.log1p(-p)
    log_n = math.lgamma(n + 1)
    cdfs: list[float] = []
    total = 0.0
    for k in range(n + 1):
        total += math.exp(log_n - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * log_p + (n - k) * log_q)
        cdfs.append(min(total, 1.0))
    return cdfs


def order_statistic_ranks(n: int, q: float, confidence: float = 0.95) -> tuple[int, int] | None:
    """1-based ranks (l, u) of the equal-tailed order-statistic interval of the q-quantile, or None.

    B = number of values below the true quantile ~ Binomial(n, q). The interval misses low when B <= l - 1
    and high when B >= u; l is the largest rank with P(B <= l - 1) <= tail, u the smallest with
    P(B >= u) <= tail, tail = (1 - confidence) / 2.
    """
    if n <= 0 or not 0.0 < q < 1.0:
        return None
    tail = (1.0 - confidence) / 2.0
    cdf = _binomial_cdfs(n, q)
    lower = 0
    while lower < n and cdf[lower] <= tail:
        lower += 1  # rank lower + 1 would miss with probability cdf[lower] <= tail: still allowed
    upper = n + 1
    while upper >= 2 and 1.0 - cdf[upper - 2] <= tail:
        upper -= 1
    if lower < 1 or upper > n:
        return None
    return lower, upper


def min_samples_for_ci(q: float, confidence: float = 0.95) -> int:
    """Smallest n for which ``order_statistic_ranks`` exists: q^n <= (1 - confidence) / 2 (upper tail)."""
    tail = (1.0 - confidence) / 2.0
    n = max(1, math.ceil(math.log(tail) / math.log(q)))
    while order_statistic_ranks(n, q, confidence) is None:
        n += 1
    return n


@dataclass(frozen=True)
class QuantileEstimate:
    estimate: float
    low: float | None  # the confidence interval; None when n is too small for one
    high: float | None
    n: int
    confidence: float

    @property
    def relative_half_width(self) -> float | None:
        if self.low is None or self.high is None or self.estimate <= 0:
            return None
        return (self.high - self.low) / 2.0 / self.estimate


def quantile_ci(values: Iterable[float], q: float, confidence: float = 0.95) -> QuantileEstimate:
    ordered = sorted(values)
    ranks = order_statistic_ranks(len(ordered), q, confidence)
    low = high = None
    if ranks is not None:
        low, high = float(ordered[ranks[0] - 1]), float(ordered[ranks[1] - 1])
    return QuantileEstimate(quantile_sorted(ordered, q), low, high, len(ordered), confidence)


@dataclass(frozen=True)
class BucketQuantile:
    estimate: float
    lower: float  # bounds of the bucket that holds the quantile
    upper: float


def histogram_quantile(buckets: Sequence[tuple[float, float]], q: float) -> BucketQuantile:
    """Quantile from cumulative buckets [(upper bound, count of values <= bound)], ascending, last +Inf.

    Linear interpolation inside the bucket holding rank q * total, the lowest bucket starting at 0; a
    rank in the +Inf bucket returns the last finite bound (Prometheus' rule).
    """
    if not buckets:
        raise ValueError("empty histogram")
    total = buckets[-1][1]
    if total <= 0:
        raise ValueError("empty histogram")
    rank = q * total
    previous_bound, previous_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank and count > 0:
            if math.isinf(bound):
                return BucketQuantile(previous_bound, previous_bound, bound)
            share = (rank - previous_count) / (count - previous_count) if count > previous_count else 1.0
            return BucketQuantile(lerp(previous_bound, bound, share), previous_bound, bound)
        previous_bound, previous_count = bound, count
    raise ValueError("no bucket reaches the total (is the +Inf bucket missing?)")
