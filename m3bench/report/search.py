"""The report's SLO-search section: each search's R* with its interval and probe history (search.json, written
by ``loadgen.search``), and a planner check on R* where one model was searched at 1 and N replicas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from loadgen.search import read_search
from m3bench.report.analysis import check_row
from m3bench.report.inputs import ReportError, ResultsIndex, SearchEntry, _inside
from m3bench.report.planner import predicted_rate

SEARCH_FILE = "search.json"


def _target(metric: str, quantile: float, max_s: float) -> str:
    return f"{metric} p{quantile * 100:g} <= {max_s * 1e3:g} ms"


def load_search(results_dir: Path, entry: SearchEntry) -> dict[str, Any]:
    """One search as the report shows it; a missing or malformed search.json is a one-line error."""
    path = _inside(results_dir, entry.run_dir, f"search {entry.label!r} run_dir") / SEARCH_FILE
    if not path.is_file():
        raise ReportError(f"search {entry.label!r}: {path} is missing")
    try:
        report = read_search(path)
    except (ValidationError, ValueError) as exc:
        raise ReportError(f"search {entry.label!r}: malformed {path}: {str(exc).splitlines()[0]}") from None
    spec, result = report.spec, report.result
    low, high = result.interval if result is not None else (None, None)
    return {
        "label": entry.label,
        "model": entry.model,
        "replicas": entry.replicas,
        "run_dir": entry.run_dir,
        "targets": [_target(t.metric, t.quantile, t.max_s) for t in spec.targets],
        "confidence": spec.confidence,
        "precision": spec.precision,
        "resolution": spec.resolution,
        "status": result.status if result is not None else "unfinished",
        "r_star": result.r_star if result is not None else None,
        "interval": [low, high],
        "note": result.note if result is not None else "the search did not finish (no result in search.json)",
        "probes": [
            {
                "index": probe.index,
                "phase": probe.phase,
                "rate": probe.rate,
                "achieved_rate": probe.achieved_rate,
                "requests": probe.requests,
                "runs": len(probe.run_dirs),
                "verdict": probe.verdict,
                "estimates": [
                    {
                        "target": _target(t.metric, t.quantile, t.max_s),
                        "estimate_s": t.estimate_s,
                        "low_s": t.low_s,
                        "high_s": t.high_s,
                        "verdict": t.verdict,
                    }
                    for t in probe.targets
                ],
                "invalid_reasons": probe.invalid_reasons,
            }
            for probe in report.probes
        ],
        "formulas": report.formulas,
    }


def load_searches(results_dir: Path, index: ResultsIndex) -> list[dict[str, Any]]:
    return [load_search(results_dir, entry) for entry in index.searches]


def search_checks(
    searches: list[dict[str, Any]], tolerance: float, efficiency: float = 1.0
) -> list[dict[str, Any]]:
    """Planner-check rows on R*: N x R*(1 replica) predicted against R*(N replicas) searched. Conclusive
    only when both searches found their knee (R* is then known to its resolution)."""
    rows = []
    singles = {s["model"]: s for s in searches if s["replicas"] == 1}
    for search in searches:
        single = singles.get(search["model"])
        if search["replicas"] == 1 or single is None:
            continue
        n = search["replicas"]
        caveats = [
            f"the {side} search ended '{s['status']}', not 'found'"
            for side, s in (("1-replica", single), (f"{n}-replica", search))
            if s["status"] != "found"
        ]
        rows.append(
            check_row(
                search["model"],
                "R* (SLO search)",
                n,
                labels=(single["label"], search["label"]),
                predicted=predicted_rate(single["r_star"], n, efficiency),
                measured=search["r_star"],
                measured_formula="R* of the search",
                tolerance=tolerance,
                caveats=caveats,
            )
        )
    return rows
