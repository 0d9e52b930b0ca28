"""The report's "where the CPU went": each sweep's cpu.json becomes a table row per level and a figure."""

from __future__ import annotations

import json
from pathlib import Path

from m3bench.report import ReportOptions, build_report
from tests.unit.test_report_build import _entry, _sweep


def _cpu_json(directory: Path, stages: list[tuple[str, float, float]]) -> None:
    """cpu.json as loadgen.cpu_attribution.attribute writes it: (stage, engine cores, generator cores)."""
    rows = []
    for stage, engine, generator in stages:
        cores = dict.fromkeys(
            ("llm_server", "ingress", "proxy", "ray_daemons", "prometheus", "grader", "other"), 0.0
        )
        cores |= {"vllm_engine": engine, "generator": generator, "m3bench": 0.01}
        rows.append(
            {
                "stage": stage,
                "samples": 10,
                "wall_s": 10.0,
                "cpu_s": {g: v * 10 for g, v in cores.items()},
                "cores": cores,
                "unattributed_s": 0.0,
                "machine_busy_fraction": 0.61,
                "steal_fraction": 0.003,
                "procs_running": {"mean": 2.4, "p99": 7, "max": 9},
                "loadavg1_max": 3.1,
            }
        )
    (directory / "cpu.json").write_text(
        json.dumps({"cpus": 2, "groups": {"vllm_engine": "vLLM"}, "stages": rows})
    )


def test_report_shows_where_the_cpu_went_per_level(tmp_path: Path) -> None:
    _sweep(tmp_path / "runs/a1", "m-a", [(1, 0.1, 1.0), (4, 0.5, 0.3)])
    _sweep(tmp_path / "runs/b1", "m-b", [(1, 0.05, 1.0)])  # recorded before attribution: no cpu.json
    _cpu_json(tmp_path / "runs/a1", [("s0-c1", 0.93, 0.02), ("s1-c4", 0.97, 0.05)])
    index = {
        "run": {"run_id": "d", "started": "2025-01-01T00:00:00Z", "machine": "2 cores"},
        "sweeps": [_entry("m-a", 1, "runs/a1"), _entry("m-b", 1, "runs/b1")],
    }
    (tmp_path / "index.json").write_text(json.dumps(index))
    paths = build_report(tmp_path, ReportOptions(slo_ttft_p99_s=0.3))
    document = json.loads(paths["json"].read_text())
    (sweep,) = document["cpu"]["sweeps"]
    assert sweep["label"] == "m-a x1"
    assert [level["stage"] for level in sweep["levels"]] == ["s0-c1", "s1-c4"]
    markdown = paths["markdown"].read_text()
    assert "## Where the CPU went" in markdown
    assert "| s1-c4 | 0.97 |" in markdown  # engine cores, as recorded
    assert "2.4 / 7" in markdown  # run queue mean / p99
    assert (paths["markdown"].parent / "images" / "cpu-m-a-x1.png").stat().st_size > 5000
    assert "Where the CPU went" in paths["html"].read_text()
