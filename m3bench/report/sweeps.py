"""Read the saved run directories an index names and reduce each sweep to planner levels.

Summaries are recomputed from records.jsonl with ``loadgen.summary.summarize`` (never read from a
stale summary.json), filtered to the sweep's model, so one load run may serve several sweeps. The
SLO used for goodput is the report's (p99 TTFT and TPOT limits applied per request).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from loadgen.profile import Generator, Slo
from loadgen.summary import read_health, summarize
from loadgen.summary_model import RunSummary, StageSummary
from m3bench.report.inputs import ResultsIndex, SweepEntry, model_records, read_json_object
from m3bench.report.planner import Level


@dataclass
class LoadedSweep:
    entry: SweepEntry
    run_dir: Path
    summary: RunSummary
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
        """language -> {pass, fail, error, timeout, ungraded, graded, accuracy} for the sweep's model."""
        cells = self.summary.accuracy.get(self.entry.record_model, {})
        return {language: cell.model_dump(by_alias=True) for language, cell in cells.items()}


def _rate(stage: StageSummary) -> float | None:
    """The level's request rate (planner FORMULAS throughput); None where a closed-loop window is shorter
    than the median request: it saw part of a batch round, not a steady state (BF16 at 32 streams: 27 s
    requests, 12 s window, 0.03 req/s against 1.03 at 16 streams)."""
    throughput, e2e = stage.throughput, stage.latency_s.e2e.p50
    if stage.mode == "closed" and e2e is not None and stage.window.window_s < e2e:
        return None
    # the token flow's request rate: completions come in whole batch rounds on a short window
    if throughput.request_equivalent_per_s is not None:
        return throughput.request_equivalent_per_s
    return throughput.requests_per_s


def level_from_stage(stage: StageSummary, model: str) -> Level:
    """A planner level from one stage summary (``loadgen.summary.summarize_stage``)."""
    latency, throughput = stage.latency_s, stage.throughput
    cells = stage.accuracy.get(model, {}).values()
    graded = sum(cell.graded for cell in cells)
    return Level(
        stage=stage.stage,
        mode=stage.mode,
        offered=stage.target,
        throughput=_rate(stage),
        output_tokens=throughput.output_tokens,
        ok=stage.counts.ok,
        measured=stage.counts.measured,
        ttft_p50=latency.ttft.p50,
        ttft_p99=latency.ttft.p99,
        itl_p50=latency.itl.p50,
        itl_p99=latency.itl.p99,
        tpot_p50=latency.tpot.p50,
        tpot_p99=latency.tpot.p99,
        e2e_p50=latency.e2e.p50,
        e2e_p99=latency.e2e.p99,
        accuracy=sum(cell.passed for cell in cells) / graded if graded else None,
        graded=graded,
        valid=stage.generator.valid,
        invalid_reasons=tuple(stage.generator.invalid_reasons),
    )


def load_sweep(results_dir: Path, entry: SweepEntry, slo: Slo) -> LoadedSweep:
    directory, mine = model_records(results_dir, entry)
    run_config = read_json_object(directory / "run.json")
    try:
        limits = Generator.model_validate(run_config.get("profile", {}).get("generator", {}))
    except ValidationError:
        limits = Generator()  # a run.json from another loadgen version: default validity limits
    summary = summarize(mine, slo, limits, read_health(directory / "generator.jsonl"))
    levels = sorted(
        (level_from_stage(stage, entry.record_model) for stage in summary.stages),
        key=lambda level: level.offered,
    )
    return LoadedSweep(
        entry, directory, summary, levels, run_config, read_json_object(directory / "provenance.json")
    )


def load_sweeps(results_dir: Path, index: ResultsIndex, slo: Slo) -> list[LoadedSweep]:
    return [load_sweep(results_dir, entry, slo) for entry in index.sweeps]
