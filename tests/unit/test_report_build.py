"""The whole report from synthetic run directories: numbers traced to records, renderers, CLI errors."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from loadgen.records import RecordWriter
from m3bench.report import ReportOptions, analysis, build_report, plots
from tests.support.records import bare_record

MS = 1_000_000
S = 1_000_000_000
TOKENS = 10
ITL_NS = 10 * MS
N = 20  # measured requests per level


def _write_level(
    writer: RecordWriter,
    model: str,
    stage_index: int,
    concurrency: int,
    ttft_s: float,
    gap_s: float,
    fail_languages: tuple[str, ...] = (),
    start_ns: int = 0,
) -> float:
    """N ok requests, one every ``gap_s``, all with the same timing; returns the expected request rate."""
    e2e_ns = int(ttft_s * S) + (TOKENS - 1) * ITL_NS
    for j in range(N):
        sent = start_ns + int(j * gap_s * S)
        language = ("en", "zh")[j % 2]
        writer.write(
            bare_record(
                request_id=f"{model}-{stage_index}-{j}",
                stage=f"s{stage_index}-c{concurrency}",
                stage_index=stage_index,
                mode="closed",
                target=concurrency,
                model=model,
                task_id=f"t{j}",
                language=language,
                sent_ns=sent,
                first_token_ns=sent + int(ttft_s * S),
                end_ns=sent + e2e_ns,
                chunk_offsets_ns=[int(ttft_s * S) + k * ITL_NS for k in range(TOKENS)],
                anchor_wall_ns=1_700_000_000 * S,
                output_tokens=TOKENS,
                grade="fail" if language in fail_languages else "pass",
            )
        )
    # loadgen.summary request_equivalent_per_s: tokens that arrived inside the measure window (first to
    # last measure send: no generator.jsonl here) / window / tokens per request
    sends = [start_ns + int(j * gap_s * S) for j in range(N)]
    arrivals = [sent + int(ttft_s * S) + k * ITL_NS for sent in sends for k in range(TOKENS)]
    inside = sum(sends[0] <= at <= sends[-1] for at in arrivals)
    return inside / ((sends[-1] - sends[0]) / S) / TOKENS


def _sweep(
    directory: Path, model: str, levels: list[tuple[int, float, float]], fail: tuple[str, ...] = ()
) -> list[float]:
    directory.mkdir(parents=True)
    (directory / "run.json").write_text(
        json.dumps({"endpoint": "http://127.0.0.1:1", "profile": {"name": "synthetic", "mode": "closed"}})
    )
    (directory / "provenance.json").write_text(
        json.dumps({"versions": {"m3bench": "0.1.0"}, "git_sha": "abc"})
    )
    writer = RecordWriter(directory / "records.jsonl")
    rates = [
        _write_level(writer, model, i, c, ttft, gap, fail, start_ns=i * 100 * S)
        for i, (c, ttft, gap) in enumerate(levels)
    ]
    writer.close()
    return rates


def _entry(model: str, replicas: int, run_dir: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "quantization": "awq",
        "family": "llava",
        "replicas": replicas,
        "accelerator": "cpu-2core",
        "run_dir": run_dir,
        **extra,
    }


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[float]]]:
    root = tmp_path_factory.mktemp("results")
    rates = {
        "a1": _sweep(root / "runs/a1", "m-a", [(1, 0.1, 1.0), (2, 0.2, 0.5), (4, 0.5, 0.3)]),
        "a2": _sweep(root / "runs/a2", "m-a", [(2, 0.1, 0.5), (4, 0.2, 0.25), (8, 0.5, 0.15)]),
        "b1": _sweep(root / "runs/b1", "m-b", [(1, 0.05, 1.0), (2, 0.06, 0.5)], fail=("zh",)),
    }
    index = {
        "run": {
            "run_id": "demo-1",
            "started": "2025-01-01T00:00:00Z",
            "machine": "cpu-2core test box",
            "versions": {"vllm": "0.29.0"},
            "stream_batching_interval_s": 0.05,
        },
        "sweeps": [
            _entry("m-a", 1, "runs/a1", price_per_accelerator_hour=2.0),
            _entry("m-a", 2, "runs/a2", price_per_accelerator_hour=2.0),
            _entry("m-b", 1, "runs/b1", quantization="gptq"),
        ],
    }
    (root / "index.json").write_text(json.dumps(index))
    (root / "panels").mkdir()
    (root / "panels" / "load-test.png").write_bytes(plots.accuracy_by_language([]))
    options = ReportOptions(slo_ttft_p99_s=0.3, target_rate=10, headroom=0.2, price_per_hour=1.0)
    build_report(root, options)
    return root, rates


def test_numbers_trace_to_records(results: tuple[Path, dict[str, list[float]]]) -> None:
    root, rates = results
    doc = json.loads((root / "report/report.json").read_text())
    model_a, model_b = doc["models"]
    a1 = model_a["sweeps"][0]
    assert [row["throughput_rps"] for row in a1["levels"]] == pytest.approx(rates["a1"])
    assert [row["ttft_p99_s"] for row in a1["levels"]] == pytest.approx([0.1, 0.2, 0.5])
    # SLO p99 TTFT 0.3 s: f = (0.3 - 0.2) / (0.5 - 0.2); rate = X1 + f (X2 - X1)
    x0, x1, x2 = rates["a1"]
    expected = max(x0, x1) + (1 / 3) * (x2 - max(x0, x1))
    assert a1["sustainable"]["rate"]["value"] == pytest.approx(expected)
    assert a1["sustainable"]["bound"] == "interpolated"
    assert "rate = X*" in a1["sustainable"]["rate"]["formula"]
    # replicas for 10 req/s with 20% headroom
    assert model_a["planning"]["replicas_for_target"]["value"] == -(-12 // expected)
    # cost: $2/h per accelerator from the index, 10 tokens a request
    assert a1["cost_per_million_at_slo"]["value"] == pytest.approx(2.0 / (expected * 10 * 3600) * 1e6)
    # model b has no price in the index: the CLI default ($1/h) applies
    assert model_b["sweeps"][0]["price_per_accelerator_hour"] == 1.0
    assert model_b["sweeps"][0]["sustainable"]["bound"] == "lower_bound"
    # accuracy by language: b fails every zh task
    assert model_b["accuracy_by_language"]["zh"]["accuracy"] == 0.0
    assert model_b["accuracy_by_language"]["en"]["accuracy"] == 1.0
    assert model_a["accuracy"] == 1.0
    # planner check: 2 x the 1-replica rate against the 2-replica sweep's own rate
    check = next(row for row in doc["planner_check"] if row["quantity"] == "rate at SLO")
    y0, y1, y2 = rates["a2"]
    measured = max(y0, y1) + (1 / 3) * (y2 - max(y0, y1))
    assert check["predicted"]["value"] == pytest.approx(2 * expected)
    assert check["measured"]["value"] == pytest.approx(measured)
    assert check["error"]["value"] == pytest.approx((2 * expected - measured) / measured)
    assert check["conclusive"] is True  # both rates interpolated, neither a bound
    capacity = next(row for row in doc["planner_check"] if row["quantity"] == "capacity")
    assert capacity["conclusive"] is False  # the 1-replica sweep never saturated: a lower bound
    assert "lower bound" in capacity["caveats"][0]
    # Pareto: b is faster but less accurate than a: both on the front
    assert {row["model"]: row["on_front"] for row in doc["comparison"]["rows"]} == {"m-a": True, "m-b": True}
    assert doc["observability"]["panels"] == ["panel-load-test"]
    assert doc["run"]["stream_batching_interval_s"] == 0.05


def test_html_is_self_contained(results: tuple[Path, dict[str, list[float]]]) -> None:
    root, _ = results
    html = (root / "report/report.html").read_text()
    sources = re.findall(r'<img[^>]*\bsrc="([^"]*)"', html)
    assert len(sources) == 2 * 2 + 3 + 1  # 2 per model, accuracy, Pareto, planner check, 1 panel
    assert all(src.startswith("data:image/png;base64,") for src in sources)
    assert "<script" not in html
    assert not re.search(r'(src|href)="(https?:)?//', html)
    for heading in ("Accuracy by language", "Planner check", "Formulas", "Configuration and versions"):
        assert heading in html


def test_markdown_links_images_written_beside_it(results: tuple[Path, dict[str, list[float]]]) -> None:
    root, _ = results
    markdown = (root / "report/report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert links
    assert all((root / "report" / link).is_file() for link in links)
    assert "| m-a | awq |" in markdown


def _cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    from m3bench.cli import main  # imports every stage's CLI (slow): only where needed

    monkeypatch.setattr(sys, "argv", ["m3bench", "report", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.err or captured.out


def test_cli_errors_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _cli(monkeypatch, capsys, str(tmp_path))
    assert code == 2
    assert err.count("\n") == 1
    assert "index.json is missing" in err
    (tmp_path / "index.json").write_text("{not json")
    code, err = _cli(monkeypatch, capsys, str(tmp_path))
    assert (code, err.count("\n")) == (2, 1)
    assert "not valid JSON" in err
    (tmp_path / "index.json").write_text(json.dumps({"run": {"run_id": "x"}, "sweeps": []}))
    code, err = _cli(monkeypatch, capsys, str(tmp_path))
    assert (code, err.count("\n")) == (2, 1)
    assert "invalid" in err
    index = {
        "run": {"run_id": "x", "started": "2025-01-01T00:00:00", "machine": "m"},
        "sweeps": [_entry("m", 1, "nowhere")],
    }
    (tmp_path / "index.json").write_text(json.dumps(index))
    code, err = _cli(monkeypatch, capsys, str(tmp_path))
    assert (code, err.count("\n")) == (2, 1)
    assert "records.jsonl is missing" in err
    index["sweeps"][0]["run_dir"] = "../elsewhere"
    (tmp_path / "index.json").write_text(json.dumps(index))
    code, err = _cli(monkeypatch, capsys, str(tmp_path))
    assert (code, err.count("\n")) == (2, 1)
    assert "outside" in err
    code, err = _cli(monkeypatch, capsys, str(tmp_path), "--slo-itl-p99", "0.1", "--slo-tpot-p99", "0.1")
    assert (code, err.count("\n")) == (2, 1)
    assert "at most one" in err


def test_cli_renders(
    results: tuple[Path, dict[str, list[float]]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    root, _ = results
    out = str(tmp_path / "r")
    code, printed = _cli(
        monkeypatch, capsys, str(root), "--out", out, "--slo-ttft-p99", "0.3", "--min-accuracy", "0.4"
    )
    assert code == 0
    assert "html:" in printed
    doc = json.loads((tmp_path / "r/report.json").read_text())
    assert doc["options"]["min_accuracy"] == 0.4


def test_which_rates_at_slo_weaken_a_planner_check() -> None:
    def caveat(bound: str, recovered: tuple[str, ...] = ()) -> str | None:
        sustainable = {"bound": bound, "note": "n", "first_fail": "s1-c3", "recovered": list(recovered)}
        return analysis._caveat("2-replica", "rate at SLO", "sustainable", {"sustainable": sustainable})

    assert caveat("saturated") is None
    assert caveat("interpolated") is None
    assert "lower bound" in str(caveat("lower_bound"))
    # a break at 3 streams that 5 and 8 streams do not repeat does not decide a check
    assert "break at s1-c3 that higher levels (s2-c5, s3-c8) do not repeat" in str(
        caveat("interpolated", ("s2-c5", "s3-c8"))
    )
