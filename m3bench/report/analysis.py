"""Assemble the report document: per-model planning, cross-model comparison and the planner check.

The document is plain JSON-ready data (``report.json`` is exactly it; the Markdown and HTML renderers
read it too). Every planned number is a *quantity*: ``{"value", "unit", "formula"}``.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from loadgen.profile import Slo, output_limit
from loadgen.summary import FORMULAS as SUMMARY_FORMULAS
from m3bench.report import planner
from m3bench.report.accuracy import AccuracyRun, build_accuracy
from m3bench.report.inputs import ResultsIndex
from m3bench.report.planner import FORMULAS, Level, Slos
from m3bench.report.sweeps import LoadedSweep

REPORT_SCHEMA_VERSION = 1
VERDICT_KEYS = ("pass", "fail", "error", "timeout", "ungraded", "graded")
PLANNING_NOTES = {
    "saturated": "the SLOs held up to saturation: the per-replica rate is the capacity, so the headroom is "
    "the only margin against queueing",
    "lower_bound": "the per-replica rate is a lower bound, so the replica count is an upper bound",
    "below_range": "no measured level meets the SLOs: sweep lower loads or relax the SLOs",
    "no_levels": "no valid load level to plan from",
}
# (label, section, key): what the planner check predicts from 1 replica and measures at N.
CHECKED = (("rate at SLO", "sustainable", "rate"), ("capacity", "saturation", "capacity"))


class ReportOptions(BaseModel):
    """What the user asks of the plan; the CLI's options map one to one onto these fields."""

    model_config = ConfigDict(extra="forbid")

    slo_ttft_p99_s: float | None = Field(default=None, gt=0)
    slo_itl_p99_s: float | None = Field(default=None, gt=0)
    slo_tpot_p99_s: float | None = Field(default=None, gt=0)
    min_accuracy: float | None = Field(default=None, ge=0, le=1)
    max_error_fraction: float = Field(default=0.01, ge=0, le=1)
    target_rate: float | None = Field(default=None, gt=0, description="Requests/s the plan must carry.")
    headroom: float = Field(default=0.2, ge=0, description="Spare capacity over the target, 0.2 = 20%.")
    price_per_hour: float | None = Field(default=None, ge=0, description="USD per accelerator-hour.")
    scaling_efficiency: float = Field(default=1.0, gt=0, le=2)
    saturation_follow: float = Field(default=0.9, gt=0, le=1)
    saturation_elasticity: float = Field(default=0.5, gt=0, le=1)
    check_tolerance: float = Field(default=0.15, gt=0)
    include_invalid: bool = Field(default=False, description="Plan from levels the generator marked invalid.")

    @model_validator(mode="after")
    def _one_token_slo(self) -> ReportOptions:
        if self.slo_itl_p99_s is not None and self.slo_tpot_p99_s is not None:
            raise ValueError("set at most one of the p99 ITL and p99 TPOT SLOs")
        return self

    def slos(self) -> Slos:
        return Slos(
            self.slo_ttft_p99_s,
            self.slo_itl_p99_s,
            self.slo_tpot_p99_s,
            self.min_accuracy,
            self.max_error_fraction,
            self.saturation_follow,
        )

    def request_slo(self) -> Slo:
        """Per-request SLO for goodput (the load generator's definition)."""
        return Slo(ttft_s=self.slo_ttft_p99_s, tpot_s=self.slo_tpot_p99_s)


def quantity(value: float | None, unit: str, formula: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "formula": formula}


def _level_row(level: Level, slos: Slos, planned: bool) -> dict[str, Any]:
    checks = planner.level_checks(level, slos)
    return {
        "stage": level.stage,
        "mode": level.mode,
        "offered": level.offered,
        "offered_unit": "concurrent streams" if level.mode == "closed" else "requests/s",
        "throughput_rps": level.throughput,
        "output_tokens_per_s": (level.throughput or 0.0) * level.output_tokens / level.ok
        if level.ok
        else None,
        "ok": level.ok,
        "measured": level.measured,
        "error_fraction": level.error_fraction,
        **{
            f"{metric}_{q}_s": getattr(level, f"{metric}_{q}")
            for metric in ("ttft", "itl", "tpot", "e2e")
            for q in ("p50", "p99")
        },
        "accuracy": level.accuracy,
        "graded": level.graded,
        "valid": level.valid,
        "invalid_reasons": list(level.invalid_reasons),
        "planned": planned,
        "meets_slos": all(check.ok for check in checks),
        "broken_slos": [check.name for check in checks if not check.ok],
    }


def _price(sweep: LoadedSweep, options: ReportOptions) -> float | None:
    entry = sweep.entry
    return (
        entry.price_per_accelerator_hour
        if entry.price_per_accelerator_hour is not None
        else options.price_per_hour
    )


def planned_levels(sweep: LoadedSweep, options: ReportOptions) -> list[Level]:
    return [level for level in sweep.levels if level.valid or options.include_invalid]


def analyze_sweep(sweep: LoadedSweep, options: ReportOptions) -> dict[str, Any]:
    slos = options.slos()
    levels = planned_levels(sweep, options)
    entry = sweep.entry
    saturation = planner.saturation(levels, options.saturation_follow, options.saturation_elasticity)
    sustainable = planner.sustainable_rate(levels, slos, saturated=saturation.reached)
    tokens = planner.tokens_per_request(levels)
    price = _price(sweep, options)
    accelerators = entry.accelerators_per_replica * entry.replicas
    per_replica = None if sustainable.rate is None else sustainable.rate / entry.replicas
    rate_unit = "requests/s"
    cost = FORMULAS["cost_per_million"]
    return {
        "label": sweep.label,
        "model": entry.model,
        "replicas": entry.replicas,
        "accelerator": entry.accelerator,
        "accelerators_per_replica": entry.accelerators_per_replica,
        "price_per_accelerator_hour": price,
        "run_dir": entry.run_dir,
        "run_id": sweep.summary.run_id,
        "mode": sweep.mode,
        "profile": sweep.run_config.get("profile", {}).get("name"),
        "endpoint": sweep.run_config.get("endpoint"),
        "records": sweep.summary.records,
        "levels": [_level_row(level, slos, level in levels) for level in sweep.levels],
        "excluded_levels": [level.stage for level in sweep.levels if level not in levels],
        "saturation": {
            "reached": saturation.reached,
            "stage": saturation.stage,
            "offered": saturation.offered,
            "capacity": quantity(saturation.capacity, rate_unit, FORMULAS["capacity"]),
            "rule": saturation.rule,
        },
        "sustainable": {
            "rate": quantity(sustainable.rate, rate_unit, FORMULAS["sustainable_rate"]),
            "rate_per_replica": quantity(per_replica, rate_unit, "rate / replicas"),
            "bound": sustainable.bound,
            "note": sustainable.note,
            "last_ok": sustainable.last_ok,
            "first_fail": sustainable.first_fail,
            "limiting": list(sustainable.limiting),
            "fraction": sustainable.fraction,
            "recovered": list(sustainable.recovered),
        },
        "tokens_per_request": quantity(tokens, "tokens", FORMULAS["tokens_per_request"]),
        "cost_per_million_at_slo": quantity(
            planner.cost_per_million_tokens(price, accelerators, sustainable.rate, tokens), "USD", cost
        ),
        "cost_per_million_at_capacity": quantity(
            planner.cost_per_million_tokens(price, accelerators, saturation.capacity, tokens), "USD", cost
        ),
        "output_note": _output_note(sweep.run_config),
        "run_config": sweep.run_config,
        "versions": sweep.provenance.get("versions", {}),
        "git_sha": sweep.provenance.get("git_sha"),
    }


def _output_note(run_config: dict[str, Any]) -> str | None:
    """Why a sweep's accuracy column does not measure the model, if its outputs were cut."""
    request = run_config.get("profile", {}).get("request", {})
    cap = request.get("max_tokens")
    if cap is None:
        return None
    fixed = bool((request.get("extra_body") or {}).get("ignore_eos"))
    low = request.get("max_tokens_min")
    size = f"{output_limit(cap, low)} tokens"
    if fixed:
        how = (
            f"every output is {size} (ignore_eos, drawn per request)"
            if low
            else f"every output is exactly {size} (ignore_eos)"
        )
    else:
        how = f"outputs stop at {size}"
    return f"{how}: answers are truncated, so this sweep's accuracy column does not measure the model"


def _pooled_accuracy(sweeps: list[LoadedSweep]) -> dict[str, dict[str, Any]]:
    pooled: dict[str, Counter[str]] = defaultdict(Counter)
    for sweep in sweeps:
        for language, row in sweep.language_accuracy.items():
            pooled[language].update({key: int(row.get(key, 0)) for key in VERDICT_KEYS})
    return {
        language: {**counts, "accuracy": counts["pass"] / counts["graded"] if counts["graded"] else None}
        for language, counts in sorted(pooled.items())
    }


def _planning(model_sweeps: list[dict[str, Any]], options: ReportOptions) -> dict[str, Any]:
    base = min(model_sweeps, key=lambda sweep: sweep["replicas"])
    per_replica = base["sustainable"]["rate_per_replica"]["value"]
    replicas = (
        planner.replicas_needed(
            options.target_rate, per_replica, options.headroom, options.scaling_efficiency
        )
        if options.target_rate is not None
        else None
    )
    bound = base["sustainable"]["bound"]
    return {
        "basis": base["label"],
        "bound": bound,
        "note": PLANNING_NOTES.get(bound, ""),
        "rate_per_replica": base["sustainable"]["rate_per_replica"],
        "target_rate": options.target_rate,
        "headroom": options.headroom,
        "scaling_efficiency": options.scaling_efficiency,
        "replicas_for_target": quantity(replicas, "replicas", FORMULAS["replicas"]),
        "cost_per_million": base["cost_per_million_at_slo"],
    }


def _light_load(sweep: dict[str, Any]) -> dict[str, Any] | None:
    planned = [row for row in sweep["levels"] if row["planned"] and row["e2e_p99_s"] is not None]
    return planned[0] if planned else None


def _comparison(models: list[dict[str, Any]]) -> dict[str, Any]:
    points: dict[str, tuple[float | None, float | None]] = {}
    rows = []
    for model in models:
        base = next(s for s in model["sweeps"] if s["label"] == model["planning"]["basis"])
        light = _light_load(base)
        latency = light["e2e_p99_s"] if light else None
        points[model["model"]] = (model["accuracy"], latency)
        rows.append(
            {
                "model": model["model"],
                "quantization": model["quantization"],
                "accuracy": model["accuracy"],
                "e2e_p99_s": latency,
                "ttft_p99_s": light["ttft_p99_s"] if light else None,
                "at": light["stage"] if light else None,
                "rate_per_replica": model["planning"]["rate_per_replica"]["value"],
                "cost_per_million": model["planning"]["cost_per_million"]["value"],
            }
        )
    front = planner.pareto_front(points)
    for row in rows:
        row["on_front"] = row["model"] in front
    return {
        "rows": rows,
        "latency_basis": "p99 E2E at the lowest planned load level of each model's fewest-replica sweep",
        "pareto_rule": FORMULAS["pareto"],
    }


def _caveat(side: str, what: str, key: str, sweep: dict[str, Any]) -> str | None:
    """Why a predicted-versus-measured pair is weaker than it looks, if it is."""
    if key == "saturation":
        reached = sweep["saturation"]["reached"]
        return None if reached else f"the {side} {what} is a lower bound (the sweep never saturated)"
    bound = sweep["sustainable"]["bound"]
    if bound == "lower_bound":
        return f"the {side} {what} is a lower bound (every level met the SLOs)"
    if bound in ("below_range", "no_levels"):
        return f"the {side} sweep has no {what}: {sweep['sustainable']['note']}"
    if recovered := sweep["sustainable"]["recovered"]:
        return (
            f"the {side} {what} comes from a break at {sweep['sustainable']['first_fail']} that higher "
            f"levels ({', '.join(recovered)}) do not repeat"
        )
    return None


def check_row(
    model: str,
    what: str,
    n: int,
    *,
    labels: tuple[str, str],
    predicted: float | None,
    measured: float | None,
    measured_formula: str,
    tolerance: float,
    caveats: list[str],
) -> dict[str, Any]:
    """One planner-check row: ``predicted`` (from 1 replica) against ``measured`` at ``n`` replicas."""
    error = planner.prediction_error(predicted, measured)
    return {
        "model": model,
        "quantity": what,
        "replicas": n,
        "from": labels[0],
        "against": labels[1],
        "predicted": quantity(predicted, "requests/s", FORMULAS["predicted_rate"]),
        "measured": quantity(measured, "requests/s", measured_formula),
        "error": quantity(error, "fraction", FORMULAS["prediction_error"]),
        "tolerance": tolerance,
        "within_tolerance": None if error is None else abs(error) <= tolerance,
        "conclusive": error is not None and not caveats,
        "caveats": caveats,
    }


def _check(models: list[dict[str, Any]], options: ReportOptions) -> list[dict[str, Any]]:
    rows = []
    for model in models:
        singles = [s for s in model["sweeps"] if s["replicas"] == 1]
        if not singles:
            continue
        single = singles[0]
        for sweep in model["sweeps"]:
            if sweep["replicas"] == 1:
                continue
            n = sweep["replicas"]
            for what, key, sub in CHECKED:
                one, measured = single[key][sub]["value"], sweep[key][sub]["value"]
                caveats = [
                    caveat
                    for side, data in (("1-replica", single), (f"{n}-replica", sweep))
                    if (caveat := _caveat(side, what, key, data))
                ]
                rows.append(
                    check_row(
                        model["model"],
                        what,
                        n,
                        labels=(single["label"], sweep["label"]),
                        predicted=planner.predicted_rate(one, n, options.scaling_efficiency),
                        measured=measured,
                        measured_formula=f"{what} of the {n}-replica sweep",
                        tolerance=options.check_tolerance,
                        caveats=caveats,
                    )
                )
    return rows


def build_document(
    results_dir: Path,
    index: ResultsIndex,
    sweeps: list[LoadedSweep],
    options: ReportOptions,
    observability: dict[str, Any] | None = None,
    *,
    accuracy_runs: list[AccuracyRun] | None = None,
) -> dict[str, Any]:
    analyzed = [analyze_sweep(sweep, options) for sweep in sweeps]
    accuracy = build_accuracy(accuracy_runs or [], index.run.accuracy_note)
    measured = {row["model"]: row for row in accuracy["models"]}
    by_model: dict[str, list[int]] = defaultdict(list)
    for position, sweep in enumerate(sweeps):
        by_model[sweep.entry.model].append(position)
    models = []
    for model, positions in by_model.items():
        entry = sweeps[positions[0]].entry
        languages = _pooled_accuracy([sweeps[p] for p in positions])
        passed = sum(row["pass"] for row in languages.values())
        graded = sum(row["graded"] for row in languages.values())
        model_sweeps = [analyzed[p] for p in positions]
        row = {
            "model": model,
            "family": entry.family,
            "quantization": entry.quantization,
            "sweeps": model_sweeps,
            "accuracy": passed / graded if graded else None,
            "graded": graded,
            "accuracy_by_language": languages,
            "accuracy_source": "load sweeps (pass / graded)",
            "planning": _planning(model_sweeps, options),
        }
        scored = measured.get(model)
        if scored is not None:  # natural output lengths beat whatever the sweeps cut
            row["accuracy"] = scored["pass_at_1"]
            row["accuracy_by_language"] = {
                language: {**counts, "accuracy": counts["pass_at_1"]}
                for language, counts in scored["by_language"].items()
            }
            row["accuracy_source"] = f"pass@1 of accuracy run {scored['run']}, {scored['tasks']} tasks"
        models.append(row)
    warnings = [
        f"{sweep['label']}: levels {', '.join(sweep['excluded_levels'])} excluded "
        "(the load generator marked them invalid)"
        for sweep in analyzed
        if sweep["excluded_levels"]
    ]
    warnings += [f"accuracy run {r['label']}: {r['coverage']}" for r in accuracy["runs"] if r["coverage"]]
    warnings += [
        f"{r['model']}: accuracy depends on load: {r['note']}"
        for r in accuracy["load"]
        if not r["within_noise"]
    ]
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "results_dir": str(results_dir),
        "run": index.run.model_dump(mode="json"),
        "options": options.model_dump(mode="json"),
        "slos": options.slos().describe(),
        "models": models,
        "comparison": _comparison(models),
        "accuracy": accuracy,
        "planner_check": _check(models, options),
        "formulas": {"planner": FORMULAS, "measurement": SUMMARY_FORMULAS},
        "observability": observability or {},
        "warnings": warnings,
    }
