"""The report's figures as PNG bytes (matplotlib's Agg canvas; no pyplot, no global state).

Each function takes the report document's own data (``analysis.build_document``), so a figure shows
exactly the numbers the tables print.
"""

from __future__ import annotations

import io
from typing import Any

import matplotlib as mpl

mpl.use("Agg")

from matplotlib.axes import Axes
from matplotlib.figure import Figure

METRICS = (("ttft", "TTFT"), ("itl", "ITL"), ("tpot", "TPOT"), ("e2e", "E2E"))
DPI = 96


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _legend(ax: Axes, **options: Any) -> None:
    if ax.get_legend_handles_labels()[0]:  # an empty legend() call warns
        ax.legend(**options)


def _xs_ys(rows: list[dict[str, Any]], x: str, y: str) -> tuple[list[float], list[float]]:
    pairs = [(row[x], row[y]) for row in rows if row[x] is not None and row[y] is not None]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _slo_limit(options: dict[str, Any], metric: str) -> float | None:
    value = options.get(f"slo_{metric}_p99_s")
    return None if value is None else float(value)


def _offered_label(sweeps: list[dict[str, Any]]) -> str:
    modes = {sweep["mode"] for sweep in sweeps}
    return "offered load (concurrent streams)" if modes == {"closed"} else "offered load (requests/s)"


def model_latency(model: dict[str, Any], options: dict[str, Any]) -> bytes:
    """p50 (dashed) and p99 (solid) TTFT/ITL/TPOT/E2E against offered (top) and achieved (bottom) load."""
    figure = Figure(figsize=(15, 7), layout="constrained")
    axes = figure.subplots(2, len(METRICS), squeeze=False)
    colors = mpl.colormaps["tab10"]
    for column, (metric, title) in enumerate(METRICS):
        for row, (x, xlabel) in enumerate(
            (
                ("offered", _offered_label(model["sweeps"])),
                ("throughput_rps", "achieved throughput (requests/s)"),
            )
        ):
            ax: Axes = axes[row][column]
            for number, sweep in enumerate(model["sweeps"]):
                color = colors(number % 10)
                for quantile, style in (("p50", "--"), ("p99", "-")):
                    xs, ys = _xs_ys(sweep["levels"], x, f"{metric}_{quantile}_s")
                    ax.plot(
                        xs,
                        [v * 1e3 for v in ys],
                        style,
                        marker="o",
                        color=color,
                        markersize=4,
                        label=f"{sweep['label']} {quantile}",
                    )
                invalid = [r for r in sweep["levels"] if not r["planned"]]
                xs, ys = _xs_ys(invalid, x, f"{metric}_p99_s")
                ax.plot(xs, [v * 1e3 for v in ys], "x", color="black", markersize=8)
                rate = sweep["sustainable"]["rate"]["value"]
                if row == 1 and rate is not None:
                    ax.axvline(rate, color=color, linestyle=":", linewidth=1)
            limit = _slo_limit(options, metric)
            if limit is not None:
                ax.axhline(limit * 1e3, color="red", linewidth=1, label="p99 SLO")
            ax.set_title(f"{title} (ms)")
            ax.set_xlabel(xlabel)
            ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, loc="outside lower center", ncol=min(6, len(labels)), fontsize=8)
    figure.suptitle(f"{model['model']}: latency against load (x: excluded level; dotted: rate at SLO)")
    return _png(figure)


def model_throughput(model: dict[str, Any]) -> bytes:
    """Achieved against offered load (with the saturation point) and accuracy against achieved load."""
    figure = Figure(figsize=(12, 4), layout="constrained")
    left, right = figure.subplots(1, 2)
    colors = mpl.colormaps["tab10"]
    for number, sweep in enumerate(model["sweeps"]):
        color = colors(number % 10)
        xs, ys = _xs_ys(sweep["levels"], "offered", "throughput_rps")
        left.plot(xs, ys, "-o", color=color, label=sweep["label"])
        saturation = sweep["saturation"]
        if saturation["reached"]:
            left.axvline(saturation["offered"], color=color, linestyle="--", linewidth=1)
        xs, ys = _xs_ys(sweep["levels"], "throughput_rps", "accuracy")
        right.plot(xs, [v * 100 for v in ys], "-o", color=color, label=sweep["label"])
    if all(sweep["mode"] == "open" for sweep in model["sweeps"]):
        top = max((row["offered"] for s in model["sweeps"] for row in s["levels"]), default=1.0)
        left.plot([0, top], [0, top], color="grey", linewidth=1, label="achieved = offered")
    left.set_xlabel(_offered_label(model["sweeps"]))
    left.set_ylabel("achieved throughput (requests/s)")
    left.set_title("throughput (dashed: saturation)")
    right.set_xlabel("achieved throughput (requests/s)")
    right.set_ylabel("accuracy (%)")
    right.set_ylim(-5, 105)
    right.set_title("accuracy under load")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        _legend(ax, fontsize=8)
    return _png(figure)


def pareto(comparison: dict[str, Any]) -> bytes:
    """Accuracy against p99 E2E latency, one point per model; the front joined by a line."""
    figure = Figure(figsize=(7, 4.5), layout="constrained")
    ax = figure.subplots()
    rows = [r for r in comparison["rows"] if r["accuracy"] is not None and r["e2e_p99_s"] is not None]
    for row in rows:
        marker, color = ("o", "tab:blue") if row["on_front"] else ("s", "tab:grey")
        ax.plot(row["e2e_p99_s"] * 1e3, row["accuracy"] * 100, marker, color=color, markersize=8)
        ax.annotate(
            row["model"],
            (row["e2e_p99_s"] * 1e3, row["accuracy"] * 100),
            textcoords="offset points",
            xytext=(6, 4),
            fontsize=8,
        )
    front = sorted((r for r in rows if r["on_front"]), key=lambda r: r["e2e_p99_s"])
    ax.plot(
        [r["e2e_p99_s"] * 1e3 for r in front],
        [r["accuracy"] * 100 for r in front],
        "-",
        color="tab:blue",
        linewidth=1,
        label="Pareto front",
    )
    ax.set_xlabel("p99 E2E latency at light load (ms)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-5, 105)
    ax.grid(alpha=0.3)
    _legend(ax, fontsize=8)
    ax.set_title("accuracy versus latency")
    return _png(figure)


def accuracy_by_language(models: list[dict[str, Any]]) -> bytes:
    languages = sorted({language for model in models for language in model["accuracy_by_language"]})
    figure = Figure(
        figsize=(max(6, 1.2 * len(languages) * max(1, len(models)) / 2 + 3), 4), layout="constrained"
    )
    ax = figure.subplots()
    width = 0.8 / max(1, len(models))
    for number, model in enumerate(models):
        values = [
            (model["accuracy_by_language"].get(language, {}).get("accuracy") or 0.0) * 100
            for language in languages
        ]
        positions = [i + number * width for i in range(len(languages))]
        bars = ax.bar(positions, values, width=width, label=model["model"])
        ax.bar_label(bars, fmt="%.0f%%", fontsize=7)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(languages))], languages)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 112)
    ax.set_title("accuracy by language (pass / graded)")
    _legend(ax, fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return _png(figure)


def accuracy_overview(accuracy: dict[str, Any]) -> bytes:
    """pass@1 per model: all tasks, image and text-only tasks at low load, and all tasks at saturation."""
    rows = accuracy["models"]
    saturated = {row["model"]: row["pass_at_1_saturation"] for row in accuracy["load"]}
    series = [
        ("all (low load)", [row["pass_at_1"] for row in rows]),
        ("image", [row["by_group"].get("image", {}).get("pass_at_1") for row in rows]),
        ("text-only", [row["by_group"].get("text-only", {}).get("pass_at_1") for row in rows]),
        ("all (saturation)", [saturated.get(row["model"]) for row in rows]),
    ]
    series = [(name, values) for name, values in series if any(v is not None for v in values)]
    figure = Figure(figsize=(max(6, 1.6 * len(rows) + 2), 4), layout="constrained")
    ax = figure.subplots()
    width = 0.8 / max(1, len(series))
    for number, (name, values) in enumerate(series):
        positions = [i + number * width for i in range(len(rows))]
        bars = ax.bar(positions, [(v or 0.0) * 100 for v in values], width=width, label=name)
        ax.bar_label(bars, labels=["–" if v is None else f"{v:.0%}" for v in values], fontsize=7)
    ax.set_xticks(
        [i + 0.4 - width / 2 for i in range(len(rows))],
        [f"{row['model']}\n{row['scheme']}" for row in rows],
        fontsize=8,
    )
    ax.set_ylabel("pass@1 (%)")
    ax.set_ylim(0, 112)
    ax.set_title("pass@1 by model: image versus text-only, low load versus saturation")
    _legend(ax, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=len(series))
    ax.grid(alpha=0.3, axis="y")
    return _png(figure)


def planner_check(rows: list[dict[str, Any]]) -> bytes:
    figure = Figure(figsize=(max(6, 1.8 * len(rows) + 2), 4), layout="constrained")
    ax = figure.subplots()
    labels = [f"{r['model']}\n{r['quantity']} x{r['replicas']}" for r in rows]
    predicted = [r["predicted"]["value"] or 0.0 for r in rows]
    measured = [r["measured"]["value"] or 0.0 for r in rows]
    positions = list(range(len(rows)))
    ax.bar([p - 0.2 for p in positions], predicted, width=0.4, label="predicted from 1 replica")
    ax.bar([p + 0.2 for p in positions], measured, width=0.4, label="measured")
    for position, row in zip(positions, rows, strict=True):
        error = row["error"]["value"]
        if error is not None:
            top = max(predicted[position], measured[position])
            ax.annotate(f"{error:+.0%}", (position, top), ha="center", va="bottom", fontsize=9)
    ax.set_xticks(positions, labels, fontsize=8)
    ax.set_ylabel("requests/s")
    ax.set_ylim(0, max([*predicted, *measured, 1e-9]) * 1.2)
    ax.set_title("planner check: predicted versus measured")
    _legend(ax, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2)
    ax.grid(alpha=0.3, axis="y")
    return _png(figure)
