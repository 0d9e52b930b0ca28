"""Client metric names in one place, and what one record adds to them."""

from __future__ import annotations

import json
from pathlib import Path

from loadgen import metric_names as names
from loadgen.exporter import ClientMetrics, write_file_sd
from tests.support.records import record


def test_names_follow_the_design() -> None:
    required = {
        "m3bench_ttft_seconds",
        "m3bench_itl_seconds",
        "m3bench_tpot_seconds",
        "m3bench_e2e_seconds",
        "m3bench_schedule_lag_seconds",
        "m3bench_requests",
        "m3bench_output_tokens",
        "m3bench_prompt_tokens",
        "m3bench_graded",
        "m3bench_target_rate",
        "m3bench_inflight_requests",
    }
    assert required <= {spec.name for spec in names.ALL}
    for spec in names.ALL:
        assert spec.name.startswith("m3bench_")
        assert "task" not in " ".join(spec.labels)
        assert "request_id" not in spec.labels
        assert (spec.kind == "histogram") == bool(spec.buckets)
    assert set(names.COMMON_LABELS) >= {"model", "language", "stage", "run_id"}
    assert "- send" in names.TTFT.help
    assert "(output_tokens - 1)" in names.TPOT.help


def test_one_record_feeds_every_family() -> None:
    metrics = ClientMetrics("run1")
    r = record(first_token_read_delay_ns=50_000)
    metrics.observe(r)
    r.grade = "pass"
    metrics.graded(r)
    labels = {"model": "m", "language": "en", "stage": "s0", "phase": "measure", "run_id": "run1"}
    value = metrics.registry.get_sample_value
    assert value("m3bench_requests_total", {**labels, "status": "ok"}) == 1
    assert value("m3bench_ttft_seconds_count", labels) == 1
    assert value("m3bench_ttft_seconds_sum", labels) == 0.1
    assert value("m3bench_itl_seconds_count", labels) == 2
    assert value("m3bench_output_tokens_total", labels) == 10
    assert value("m3bench_graded_total", {**labels, "verdict": "pass"}) == 1
    assert value("m3bench_schedule_lag_seconds_count", labels) == 1


def test_file_sd_is_prometheus_shaped(tmp_path: Path) -> None:
    path = tmp_path / "sd" / "targets.json"
    write_file_sd(path, ["127.0.0.1:9002", "127.0.0.1:9001"], {"run_id": "r"})
    content = json.loads(path.read_text())
    assert content == [
        {"targets": ["127.0.0.1:9001", "127.0.0.1:9002"], "labels": {"job": names.JOB_NAME, "run_id": "r"}}
    ]


def test_bulk_observe_equals_one_by_one() -> None:
    from prometheus_client import CollectorRegistry, Histogram

    from loadgen.exporter import observe_many

    registry = CollectorRegistry()
    bulk = Histogram("bulk", "b", buckets=(0.01, 0.02, 0.05), registry=registry)
    single = Histogram("single", "s", buckets=(0.01, 0.02, 0.05), registry=registry)
    values = [0.005, 0.01, 0.0100001, 0.03, 0.2, 0.02]
    observe_many(bulk, values)
    for value in values:
        single.observe(value)

    def samples(prefix: str) -> list[tuple[str, dict[str, str], float]]:
        return [
            (s.name.removeprefix(prefix), s.labels, s.value)
            for m in registry.collect()
            for s in m.samples
            if s.name.startswith(prefix) and not s.name.endswith("_created")
        ]

    assert samples("bulk") == samples("single")
