"""Read the saved run directories an index names and reduce each sweep to planner levels.

Summaries are recomputed from records.jsonl with ``loadgen.summary.summarize`` (never read from a
stale summary.json), filtered to the sweep's model, so one load run may serve several sweeps. The
SLO used for goodput is the report's (p99 TTFT and TPOT limits applied per request).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from loadgen.profile import Generator, Slo
from loadgen.summary import summarize
from m3bench.report.inputs import ResultsIndex, SweepEntry, model_records, read_json_object
from m3bench.report.planner import Level


@dataclass
class LoadedSweep:
    entry: SweepEntry
    run_dir: Path
    summary: dict[str, Any]
    levels: list[Level]  # every stage, valid or not, sorted by offered load
    run_config: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.entry.label

    @property
    def mode(self) -> str:
        return self.levels[0].mode if self.levels else "closed"

    @property
    def language_accuracy(self) -> dict[str, dict[str, Any]]:
        table: dict[str, dict[str, dict[str, Any]]] = self.summary.get("accuracy", {})
        return table.get(self.entry.record_model, {})


def _p(stage: dict[str, Any], metric: str, quantile: str) -> float | None:
    value = stage["latency_s"][metric][quantile]
    return None if value is None else float(value)


def level_from_stage(stage: dict[str, Any], model: str) -> Level:
    """A planner level from one stage summary (``loadgen.summary.summarize_stage``)."""
    by_status: dict[str, int] = stage["counts"]["measure_by_status"]
    throughput = stage["throughput"]
    languages: dict[str, dict[str, Any]] = stage.get("accuracy", {}).get(model, {})
    passed = sum(int(row["pass"]) for row in languages.values())
    graded = sum(int(row["graded"]) for row in languages.values())
    generator = stage.get("generator", {})
    return Level(
        stage=str(stage["stage"]),
        mode=stage["mode"],
        offered=float(stage["target"]),
        throughput=throughput["requests_per_s"],
        output_tokens=int(throughput["output_tokens"]),
        ok=int(by_status.get("ok", 0)),
        measured=sum(by_status.values()),
        ttft_p50=_p(stage, "ttft", "p50"),
        ttft_p99=_p(stage, "ttft", "p99"),
        itl_p50=_p(stage, "itl", "p50"),
        itl_p99=_p(stage, "itl", "p99"),
        tpot_p50=_p(stage, "tpot", "p50"),
        tpot_p99=_p(stage, "tpot", "p99"),
        e2e_p50=_p(stage, "e2e", "p50"),
        e2e_p99=_p(stage, "e2e", "p99"),
        accuracy=passed / graded if graded else None,
        graded=graded,
        valid=bool(generator.get("valid", True)),
        invalid_reasons=tuple(generator.get("invalid_reasons", ())),
    )


def _health(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # a torn last line of a crashed run
    return rows


def load_sweep(results_dir: Path, entry: SweepEntry, slo: Slo) -> LoadedSweep:
    directory, mine = model_records(results_dir, entry)
    run_config = read_json_object(directory / "run.json")
    try:
        limits = Generator.model_validate(run_config.get("profile", {}).get("generator", {}))
    except ValidationError:
        limits = Generator()  # a run.json from another loadgen version: default validity limits
    summary = summarize(mine, slo, limits, _health(directory / "generator.jsonl"))
    levels = sorted(
        (level_from_stage(stage, entry.record_model) for stage in summary["stages"]),
        key=lambda level: level.offered,
    )
    return LoadedSweep(
        entry, directory, summary, levels, run_config, read_json_object(directory / "provenance.json")
    )


def load_sweeps(results_dir: Path, index: ResultsIndex, slo: Slo) -> list[LoadedSweep]:
    return [load_sweep(results_dir, entry, slo) for entry in index.sweeps]
