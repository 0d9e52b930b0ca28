"""Client against server for the same requests: the generator's TTFT must not be below the engine's.

Both sides are whole-run histograms. Client counters start at 0 with each run's generator processes, so
their last value is the run's total; the engine's counters live as long as the replica, so the run's
share is the difference between the end and the start of the run. Medians are compared within histogram
resolution: the true client median lies below the upper bound of its bucket and the true engine median
above the lower bound of its bucket, so ``client bucket upper bound >= engine bucket lower bound`` must
hold whatever the interpolation. Means are reported beside them (a few requests may differ between the
two sets: the generator's preflight requests reach the engine but are not run records).
"""

from __future__ import annotations

from dataclasses import dataclass

from loadgen import metric_names as client
from loadgen.stats import BucketQuantile, histogram_quantile
from observability.dashboards import server_metric_names as server
from observability.verify import Client, Window

Quantile = BucketQuantile  # estimate and the bounds of the bucket that holds it


@dataclass(frozen=True)
class SideBySide:
    model: str
    client_p50: Quantile
    server_p50: Quantile
    client_mean: float
    server_mean: float
    client_count: float
    server_count: float

    @property
    def consistent(self) -> bool:
        return self.client_p50.upper >= self.server_p50.lower


def quantile(buckets: dict[float, float], q: float) -> Quantile:
    """Prometheus' histogram_quantile on cumulative buckets {le: count}, with the bucket's bounds.

    It must stay histogram-based: Prometheus keeps only bucket counts, not the values, so the
    order-statistic percentile of ``loadgen.stats.quantile`` cannot be taken. It is
    ``loadgen.stats.histogram_quantile`` (the same linear interpolation, inside the bucket).
    """
    return histogram_quantile(sorted(buckets.items()), q)


def _buckets(prometheus: Client, expr: str, at: float, label: str) -> dict[str, dict[float, float]]:
    table: dict[str, dict[float, float]] = {}
    for row in prometheus.query(expr, at=at):
        table.setdefault(row["metric"][label], {})[float(row["metric"]["le"])] = float(row["value"][1])
    return table


def _totals(prometheus: Client, expr: str, at: float, label: str) -> dict[str, float]:
    return {row["metric"][label]: float(row["value"][1]) for row in prometheus.query(expr, at=at)}


def _run_share(series: str, by: str, window: Window) -> str:
    """The engine counter's growth during the window (or its value, if it did not exist at the start)."""
    # last_over_time: the engine's series may have gone stale (replica stopped) just before ``end``
    now = f"sum by ({by}) (last_over_time({series}[1m] @ {window.end:.3f}))"
    before = f"sum by ({by}) (last_over_time({series}[1m] @ {window.start:.3f}))"
    return f"({now} - {before}) or {now}"


def ttft_side_by_side(prometheus: Client, run_selector: str, window: Window) -> list[SideBySide]:
    """Per model: client and engine TTFT over the runs ``run_selector`` picks (``{run_id=~"a|b"}``)."""
    at, name = window.end, client.TTFT.name
    last = f"[{window.range}]"
    client_buckets = _buckets(
        prometheus, f"sum by (model, le) (last_over_time({name}_bucket{run_selector}{last}))", at, "model"
    )
    client_sum = _totals(
        prometheus, f"sum by (model) (last_over_time({name}_sum{run_selector}{last}))", at, "model"
    )
    client_count = _totals(
        prometheus, f"sum by (model) (last_over_time({name}_count{run_selector}{last}))", at, "model"
    )
    label = server.MODEL_LABEL
    engine_buckets = _buckets(prometheus, _run_share(server.TTFT.bucket(), f"{label}, le", window), at, label)
    engine_sum = _totals(prometheus, _run_share(f"{server.TTFT.name}_sum", label, window), at, label)
    engine_count = _totals(prometheus, _run_share(f"{server.TTFT.name}_count", label, window), at, label)
    rows = []
    for model, buckets in sorted(client_buckets.items()):
        if model not in engine_buckets or not engine_count.get(model):
            continue
        rows.append(
            SideBySide(
                model=model,
                client_p50=quantile(buckets, 0.5),
                server_p50=quantile(engine_buckets[model], 0.5),
                client_mean=client_sum[model] / client_count[model],
                server_mean=engine_sum[model] / engine_count[model],
                client_count=client_count[model],
                server_count=engine_count[model],
            )
        )
    return rows
