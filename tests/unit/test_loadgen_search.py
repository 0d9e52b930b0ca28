"""The SLO search's bracketing, bisection, confidence and invalid-probe handling.

The load runs are replaced at the ``run_load`` seam by a stand-in that writes synthetic records of a
server whose TTFT is flat below a known knee and grows as a queue above it; the records are then
summarized by the real summary code (validity included). The search against the real calibration server
is tests/integration/test_loadgen_calibration.py.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from loadgen.profile import Profile, ProfileError, RunConfig, load_profile
from loadgen.records import RecordWriter, RequestRecord
from loadgen.search import Search, judge_target, read_search
from loadgen.search_spec import Target
from loadgen.summary import summarize

MS = 1_000_000
KNEE = 20.0


@dataclass
class FakeResult:
    run_dir: Path
    summary: Any


class StandIn:
    """run_load stand-in: records of a server with a knee at KNEE requests/s."""

    def __init__(self, invalid_above: float | None = None, noisy: bool = False) -> None:
        self.invalid_above = invalid_above
        self.noisy = noisy
        self.calls: list[tuple[float, int]] = []

    def __call__(self, config: RunConfig) -> FakeResult:
        stage = config.profile.stages[0]
        rate, n = float(stage.rate or 0), int(stage.measure_requests or 0)
        self.calls.append((rate, n))
        assert config.run_id is not None
        run_dir = config.out_dir / config.run_id
        writer = RecordWriter(run_dir / "records.jsonl")
        rng = random.Random(len(self.calls))
        late = 0.05 if self.invalid_above is not None and rate > self.invalid_above else 0.0
        records = []
        for i in range(n):
            scheduled = int(i / rate * 1e9)
            queue = max(0.0, (1 / KNEE - 1 / rate) * (i + 1))  # D/D/1 wait grows linearly above the knee
            ttft = 0.020 + queue + (rng.expovariate(1 / 0.010) if self.noisy else 0.0)
            sent = scheduled + int(late * 1e9)
            first = sent + int(ttft * 1e9)
            record = RequestRecord(
                run_id="x",
                request_id=f"{config.run_id}-{i}",
                stage=stage.name or "s",
                stage_index=0,
                phase="measure",
                mode="open",
                target=rate,
                worker="local",
                model="calib",
                task_id="t",
                language="en",
                scheduled_ns=scheduled,
                sent_ns=sent,
                first_token_ns=first,
                end_ns=first + 10 * MS,
                chunk_offsets_ns=[first - sent, first - sent + 10 * MS],
                timing="kernel",
                first_token_read_delay_ns=100_000,
                anchor_wall_ns=10**18,
                anchor_perf_ns=0,
                output_tokens=2,
                status="ok",
            )
            writer.write(record)
            records.append(record)
        writer.close()
        return FakeResult(run_dir, summarize(records))


def _config(tmp_path: Path, **search: Any) -> RunConfig:
    spec = {"targets": [{"metric": "ttft", "quantile": 0.99, "max_s": 0.1}], "start_rate": 12.0, **search}
    profile = Profile.model_validate({"mode": "search", "search": spec})
    return RunConfig(
        endpoint="http://127.0.0.1:1",
        tasks=tmp_path,
        models=["calib"],
        profile=profile,
        out_dir=tmp_path,
        run_id="s",
    )


def test_search_finds_the_knee_within_its_interval(tmp_path: Path) -> None:
    stand_in = StandIn()
    report = Search(_config(tmp_path, resolution=0.05), stand_in, say=lambda _line: None).run()
    result = report.result
    assert result is not None
    assert result.status == "found"
    low, high = result.interval
    assert low is not None
    assert high is not None
    assert low <= KNEE <= high
    assert high / low <= 1.05
    assert result.r_star == low
    # bracketing went up by 2x from 12 (12 pass, 24 fail), then bisection
    assert [p.phase for p in report.probes[:2]] == ["bracket", "bracket"]
    assert [p.rate for p in report.probes[:2]] == [12.0, 24.0]
    assert {n for _, n in stand_in.calls} == {368}  # the p99's 95 % interval needs 368 requests
    on_disk = read_search(tmp_path / "s" / "search.json")
    assert on_disk == report
    assert all(
        (tmp_path / "s" / run_dir / "records.jsonl").is_file()
        for p in report.probes
        for run_dir in p.run_dirs
    )


def test_search_brackets_down_when_the_first_probe_fails(tmp_path: Path) -> None:
    report = Search(_config(tmp_path, start_rate=100.0), StandIn(), say=lambda _line: None).run()
    assert [p.rate for p in report.probes[:3]] == [100.0, 50.0, 25.0]
    assert report.result is not None
    low, high = report.result.interval
    assert low is not None
    assert high is not None
    assert low <= KNEE <= high


def test_invalid_probes_are_retried_and_never_evidence(tmp_path: Path) -> None:
    # the generator cannot hold rates above 15/s (every send 50 ms late: schedule lag invalid)
    stand_in = StandIn(invalid_above=15.0)
    report = Search(_config(tmp_path, retries=1), stand_in, say=lambda _line: None).run()
    assert report.result is not None
    assert report.result.status == "generator_limited"
    assert report.result.r_star == 12.0
    last = report.probes[-1]
    assert last.verdict == "invalid"
    assert len(last.run_dirs) == 2  # the first attempt and one retry
    assert any("schedule lag" in reason for reason in last.invalid_reasons)
    assert report.result.interval[1] is None  # no failing rate was verified


def test_an_unresolved_probe_is_extended_and_then_counts_as_failing(tmp_path: Path) -> None:
    # a p99 target inside the noisy tail's interval, with a precision the probe cannot reach: the probe is
    # extended (pooled: 368, then 736, then 800 = max_requests) and, still unresolved, counts as failing
    stand_in = StandIn(noisy=True)
    config = _config(
        tmp_path, max_requests=800, start_rate=5.0, min_rate=4.0, max_rate=6.0, resolution=0.5, precision=0.01
    )
    assert config.profile.search is not None
    config.profile.search.targets[0].max_s = 0.020 + 0.010 * 4.6  # the exponential noise's p99 (ln 100)
    report = Search(config, stand_in, say=lambda _line: None).run()
    first = report.probes[0]
    assert [n for _, n in stand_in.calls[:3]] == [368, 368, 64]
    assert (first.requests, len(first.run_dirs), first.verdict) == (800, 3, "inconclusive")
    (estimate,) = first.targets
    assert estimate.low_s is not None
    assert estimate.high_s is not None
    assert estimate.low_s <= estimate.max_s <= estimate.high_s
    assert report.result is not None
    assert report.probes[1].rate == 4.0  # 5/s counted as failing: the bracket went down (R* errs low)


def test_judge_target_counts_failures_as_missing_the_target() -> None:
    ok = [
        RequestRecord(
            run_id="x",
            request_id=str(i),
            stage="s",
            stage_index=0,
            phase="measure",
            mode="open",
            target=1.0,
            worker="local",
            model="m",
            task_id="t",
            language="en",
            scheduled_ns=0,
            sent_ns=0,
            first_token_ns=10 * MS,
            end_ns=20 * MS,
            timing="kernel",
            anchor_wall_ns=0,
            anchor_perf_ns=0,
            status="ok" if i >= 10 else "timeout",
        )
        for i in range(400)
    ]
    estimate = judge_target(ok, Target(metric="ttft", quantile=0.99, max_s=0.1), 0.95, 0.1)
    assert estimate.verdict == "fail"  # 2.5 % failed: the p99 is a failed request
    assert estimate.estimate_s is None  # +inf is not written as a number


def test_search_profile_validation() -> None:
    with pytest.raises(ProfileError, match="mode: search"):
        load_profile(
            "{mode: search, stages: [{rate: 1, measure_s: 1}],"
            " search: {targets: [{max_s: 1}], start_rate: 1}}"
        )
    with pytest.raises(ProfileError, match="start_rate"):
        load_profile("{mode: search, search: {targets: [{max_s: 1}], start_rate: 5, max_rate: 2}}")
    profile = load_profile("{mode: search, search: {targets: [{max_s: 1}], start_rate: 1}}")
    assert profile.resolved_stages() == []
    assert json.loads(profile.model_dump_json())["search"]["resolution"] == 0.05
