"""The instrument against programmed timing: closed loop at 1 and 64 streams, open-loop rate, 2 workers.

Tolerances (stated in docs/loadgen.md), for stages the instrument itself reports valid:
* medians of TTFT, ITL and E2E within 2 ms of the programmed values (100 ms, 10 ms, 290 ms);
* p90 within 10 ms (this machine is shared: the generator can be descheduled past a token gap);
* instrument error, measured first-token arrival minus the server's own send time of that token
  (both CLOCK_MONOTONIC), p99 within 2 ms;
* open loop: achieved send rate within 5 % of the target; master + 2 workers: every request the server
  received appears in the merged records exactly once.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from loadgen.calibration.launch import calibration_server
from loadgen.calibration.tasks import write_calibration_tasks
from loadgen.profile import Generator, Profile
from loadgen.records import read_records
from loadgen.run import run_load
from loadgen.search import read_search, run_search
from loadgen.validity import first_read
from tests.support.load import calibration_config
from tests.support.skips import skip_disturbed

pytestmark = pytest.mark.slow
TTFT, ITL, TOKENS = 0.100, 0.010, 20
E2E = TTFT + (TOKENS - 1) * ITL


@pytest.fixture(scope="module")
def tasks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_calibration_tasks(
        tmp_path_factory.mktemp("tasks"), per_language=2, languages=("en", "zh", "ar"), max_tokens=TOKENS
    )


def test_closed_loop_matches_the_program_at_1_and_64_streams(tasks: Path, tmp_path: Path) -> None:
    timing_log = tmp_path / "server-timing.txt"
    profile = {
        "mode": "closed",
        "stages": [
            {"concurrency": 1, "warmup_s": 0.5, "measure_requests": 8, "cooldown_s": 0.2},
            {"concurrency": 64, "warmup_s": 1.0, "measure_s": 3.0, "cooldown_s": 0.5},
        ],
        "slo": {"ttft_s": 0.15},
        # SCHED_FIFO: other engineers' jobs share these 2 cores (run queues of 10-20 seen) and delay a
        # normal process by up to 100 ms, far past a 10 ms token gap; what is tested is the instrument.
        "generator": {"priority": "realtime"},
    }
    # The instrument marks a stage invalid when it was disturbed (loop lag, late reads, first tokens
    # that shared a read). A disturbed attempt is retried; a *valid* one must meet every tolerance.
    for _attempt in range(3):
        timing_log.unlink(missing_ok=True)
        with calibration_server(
            "--ttft-ms", "100", "--itl-ms", "10", "--realtime", "--timing-log", str(timing_log)
        ) as server:
            result = run_load(calibration_config(server.url, tasks, tmp_path / f"attempt{_attempt}", profile))
            server_stats = server.stats()
        if all(stage.generator.valid for stage in result.summary.stages):
            break
    else:  # the instrument refused to certify any attempt: the machine, not the instrument, is the issue
        reasons = [s.generator.invalid_reasons for s in result.summary.stages]
        skip_disturbed(f"every attempt marked invalid by the generator: {reasons}")
    assert not result.warnings
    c1, c64 = result.summary.stages
    assert c1.counts.ok == 8
    assert c64.counts.ok > 300
    for stage in (c1, c64):
        latency = stage.latency_s
        assert stage.counts.measured == stage.counts.ok
        assert latency.ttft.p50 == pytest.approx(TTFT, abs=0.002)
        assert latency.itl.p50 == pytest.approx(ITL, abs=0.002)
        assert latency.e2e.p50 == pytest.approx(E2E, abs=0.002)
        assert latency.tpot.p50 == pytest.approx(ITL, abs=0.001)
        assert latency.ttft.p90 is not None
        assert latency.ttft.p90 < TTFT + 0.010
        assert latency.e2e.p90 is not None
        assert latency.e2e.p90 < E2E + 0.010
        assert stage.timing.kernel_timestamps_fraction == 1.0
        assert stage.throughput.missing_usage == 0
        for languages in stage.accuracy.values():  # live grading: exact match of the programmed reply
            assert all(cell.accuracy == 1.0 for cell in languages.values())
    # steady state (arrival-time tokens inside the window): 64 streams each delivering TOKENS per E2E
    assert c64.throughput.output_tokens_per_s == pytest.approx(64 * TOKENS / E2E, rel=0.05)

    # Instrument error: our first-token arrival against the server's own send of that token.
    sent_by_server = {}
    for line in timing_log.read_text().splitlines():
        request_id, _received, first_sent, _end = line.split()
        sent_by_server[request_id] = int(first_sent)
    every = read_records(result.records_path)
    # kept-alive connections: a stream opens one at most once (1 + 64 streams), and says how long it took
    opened = [r.connect_ns for r in every if r.connect_ns is not None]
    assert 1 <= len(opened) <= 1 + 64 < len(every)
    assert all(ns > 0 for ns in opened)
    records = [r for r in every if r.phase == "measure"]  # what validity covers
    # first tokens read late together with the second are upper bounds (at most 1 % in a valid stage); a
    # prompt read that found both (the server sent them together) is exact
    exact = [r for r in records if first_read(r, Generator().max_read_delay_s) != "client_late"]
    assert len(exact) >= 0.99 * len(records)
    errors = [
        (r.first_token_ns - sent_by_server[r.request_id]) / 1e9 for r in exact if r.first_token_ns is not None
    ]
    assert len(errors) == len(exact)
    assert float(np.percentile(errors, 50)) < 0.001
    assert float(np.percentile(errors, 99)) < 0.002
    assert min(errors) > -0.0005  # never before the server sent it
    assert server_stats["first_token_lateness"]["p50_s"] < 0.001


def test_open_loop_rate_and_schedule(tasks: Path, tmp_path: Path) -> None:
    profile = {
        "mode": "open",
        "arrival": {"kind": "constant"},
        "stages": [{"rate": 50, "warmup_s": 1.0, "measure_s": 4.0, "cooldown_s": 0.5}],
        "request": {"max_tokens": 5},
        "grading": {"enabled": False},
        "seed": 3,
        "generator": {"priority": "realtime"},  # schedule precision, not this shared machine, is tested
    }
    with calibration_server("--ttft-ms", "20", "--itl-ms", "5", "--realtime") as server:
        result = run_load(calibration_config(server.url, tasks, tmp_path, profile))
    stage = result.summary.stages[0]
    assert abs(stage.counts.measured - 200) <= 1
    assert stage.throughput.achieved_send_rate_per_s == pytest.approx(50, rel=0.05)
    assert stage.throughput.requests_per_s == pytest.approx(50, rel=0.05)
    assert stage.latency_s.schedule_lag.p50 is not None
    assert stage.latency_s.schedule_lag.p50 < 0.002
    assert stage.counts.by_phase.get("cooldown", 0) <= 0.5 * 50 + 1  # nothing after the planned cooldown
    records = read_records(result.records_path)
    assert all(r.scheduled_ns is not None and r.grade == "ungraded" for r in records)
    offsets = sorted((r.scheduled_ns - min(x.scheduled_ns for x in records)) / 1e9 for r in records)  # type: ignore[operator,type-var]
    assert np.diff(offsets) == pytest.approx(0.02, abs=1e-6)  # absolute schedule, no drift


def test_master_and_two_workers_record_every_request_exactly_once(tasks: Path, tmp_path: Path) -> None:
    request_log = tmp_path / "server-requests.txt"
    profile = {
        "mode": "open",
        "arrival": {"kind": "poisson"},
        "stages": [{"rate": 40, "warmup_s": 0.5, "measure_s": 3.0, "cooldown_s": 0.5}],
        "request": {"max_tokens": 5},
        "generator": {"workers": 2},
    }
    scraped: dict[str, str] = {}

    def scrape(status: dict[str, Any]) -> None:
        targets_file = tmp_path / str(status.get("run_id", "")) / "prometheus" / "loadgen_targets.json"
        files = (
            list(tmp_path.glob("*/prometheus/loadgen_targets.json"))
            if not targets_file.is_file()
            else [targets_file]
        )
        if not files or status.get("records", 0) < 20 or len(scraped) == 3:
            return
        for target in json.loads(files[0].read_text())[0]["targets"]:
            try:
                with urllib.request.urlopen(f"http://{target}/metrics", timeout=2) as reply:
                    scraped[target] = reply.read().decode()
            except OSError:
                pass

    with calibration_server(
        "--ttft-ms", "20", "--itl-ms", "5", "--realtime", "--request-log", str(request_log)
    ) as server:
        result = run_load(calibration_config(server.url, tasks, tmp_path, profile), progress=scrape)
    records = read_records(result.records_path)
    ids = [r.request_id for r in records]
    received = [line for line in request_log.read_text().splitlines() if not line.startswith("calib-")]
    assert len(ids) == len(set(ids))
    assert sorted(ids) == sorted(received)
    by_worker = {w: sum(r.worker == w for r in records) for w in ("w0", "w1")}
    assert min(by_worker.values()) > 0.35 * len(records)  # the rate is split across workers
    raw = [
        json.loads(line)["request_id"]
        for path in (result.run_dir / "records").glob("w?.jsonl")
        for line in path.read_text().splitlines()
    ]
    assert sorted(raw) == sorted(ids)
    targets = json.loads((result.run_dir / "prometheus" / "loadgen_targets.json").read_text())[0]["targets"]
    assert len(targets) == 3
    worker_metrics = [text for text in scraped.values() if "m3bench_requests_total{" in text]
    assert len(worker_metrics) >= 2


def test_count_bounded_stages_stop_at_the_count_in_every_worker(tasks: Path, tmp_path: Path) -> None:
    """Stated bound: zero requests past the count. A stream checks its worker's share of measure_requests
    and counts its send without yielding in between, so once the share is reached no stream of that worker
    starts another request (requests already sent are inside the count); with cooldown_s 0 the stage's
    plan ends there, and nothing is sent until the master starts the next stage."""
    request_log = tmp_path / "server-requests.txt"
    profile = {
        "mode": "closed",
        "stages": [
            {"concurrency": 16, "measure_requests": 100},
            {"concurrency": 4, "measure_requests": 20},
        ],
        "request": {"max_tokens": 5},
        "grading": {"enabled": False},
        "generator": {"workers": 2},
    }
    with calibration_server(
        "--ttft-ms", "20", "--itl-ms", "5", "--realtime", "--request-log", str(request_log)
    ) as server:
        result = run_load(calibration_config(server.url, tasks, tmp_path, profile))
    received = [line for line in request_log.read_text().splitlines() if not line.startswith("calib-")]
    records = read_records(result.records_path)
    assert len(received) == 120  # 100 + 20 planned, + 0
    assert sorted(r.request_id for r in records) == sorted(received)
    by_stage = {i: [r for r in records if r.stage_index == i] for i in (0, 1)}
    assert [len(by_stage[0]), len(by_stage[1])] == [100, 20]
    assert all(r.phase == "measure" for r in records)
    assert {r.worker for r in by_stage[0]} == {"w0", "w1"}  # both workers sent, each its own share


def test_slo_search_finds_the_programmed_knee(tasks: Path, tmp_path: Path) -> None:
    """The calibration server's FIFO engine makes 400 tokens/s; a reply is 20 tokens, so above 20 requests/s
    (constant arrivals) the first token waits in a growing queue and below it never waits. The search for
    p99 TTFT (from the scheduled send) <= 100 ms must bracket 20/s within its stated interval."""
    knee = 400 / 20
    profile = Profile.model_validate(
        {
            "mode": "search",
            "arrival": {"kind": "constant"},
            "request": {"max_tokens": 20},
            "grading": {"enabled": False},
            "generator": {"priority": "realtime"},
            "search": {
                "targets": [{"metric": "ttft", "quantile": 0.99, "max_s": 0.1}],
                "start_rate": 12,
                "resolution": 0.1,
                "warmup_s": 1.0,
                "max_requests": 800,
            },
        }
    )
    with calibration_server(
        "--ttft-ms", "20", "--itl-ms", "2", "--output-len", "20", "--capacity-tps", "400", "--realtime"
    ) as server:
        report = run_search(
            calibration_config(server.url, tasks, tmp_path, profile, run_id="search"), say=print
        )
    result = report.result
    assert result is not None
    if result.status == "generator_limited":
        skip_disturbed(f"the generator could not hold a probe: {report.probes[-1].invalid_reasons}")
    assert result.status == "found"
    low, high = result.interval
    assert low is not None
    assert high is not None
    assert low <= knee <= high  # the knee within the stated interval
    assert high / low <= 1.1  # at the stated resolution
    saved = read_search(tmp_path / "search" / "search.json")
    assert saved.result == result
    assert [p.rate for p in saved.probes[:2]] == [12, 24]
    for probe in saved.probes:  # every probe's records kept, and enough of them for the p99's interval
        assert probe.requests >= 368
        for run_dir in probe.run_dirs:
            assert (tmp_path / "search" / run_dir / "records.jsonl").is_file()
        if abs(probe.rate - knee) > 0.5:  # away from the knee the verdict is the programmed one
            assert probe.verdict == ("pass" if probe.rate < knee else "fail")


def _wall_s(record: Any, perf_ns: int) -> float:
    """A record's perf-counter instant on the wall clock (workers are separate processes)."""
    return (record.anchor_wall_ns + perf_ns - record.anchor_perf_ns) / 1e9


@pytest.mark.parametrize("drain", [True, False])
def test_drain_measured_holds_the_level_until_its_measured_requests_end(
    tasks: Path, tmp_path: Path, drain: bool
) -> None:
    """Requests of 0.9-3.9 s (100 ms TTFT + 4-19 gaps of 200 ms) and a 1 s window that starts at once:
    when it closes every stream is mid-request. With drain_measured the streams keep sending (cooldown)
    until every measured request has ended, and the 12-stream stage starts after that; without it the
    next stage starts at once and measured requests of the first end under its load (the control: the
    assertion that fails without the mechanism)."""
    profile = {
        "mode": "closed",
        "stages": [
            {"concurrency": 4, "measure_s": 1.0, "drain_measured": drain},
            {"concurrency": 12, "measure_s": 1.0},
        ],
        "request": {"max_tokens": TOKENS, "max_tokens_min": 5},
        "grading": {"enabled": False},
        "generator": {"workers": 2},
    }
    with calibration_server("--ttft-ms", "100", "--itl-ms", "200", "--realtime") as server:
        result = run_load(calibration_config(server.url, tasks, tmp_path, profile))
    records = list(read_records(result.records_path))
    first = [r for r in records if r.stage_index == 0]
    measured = [r for r in first if r.phase == "measure"]
    next_start = min(_wall_s(r, r.sent_ns) for r in records if r.stage_index == 1)
    late = [r for r in measured if _wall_s(r, r.end_ns) > next_start]
    assert len(measured) >= 4
    assert all(r.status == "ok" for r in first)
    if drain:
        assert late == []
        # the level's load was held: streams whose request ended sent again while others were measured
        assert [r for r in first if r.phase == "cooldown"]
        # ... for no longer than the last measured request needed (+ the 50 ms watch, the master's tick)
        last_end = max(_wall_s(r, r.end_ns) for r in measured)
        assert next_start - last_end < 1.5
    else:
        assert late  # stage 1 started while stage 0's measured requests were streaming
