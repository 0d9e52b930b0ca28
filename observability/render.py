"""Static PNGs of dashboard panels, drawn with matplotlib from the panels' own queries.

For the report and for people without Grafana: the PromQL is the panel's, from the dashboard JSON,
with the template variables expanded (``observability.dashboards.promql.expand``), so a PNG shows what
Grafana would.
Time series panels become line charts over the run (seconds since its start); the accuracy-vs-latency
xychart becomes a labelled scatter plot of its two instant queries joined on their labels.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from observability.dashboards import promql
from observability.verify import Client, Window, run_query

# One key panel per dashboard (uid -> panel title); `m3bench dashboards render --all` draws every one.
KEY_PANELS = {
    "m3bench-load-test": "TTFT p50: client vs server",
    "m3bench-model-comparison": "Accuracy vs p99 E2E latency (per model and language)",
    "m3bench-serving-internals": "Running and waiting requests",
}
_LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")
_SCALE = {
    "s": (1000.0, "ms"),
    "ms": (1.0, "ms"),
    "percentunit": (100.0, "%"),
    "reqps": (1.0, "requests/s"),
    "short": (1.0, "count"),
}
LOG_UNITS = {"s", "ms"}  # latencies span decades (a cold first request, then steady state): log axis


def legend(template: str, labels: Mapping[str, str]) -> str:
    if not template:
        return ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "__name__") or "value"
    return _LEGEND.sub(lambda m: labels.get(m.group(1), ""), template)


def slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def find_panel(document: dict[str, Any], title: str) -> dict[str, Any]:
    for panel in document.get("panels", []):
        for candidate in [panel, *panel.get("panels", [])]:
            if candidate.get("title") == title:
                return dict(candidate)
    raise KeyError(f"no panel {title!r} in dashboard {document.get('uid')}")


def render_panel(
    prometheus: Client, panel: dict[str, Any], window: Window, out: Path, *, subtitle: str = ""
) -> Path:
    figure, axes = plt.subplots(figsize=(9, 4.8), dpi=110)
    kind = panel.get("type")
    if kind == "xychart":
        _scatter(axes, prometheus, panel, window)
    elif kind == "table":
        _table(axes, prometheus, panel, window)
    elif kind == "bargauge":
        _bars(axes, prometheus, panel, window)
    else:
        _lines(axes, prometheus, panel, window)
    axes.set_title(panel["title"] + (f"\n{subtitle}" if subtitle else ""), fontsize=11)
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out)
    plt.close(figure)
    return out


def _lines(axes: Any, prometheus: Client, panel: dict[str, Any], window: Window) -> None:
    unit = str(panel.get("fieldConfig", {}).get("defaults", {}).get("unit", ""))
    scale, label = _SCALE.get(unit, (1.0, unit))
    lines = []
    for target in panel.get("targets", []):
        expr = promql.expand(target["expr"], window.values())
        for series in run_query(prometheus, expr, False, window):
            values = [(float(t), float(v)) for t, v in series["values"]]
            points = [(t - window.start, v * scale) for t, v in values if math.isfinite(v)]
            if points:
                lines.append(
                    (legend(target.get("legendFormat", ""), series["metric"]), series["metric"], points)
                )
    names = [name for name, _, _ in lines]
    for name, labels, points in lines:
        shown = name
        if names.count(name) > 1 and "run_id" in labels:  # several runs selected: say which line is which
            shown = f"{name} ({labels['run_id']})"
        axes.plot(*_with_gaps(points, window.step), linewidth=1.6, label=shown)
    drawn = len(lines)
    axes.set_xlabel("seconds since the start of the run")
    if drawn and unit in LOG_UNITS and all(v > 0 for _, _, points in lines for _, v in points):
        axes.set_yscale("log")
        label += " (log scale)"
    axes.set_ylabel(label)
    if drawn:
        axes.legend(fontsize=8, loc="best")
    else:
        axes.text(0.5, 0.5, "no data", ha="center", va="center", transform=axes.transAxes)


def _scatter(axes: Any, prometheus: Client, panel: dict[str, Any], window: Window) -> None:
    """Two instant queries (y = A, x = B) joined on identical label sets, as Grafana's merge does."""
    columns = _instant_columns(prometheus, panel, window)
    points = [(columns["B"][k], columns["A"][k], dict(k)) for k in columns["A"] if k in columns["B"]]
    runs = {labels.get("run_id") for _, _, labels in points}
    markers = "osD^v<>p*h"
    for index, (x, y, labels) in enumerate(sorted(points, key=lambda p: sorted(p[2].items()))):
        name = f"{labels.get('model', '')} / {labels.get('language', '')}"
        if len(runs) > 1:
            name += f" ({labels.get('run_id')})"
        axes.scatter([x * 1000], [y], s=70, marker=markers[index % len(markers)], label=name, alpha=0.85)
    if points:
        axes.legend(fontsize=8, loc="best")
    axes.set_xlabel("p99 end-to-end latency (ms)")
    axes.set_ylabel("accuracy (pass / graded)")
    axes.set_ylim(-0.05, 1.05)
    if not points:
        axes.text(0.5, 0.5, "no data", ha="center", va="center", transform=axes.transAxes)


def _with_gaps(points: list[tuple[float, float]], step: float) -> tuple[list[float], list[float]]:
    """x and y with a NaN wherever samples are missing (between runs), so no line bridges the gap."""
    xs: list[float] = []
    ys: list[float] = []
    for t, v in points:
        if xs and t - xs[-1] > 2.5 * step:
            xs.append(math.nan)
            ys.append(math.nan)
        xs.append(t)
        ys.append(v)
    return xs, ys


Labels = tuple[tuple[str, str], ...]


def _instant_columns(
    prometheus: Client, panel: dict[str, Any], window: Window
) -> dict[str, dict[Labels, float]]:
    """refId -> {label set (without __name__): value} of each instant query, as Grafana's merge joins them."""
    columns = {}
    for target in panel.get("targets", []):
        expr = promql.expand(target["expr"], window.values())
        columns[target["refId"]] = {
            tuple(sorted((k, v) for k, v in r["metric"].items() if k != "__name__")): float(r["value"][1])
            for r in run_query(prometheus, expr, True, window)
        }
    return columns


def _table(axes: Any, prometheus: Client, panel: dict[str, Any], window: Window) -> None:
    columns = _instant_columns(prometheus, panel, window)
    keys = sorted({key for values in columns.values() for key in values})
    refs = sorted(columns)
    label_names = sorted({name for key in keys for name, _ in key})
    rows = [
        [dict(key).get(name, "") for name in label_names]
        + [f"{columns[ref][key]:.3g}" if key in columns[ref] else "" for ref in refs]
        for key in keys
    ]
    axes.axis("off")
    if rows:
        table = axes.table(cellText=rows, colLabels=label_names + refs, loc="center")
        table.auto_set_font_size(False)
        table.set_fontsize(8)
    else:
        axes.text(0.5, 0.5, "no data", ha="center", va="center", transform=axes.transAxes)


def _bars(axes: Any, prometheus: Client, panel: dict[str, Any], window: Window) -> None:
    unit = str(panel.get("fieldConfig", {}).get("defaults", {}).get("unit", ""))
    scale, label = _SCALE.get(unit, (1.0, unit))
    names, values = [], []
    for target in panel.get("targets", []):
        expr = promql.expand(target["expr"], window.values())
        for row in run_query(prometheus, expr, True, window):
            labels = row["metric"]
            name = legend(target.get("legendFormat", ""), labels)
            names.append(f"{name} ({labels['run_id']})" if "run_id" in labels else name)
            values.append(float(row["value"][1]) * scale)
    if names:
        axes.barh(names, values)
        axes.set_xlabel(label)
    else:
        axes.text(0.5, 0.5, "no data", ha="center", va="center", transform=axes.transAxes)


def render_dashboards(
    prometheus: Client,
    documents: Mapping[str, dict[str, Any]],
    window: Window,
    out_dir: Path,
    *,
    every_panel: bool = False,
    subtitle: str = "",
) -> list[Path]:
    written = []
    for uid, document in documents.items():
        if every_panel:
            titles = [p["title"] for p in document.get("panels", []) if p.get("type") != "row"]
        else:
            titles = [KEY_PANELS[uid]] if uid in KEY_PANELS else []
        for title in titles:
            out = out_dir / f"{uid.removeprefix('m3bench-')}--{slug(title)}.png"
            written.append(
                render_panel(prometheus, find_panel(document, title), window, out, subtitle=subtitle)
            )
    return written
