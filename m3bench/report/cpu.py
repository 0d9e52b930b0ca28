"""Where the CPU went: each sweep's per-level CPU attribution (``cpu.json``, written by the load
generator's run from ``loadgen.cpu_attribution``), as a table and a stacked-bar figure per sweep.

A level's bar is the cores each process group used during its measured window (CPU seconds / wall
seconds), stacked; the dashed line is the machine's core count, the grey top what nobody used. The run
queue (runnable tasks, mean and p99) and steal time sit beside it: a run queue above the core count
means some process waited for a CPU, and the generator's validity rules say whether it was the
generator. Sweeps recorded before the attribution existed simply have no figure.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from loadgen.cpu_attribution import GROUPS
from m3bench.report.inputs import ResultsIndex

ORDER = GROUPS  # the process groups in the load generator's order


def load_cpu(results_dir: Path, index: ResultsIndex) -> dict[str, Any]:
    """{"groups": labels, "sweeps": [{label, cpus, levels: [stage rows]}]} for sweeps with a cpu.json."""
    sweeps: list[dict[str, Any]] = []
    labels: dict[str, str] = {}
    for entry in index.sweeps:
        path = results_dir / entry.run_dir / "cpu.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        labels = data.get("groups", labels)
        levels = [row for row in data.get("stages", []) if row.get("samples")]
        if levels:
            sweeps.append({"label": entry.label, "cpus": data.get("cpus"), "levels": levels})
    return {"groups": labels, "sweeps": sweeps}


def top_groups(level: dict[str, Any], n: int = 3) -> str:
    """'vLLM 0.95, llm_server 0.40, ...' the level's biggest users in cores."""
    cores = level.get("cores", {})
    ranked = sorted(((v or 0.0, g) for g, v in cores.items()), reverse=True)[:n]
    return ", ".join(f"{g} {v:.2f}" for v, g in ranked if v > 0)


def figure(sweep: dict[str, Any], labels: dict[str, str]) -> bytes:
    """Stacked cores per process group for each level of one sweep."""
    import matplotlib as mpl

    mpl.use("Agg")
    from matplotlib.figure import Figure

    levels = sweep["levels"]
    names = [str(level["stage"]) for level in levels]
    fig = Figure(figsize=(max(6.0, 1.2 * len(levels) + 4), 4.2), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    colors = mpl.colormaps["tab10"]
    bottom = [0.0] * len(levels)
    for i, group in enumerate(ORDER):
        values = [float(level.get("cores", {}).get(group) or 0.0) for level in levels]
        if not any(values):
            continue
        ax.bar(names, values, bottom=bottom, color=colors(i), label=labels.get(group, group))
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    cpus = sweep.get("cpus")
    if cpus:
        idle = [max(0.0, float(cpus) - b) for b in bottom]
        ax.bar(names, idle, bottom=bottom, color="#dddddd", label="idle / unattributed")
        ax.axhline(float(cpus), color="black", linestyle="--", linewidth=1)
    for x, level in enumerate(levels):
        run_queue = level.get("procs_running", {})
        steal = level.get("steal_fraction")
        text = f"rq {run_queue.get('mean', 0) or 0:.1f}/{run_queue.get('p99', 0) or 0}"
        if steal:
            text += f"\nsteal {steal:.0%}"
        ax.annotate(text, (x, float(cpus or max(bottom))), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("cores used (CPU s / s)")
    ax.set_xlabel("load level (rq = run queue mean/p99)")
    ax.set_title(f"Where the CPU went: {sweep['label']}")
    ax.set_ylim(0, float(cpus or max(bottom)) * 1.25)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=96)
    return buffer.getvalue()
