"""The report's Accuracy section, from the index's accuracy runs: pass@1 per model and language, per
quantization scheme, image versus text-only, and low load versus saturation.

An accuracy run asks every task a fixed number of times (usually once: ``sampling.by: cycle``) at
temperature 0 with the task's own output limit. pass@1 of a task = its passing requests / its requests,
where a request that failed, timed out or was never graded counts as not passed; pass@1 of a set of tasks
= the mean over its tasks. Only measure-phase records count.

Low load versus saturation pairs the tasks asked at both loads. A task is *discordant* when it passes at
one load and not at the other. If load does not matter, what is left at temperature 0 is batch-dependent
rounding, which favours neither direction, so the number of pass->fail flips among m discordant tasks is
Binomial(m, 1/2): the difference is *within noise* when the exact two-sided sign test (McNemar's exact
test) gives p >= ``ALPHA``. With every flip in one direction that tolerates up to 7 flips (2 / 2^8 < 0.01
<= 2 / 2^7). Requests that failed, timed out or stopped at the output limit (finish_reason "length") are
named: they explain a difference that is not noise.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from math import comb
from pathlib import Path
from typing import Any

from loadgen.profile import output_limit
from loadgen.records import RequestRecord
from m3bench.report.inputs import AccuracyEntry, ResultsIndex, model_records, read_json_object

ALPHA = 0.01
LENGTH = "length"  # finish_reason of an answer cut by max_tokens
DEFINITION = (
    "pass@1 = mean over tasks of (passing requests / requests of the task), measure phase; a request that "
    "failed, timed out or was not graded counts as not passed"
)
NOISE_RULE = (
    f"Discordant tasks (pass at one load, not at the other) are Binomial(m, 1/2) if load does not matter; "
    f"within noise when the exact two-sided sign test gives p >= {ALPHA:g}"
)
_GROUP_SUFFIX = re.compile(r"-g(\d+)$")


@dataclass
class AccuracyRun:
    entry: AccuracyEntry
    records: list[RequestRecord]  # this model's measure-phase records
    run_config: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.entry.label

    @property
    def planned(self) -> int | None:
        """Requests the run meant to measure (its first stage's ``measure_requests``)."""
        profile = self.run_config.get("profile", {})
        stage = profile.get("sweep") or next(iter(profile.get("stages") or []), None) or {}
        value = stage.get("measure_requests")
        return int(value) if value is not None else None

    @property
    def output_limit(self) -> str:
        request = self.run_config.get("profile", {}).get("request", {})
        cap = request.get("max_tokens")
        fixed = bool((request.get("extra_body") or {}).get("ignore_eos"))
        if cap is None:
            return "the task's own max_tokens"
        size = f"{output_limit(cap, request.get('max_tokens_min'))} tokens"
        return size + (" (ignore_eos: every answer cut there)" if fixed else "")


def passed(record: RequestRecord) -> bool:
    return record.status == "ok" and record.grade == "pass"


def incident(record: RequestRecord) -> str | None:
    """Why a request's verdict is not the model's own answer judged, or None when it is."""
    if record.status != "ok":
        return record.status
    if record.finish_reason == LENGTH:
        return "truncated"
    if record.grade == "ungraded":
        return "ungraded"
    return None


def task_rates(records: Iterable[RequestRecord]) -> dict[str, float]:
    """task id -> passing requests / requests."""
    asks: dict[str, list[bool]] = defaultdict(list)
    for record in records:
        asks[record.task_id].append(passed(record))
    return {task: sum(outcomes) / len(outcomes) for task, outcomes in asks.items()}


def score(records: Sequence[RequestRecord]) -> dict[str, Any]:
    rates = task_rates(records)
    reasons = Counter(incident(record) for record in records)
    return {
        "pass_at_1": sum(rates.values()) / len(rates) if rates else None,
        "tasks": len(rates),
        "requests": len(records),
        "passed": sum(passed(r) for r in records),
        "non_ok": sum(n for reason, n in reasons.items() if reason not in (None, "truncated", "ungraded")),
        "truncated": reasons["truncated"],
        "ungraded": reasons["ungraded"],
    }


def describe_incidents(records: Iterable[RequestRecord]) -> list[dict[str, Any]]:
    rows = []
    for record in records:
        reason = incident(record)
        if reason is not None:
            rows.append(
                {
                    "task_id": record.task_id,
                    "request_id": record.request_id,
                    "reason": reason,
                    "status": record.status,
                    "finish_reason": record.finish_reason,
                    "output_tokens": record.output_tokens,
                    "grade": record.grade,
                    "error": record.error[:200],
                }
            )
    return rows


def sign_test_p(worse: int, better: int) -> float:
    """Exact two-sided p-value of ``worse`` against ``better`` flips under Binomial(m, 1/2)."""
    m = worse + better
    if m == 0:
        return 1.0
    tail: float = sum(comb(m, k) for k in range(min(worse, better) + 1)) / 2**m
    return min(1.0, 2.0 * tail)


@dataclass(frozen=True)
class LoadComparison:
    """One model's accuracy at low load against saturation, over the tasks asked at both."""

    tasks: int
    low: float | None
    saturated: float | None
    worse: list[str]  # tasks that pass at low load and not at saturation
    better: list[str]
    p_value: float
    within_noise: bool
    incidents_low: list[dict[str, Any]]
    incidents_saturated: list[dict[str, Any]]

    @property
    def explained(self) -> list[str]:
        """Flipped tasks whose request at saturation failed, timed out or was cut."""
        hit = {row["task_id"] for row in self.incidents_saturated}
        return [task for task in self.worse if task in hit]

    def describe(self) -> str:
        if not self.tasks:
            return "no task was asked at both loads"
        low, sat = self.low or 0.0, self.saturated or 0.0
        verdict = "within noise" if self.within_noise else "NOT within noise"
        text = (
            f"pass@1 {low:.1%} at low load, {sat:.1%} at saturation ({(sat - low) * 100:+.1f} pp) over "
            f"{self.tasks} tasks; {len(self.worse)} pass->fail, {len(self.better)} fail->pass; sign test "
            f"p = {self.p_value:.3g}: {verdict} (alpha {ALPHA:g})"
        )
        for name, rows in (("at saturation", self.incidents_saturated), ("at low load", self.incidents_low)):
            if rows:
                named = ", ".join(f"{row['task_id']} ({row['reason']})" for row in rows[:12])
                more = f" and {len(rows) - 12} more" if len(rows) > 12 else ""
                text += (
                    f". {len(rows)} request(s) {name} timed out, failed, were cut at the output limit or "
                    f"went ungraded: {named}{more}"
                )
        if self.explained:
            text += f". They explain {len(self.explained)} of the {len(self.worse)} pass->fail flips"
        return text


def compare_loads(
    low: Sequence[RequestRecord], saturated: Sequence[RequestRecord], alpha: float = ALPHA
) -> LoadComparison:
    """Pair the tasks asked at both loads; a task passes at a load when at least half its requests pass."""
    low_rates, sat_rates = task_rates(low), task_rates(saturated)
    paired = sorted(set(low_rates) & set(sat_rates))
    worse = [t for t in paired if low_rates[t] >= 0.5 > sat_rates[t]]
    better = [t for t in paired if sat_rates[t] >= 0.5 > low_rates[t]]
    p_value = sign_test_p(len(worse), len(better))
    return LoadComparison(
        tasks=len(paired),
        low=sum(low_rates[t] for t in paired) / len(paired) if paired else None,
        saturated=sum(sat_rates[t] for t in paired) / len(paired) if paired else None,
        worse=worse,
        better=better,
        p_value=p_value,
        within_noise=p_value >= alpha,
        incidents_low=describe_incidents(r for r in low if r.task_id in sat_rates),
        incidents_saturated=describe_incidents(r for r in saturated if r.task_id in low_rates),
    )


# -- loading -----------------------------------------------------------------------------------------
def load_accuracy_runs(results_dir: Path, index: ResultsIndex) -> list[AccuracyRun]:
    runs = []
    for entry in index.accuracy:
        directory, mine = model_records(results_dir, entry, allow_empty=True)
        measured = [r for r in mine if r.phase == "measure"]
        runs.append(AccuracyRun(entry, measured, read_json_object(directory / "run.json")))
    return runs


# -- the section ----------------------------------------------------------------------------------------
def group_size(entry: AccuracyEntry) -> int | None:
    if entry.group_size is not None or entry.quantization == "none":
        return entry.group_size
    found = _GROUP_SUFFIX.search(entry.model)
    return int(found.group(1)) if found else None


def scheme(quantization: str, size: int | None) -> str:
    if quantization == "none":
        return "BF16"
    return quantization.upper() + (f" g{size}" if size is not None else "")


def _levels(run: AccuracyRun) -> str:
    targets = sorted({r.target for r in run.records})
    if not targets:
        return "–"
    if run.records[0].mode == "open":
        return ", ".join(f"{t:g}" for t in targets) + " req/s"
    return ", ".join(f"{t:g}" for t in targets) + (" stream" if targets == [1] else " streams")


def _run_row(run: AccuracyRun) -> dict[str, Any]:
    result = score(run.records)
    planned = run.planned
    coverage = None
    if planned is not None and result["requests"] < planned:
        coverage = (
            f"asked {result['requests']} of {planned} planned requests "
            "(the run stopped early: its time budget or an interruption)"
        )
    return {
        "label": run.label,
        "model": run.entry.model,
        "load": run.entry.load,
        "offered": _levels(run),
        "run_dir": run.entry.run_dir,
        "planned": planned,
        "output_limit": run.output_limit,
        "coverage": coverage,
        **result,
        "incidents": describe_incidents(run.records),
    }


def _model_row(run: AccuracyRun) -> dict[str, Any]:
    entry = run.entry
    by_language = {}
    languages = sorted({r.language for r in run.records})
    for language in languages:
        by_language[language] = score([r for r in run.records if r.language == language])
    by_group = {}
    for group in sorted({r.task_group or "unknown" for r in run.records}):
        by_group[group] = score([r for r in run.records if (r.task_group or "unknown") == group])
    image = by_group.get("image", {}).get("pass_at_1")
    text = by_group.get("text-only", {}).get("pass_at_1")
    size = group_size(entry)
    return {
        "model": entry.model,
        "family": entry.family,
        "quantization": entry.quantization,
        "group_size": size,
        "scheme": scheme(entry.quantization, size),
        "run": run.label,
        **score(run.records),
        "by_language": by_language,
        "by_group": by_group,
        "image_minus_text": None if image is None or text is None else image - text,
        "vs_bf16": None,
    }


def _paired_difference(records: Sequence[RequestRecord], base: Sequence[RequestRecord]) -> float | None:
    """pass@1 minus the base's, over the tasks both asked."""
    mine, theirs = task_rates(records), task_rates(base)
    common = set(mine) & set(theirs)
    if not common:
        return None
    return sum(mine[t] - theirs[t] for t in common) / len(common)


def build_accuracy(runs: list[AccuracyRun], note: str | None) -> dict[str, Any]:
    """The Accuracy section (JSON-ready); empty ``models`` when there is no accuracy run."""
    low = {run.entry.model: run for run in runs if run.entry.load == "low"}
    saturated = {run.entry.model: run for run in runs if run.entry.load == "saturation"}
    models = [_model_row(run) for run in low.values()]
    baseline = {row["family"]: low[row["model"]] for row in models if row["quantization"] == "none"}
    for row in models:
        base = baseline.get(row["family"])
        if row["quantization"] != "none" and base is not None:
            row["vs_bf16"] = _paired_difference(low[row["model"]].records, base.records)
    pooled: dict[str, list[RequestRecord]] = defaultdict(list)
    families: dict[str, set[str]] = defaultdict(set)
    for row in models:
        pooled[row["scheme"]] += low[row["model"]].records
        families[row["scheme"]].add(row["family"])
    schemes = [
        {"scheme": name, "families": sorted(families[name]), **score(records)}
        for name, records in sorted(pooled.items(), key=lambda item: (item[0] != "BF16", item[0]))
    ]
    load = []
    for model, sat in saturated.items():
        base_run = low.get(model)
        if base_run is None:
            continue
        comparison = compare_loads(base_run.records, sat.records)
        load.append(
            {
                "model": model,
                "low": base_run.label,
                "low_offered": _levels(base_run),
                "saturation": sat.label,
                "saturation_offered": _levels(sat),
                "tasks": comparison.tasks,
                "pass_at_1_low": comparison.low,
                "pass_at_1_saturation": comparison.saturated,
                "difference": None
                if comparison.low is None or comparison.saturated is None
                else comparison.saturated - comparison.low,
                "worse": comparison.worse,
                "better": comparison.better,
                "p_value": comparison.p_value,
                "within_noise": comparison.within_noise,
                "explained_by_incidents": comparison.explained,
                "incidents_saturation": comparison.incidents_saturated,
                "incidents_low": comparison.incidents_low,
                "note": comparison.describe(),
            }
        )
    return {
        "note": note,
        "definition": DEFINITION,
        "noise_rule": NOISE_RULE,
        "alpha": ALPHA,
        "models": models,
        "schemes": schemes,
        "load": load,
        "runs": [_run_row(run) for run in runs],
    }
