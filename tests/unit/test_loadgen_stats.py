"""The one percentile definition, its order-statistic confidence interval, the histogram quantile."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from loadgen.calibration.stats import LatenessHistogram
from loadgen.stats import (
    histogram_quantile,
    min_samples_for_ci,
    order_statistic_ranks,
    percentiles,
    quantile,
    quantile_ci,
)
from observability.dashboards.compare import quantile as prometheus_quantile


@pytest.mark.parametrize("n", [1, 2, 3, 10, 101, 1000])
def test_quantile_is_numpys_default(n: int) -> None:
    rng = random.Random(n)
    values = [rng.expovariate(1.0) for _ in range(n)]
    for q in (0.0, 0.1, 0.5, 0.9, 0.99, 0.999, 1.0):
        assert quantile(values, q) == pytest.approx(float(np.percentile(values, q * 100)), abs=1e-12)
    assert percentiles(values, [50, 99]) == pytest.approx(list(np.percentile(values, [50, 99])))


def test_quantile_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="no values"):
        quantile([], 0.5)
    with pytest.raises(ValueError, match="outside"):
        quantile([1.0], 1.5)


def test_order_statistic_interval_matches_the_textbook() -> None:
    # the median of 100: ranks 40 and 61 (the classical distribution-free 95 % interval)
    assert order_statistic_ranks(100, 0.5) == (40, 61)
    # the p99 at 95 %: no interval below n = 368 (0.99^n > 0.025), the maximum is the upper end at 368
    assert min_samples_for_ci(0.99) == 368 == math.ceil(math.log(0.025) / math.log(0.99))
    assert order_statistic_ranks(367, 0.99) is None
    assert order_statistic_ranks(368, 0.99) == (360, 368)


def test_order_statistic_interval_covers_as_stated() -> None:
    # coverage of the true p99 of Exp(1) (ln 100) over repeated samples of 1000: at least 95 %
    truth = math.log(100.0)
    rng = random.Random(7)
    covered = 0
    trials = 400
    for _ in range(trials):
        estimate = quantile_ci([rng.expovariate(1.0) for _ in range(1000)], 0.99)
        assert estimate.low is not None
        assert estimate.high is not None
        covered += estimate.low <= truth <= estimate.high
    assert covered / trials >= 0.93  # 95 % nominal; binomial noise of 400 trials is about 1 %


def test_histogram_quantile_is_prometheus_rule() -> None:
    buckets = [(0.1, 10.0), (0.5, 60.0), (1.0, 100.0), (math.inf, 100.0)]
    # rank 50 lies 40/50 of the way through (0.1, 0.5]
    result = histogram_quantile(buckets, 0.5)
    assert result.estimate == pytest.approx(0.1 + 0.4 * 40 / 50)
    assert (result.lower, result.upper) == (0.1, 0.5)
    assert prometheus_quantile(dict(buckets), 0.5) == result
    over = histogram_quantile([(1.0, 1.0), (math.inf, 10.0)], 0.99)
    assert over.estimate == 1.0  # in the +Inf bucket: the last finite bound


def test_calibration_histogram_interpolates_inside_its_bins() -> None:
    histogram = LatenessHistogram()
    for lateness_us in (5, 5, 15, 15, 15, 15, 25, 25, 25, 25):  # bins [0,10), [10,20), [20,30) us
        histogram.add(lateness_us * 1000)
    # rank 5 of 10 is the 3rd of 4 values in [10, 20) us
    assert histogram.quantile_s(0.5) == pytest.approx((10 + 10 * 3 / 4) * 1e-6)
    assert histogram.quantile_s(1.0) == pytest.approx(30e-6)
    assert LatenessHistogram().quantile_s(0.5) is None
