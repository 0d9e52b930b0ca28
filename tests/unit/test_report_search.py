"""The report's SLO-search section and its planner check on R*, from synthetic search.json files (the
search itself is tests/unit/test_loadgen_search.py and, against a real server, test_loadgen_calibration)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadgen.search import Probe, SearchReport, SearchResult, TargetEstimate
from loadgen.search_spec import SearchSpec
from m3bench.report import ReportError, ReportOptions, build_report
from m3bench.report.inputs import SearchEntry
from m3bench.report.search import load_search, search_checks
from tests.unit.test_report_build import _entry, _sweep

SPEC = SearchSpec.model_validate(
    {"targets": [{"metric": "ttft", "quantile": 0.9, "max_s": 2.0}], "start_rate": 1.0, "resolution": 0.15}
)


def _probe(index: int, rate: float, verdict: str, estimate_s: float) -> Probe:
    estimate = TargetEstimate(
        metric="ttft",
        quantile=0.9,
        max_s=2.0,
        n=35,
        estimate_s=estimate_s,
        low_s=estimate_s * 0.9,
        high_s=estimate_s * 1.1,
        verdict=verdict,  # type: ignore[arg-type]
    )
    return Probe(
        index=index,
        rate=rate,
        phase="bracket" if index < 2 else "bisect",
        requests=35,
        run_dirs=[f"probes/probe-{index:02d}"],
        targets=[estimate],
        verdict=verdict,  # type: ignore[arg-type]
        achieved_rate=rate * 0.99,
    )


def _write_search(directory: Path, r_star: float | None, high: float | None, status: str = "found") -> None:
    directory.mkdir(parents=True)
    probes = [_probe(0, 1.0, "pass", 0.8), _probe(1, 2.0, "fail", 3.5)]
    report = SearchReport(
        run_id=directory.name,
        endpoint="http://127.0.0.1:1",
        models=["m-a"],
        spec=SPEC,
        probes=probes,
        result=SearchResult.model_validate(
            {"status": status, "r_star": r_star, "interval": (r_star, high), "resolution": 0.15, "note": "n"}
        ),
    )
    (directory / "search.json").write_text(report.model_dump_json())


def test_search_section_states_r_star_its_interval_and_every_probe(tmp_path: Path) -> None:
    _write_search(tmp_path / "search/a1", 1.3, 1.45)
    shown = load_search(tmp_path, SearchEntry(model="m-a", replicas=1, run_dir="search/a1"))
    assert (shown["status"], shown["r_star"], shown["interval"]) == ("found", 1.3, [1.3, 1.45])
    assert shown["targets"] == ["ttft p90 <= 2000 ms"]
    assert [(p["rate"], p["verdict"]) for p in shown["probes"]] == [(1.0, "pass"), (2.0, "fail")]
    assert shown["probes"][1]["estimates"][0]["estimate_s"] == 3.5


def test_missing_or_malformed_search_is_one_line(tmp_path: Path) -> None:
    entry = SearchEntry(model="m-a", replicas=1, run_dir="search/none")
    with pytest.raises(ReportError, match=r"search\.json is missing"):
        load_search(tmp_path, entry)
    (tmp_path / "search/none").mkdir(parents=True)
    (tmp_path / "search/none/search.json").write_text('{"probes": 3}')
    with pytest.raises(ReportError, match="malformed") as raised:
        load_search(tmp_path, entry)
    assert "\n" not in str(raised.value)
    with pytest.raises(ReportError, match="outside"):
        load_search(tmp_path, SearchEntry(model="m-a", replicas=1, run_dir="../elsewhere"))


def test_planner_check_on_r_star_is_conclusive_only_when_both_searches_found_the_knee(tmp_path: Path) -> None:
    _write_search(tmp_path / "s1", 1.0, 1.1)
    _write_search(tmp_path / "s2", 1.8, 2.0)
    _write_search(tmp_path / "s3", 1.6, None, status="above_max_rate")
    one = load_search(tmp_path, SearchEntry(model="m-a", replicas=1, run_dir="s1"))
    two = load_search(tmp_path, SearchEntry(model="m-a", replicas=2, run_dir="s2"))
    (row,) = search_checks([one, two], tolerance=0.15)
    assert row["predicted"]["value"] == pytest.approx(2.0)
    assert row["error"]["value"] == pytest.approx(2.0 / 1.8 - 1)
    assert row["within_tolerance"]
    assert row["conclusive"]
    (far,) = search_checks([one, two], tolerance=0.10)  # +11 % is outside 10 %
    assert far["within_tolerance"] is False
    capped = load_search(tmp_path, SearchEntry(model="m-a", replicas=2, run_dir="s3"))
    (weak,) = search_checks([one, capped], tolerance=0.15)
    assert not weak["conclusive"]
    assert "above_max_rate" in weak["caveats"][0]
    assert search_checks([two], tolerance=0.15) == []  # nothing to predict from


def test_report_renders_searches_and_their_check(tmp_path: Path) -> None:
    _sweep(tmp_path / "runs/a1", "m-a", [(1, 0.1, 1.0), (2, 0.2, 0.5)])
    _write_search(tmp_path / "search/a1", 1.0, 1.1)
    _write_search(tmp_path / "search/a2", 1.9, 2.1)
    index = {
        "run": {
            "run_id": "r",
            "started": "2025-01-01T00:00:00Z",
            "machine": "box",
            "serving_mode": "haproxy+direct-streaming",
        },
        "sweeps": [_entry("m-a", 1, "runs/a1")],
        "searches": [
            {"model": "m-a", "replicas": 1, "run_dir": "search/a1"},
            {"model": "m-a", "replicas": 2, "run_dir": "search/a2"},
        ],
    }
    (tmp_path / "index.json").write_text(json.dumps(index))
    paths = build_report(tmp_path, ReportOptions(slo_ttft_p99_s=0.3))
    document = json.loads(paths["json"].read_text())
    assert [s["r_star"] for s in document["searches"]] == [1.0, 1.9]
    assert [row["quantity"] for row in document["planner_check"]] == ["R* (SLO search)"]
    markdown = paths["markdown"].read_text()
    assert "serving: haproxy+direct-streaming" in markdown
    assert "## SLO search" in markdown
    assert "[1.90 req/s, 2.10 req/s)" in markdown
    html = paths["html"].read_text()
    assert "SLO search" in html
    assert "haproxy+direct-streaming" in html
