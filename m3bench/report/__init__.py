"""Capacity-planning report: re-rendered from a results directory's saved files alone.

``build_report(results_dir, options)`` reads ``RESULTS_DIR/index.json`` (``inputs``), recomputes every
sweep's stage summaries from its records (``sweeps``), scores the accuracy runs (``accuracy``), plans
(``planner``, ``analysis``) and writes
report.json, report.md and a self-contained report.html under ``RESULTS_DIR/report`` (``render``).
It never imports the serving side and never talks to a live service.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from m3bench.report.accuracy import load_accuracy_runs
from m3bench.report.analysis import ReportOptions, build_document
from m3bench.report.cpu import load_cpu
from m3bench.report.inputs import ReportError, load_index, optional_path
from m3bench.report.render import panel_images, write_report
from m3bench.report.search import load_searches, search_checks
from m3bench.report.sweeps import load_sweeps

__all__ = ["ReportError", "ReportOptions", "build_report"]


def _observability(results_dir: Path, window: Path | None, panels: dict[str, bytes]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    if window is not None and window.is_file():
        try:
            found["prometheus_window"] = json.loads(window.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ReportError(f"{window} is not valid JSON: {str(exc).splitlines()[0]}") from None
    if panels:
        found["panels"] = sorted(panels)
    return found


def build_report(results_dir: Path, options: ReportOptions, out_dir: Path | None = None) -> dict[str, Path]:
    """Render the report of ``results_dir``; returns {json, markdown, html} paths."""
    index = load_index(results_dir)
    sweeps = load_sweeps(results_dir, index, options.request_slo())
    window = optional_path(results_dir, index.prometheus_window, "prometheus_window")
    panels = panel_images(optional_path(results_dir, index.panels_dir, "panels_dir"))
    document = build_document(
        results_dir.resolve(),
        index,
        sweeps,
        options,
        _observability(results_dir, window, panels),
        accuracy_runs=load_accuracy_runs(results_dir, index),
    )
    document["cpu"] = load_cpu(results_dir, index)  # where the CPU went, per level (cpu.json)
    document["searches"] = load_searches(results_dir, index)  # SLO searches: R* and its interval
    document["planner_check"] += search_checks(
        document["searches"], options.check_tolerance, options.scaling_efficiency
    )
    return write_report(document, out_dir or results_dir / "report", panels)
