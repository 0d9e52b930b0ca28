"""The report of one production-shaped load run: trace stages over time, session stages by turn.

``write_traffic_report(run_dir)`` recomputes the run's summary from its records (``loadgen.summary``,
with the over-time buckets and per-turn figures of ``loadgen.traffic``) and writes
``RUN_DIR/report/traffic.md`` (+ images/) and a self-contained ``traffic.html``: per trace stage the
trace's offered rate next to the achieved send rate, TTFT/E2E percentiles and SLO attainment per
bucket (figure and table); per session stage TTFT by turn index and model. ``m3bench report RUN_DIR``
writes it when RUN_DIR is a load-generator run (records.jsonl, no index.json).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from loadgen.summary_model import RunSummary, StageSummary

DASH = "–"


def _ms(value: float | None) -> str:
    return DASH if value is None else f"{value * 1e3:.1f}"


def _pct(value: float | None) -> str:
    return DASH if value is None else f"{value * 100:.1f}%"


def over_time_figure(stage: StageSummary) -> bytes:
    """Offered vs achieved rate, TTFT/E2E percentiles and SLO attainment per bucket of a trace stage."""
    import matplotlib as mpl

    mpl.use("Agg")
    from matplotlib.figure import Figure

    assert stage.over_time is not None
    buckets = stage.over_time.buckets
    width = stage.over_time.bucket_s
    starts = [b.start_s for b in buckets]
    figure = Figure(figsize=(11, 8), layout="constrained")
    rate_ax, latency_ax, slo_ax = figure.subplots(3, 1, sharex=True)
    rate_ax.step(starts, [b.offered_rate_per_s for b in buckets], where="post", label="offered (trace)")
    rate_ax.step(
        starts, [b.achieved_rate_per_s for b in buckets], where="post", label="achieved (sent)", ls="--"
    )
    rate_ax.set_ylabel("requests/s")
    rate_ax.set_title(f"{stage.stage}: offered vs achieved rate per {width:g} s")
    rate_ax.legend()
    for name, values, style in (
        ("TTFT p50", [b.ttft_p50_s for b in buckets], "-"),
        ("TTFT p99", [b.ttft_p99_s for b in buckets], "--"),
        ("E2E p99", [b.e2e_p99_s for b in buckets], ":"),
    ):
        points: list[tuple[float, float]] = [
            (s, v) for s, v in zip(starts, values, strict=True) if v is not None
        ]
        if points:
            latency_ax.plot([p[0] for p in points], [p[1] for p in points], style, marker=".", label=name)
    latency_ax.set_ylabel("seconds")
    latency_ax.legend()
    attained = [
        (s, b.slo_attainment) for s, b in zip(starts, buckets, strict=True) if b.slo_attainment is not None
    ]
    if attained:
        slo_ax.plot([p[0] for p in attained], [p[1] for p in attained], marker=".", label="SLO attainment")
        slo_ax.set_ylim(0, 1.05)
        slo_ax.legend()
    else:
        slo_ax.text(0.5, 0.5, "no SLO set in the profile", ha="center", transform=slo_ax.transAxes)
    slo_ax.set_xlabel(f"seconds from the stage start ({stage.over_time.anchor})")
    return _png(figure)


def turns_figure(stage: StageSummary) -> bytes:
    """TTFT p50 (solid) and p90 (dashed) by turn index, one line per model, of a session stage."""
    import matplotlib as mpl

    mpl.use("Agg")
    from matplotlib.figure import Figure

    assert stage.turns is not None
    figure = Figure(figsize=(8, 4.5), layout="constrained")
    ax = figure.subplots()
    for model in sorted({t.model for t in stage.turns}):
        rows = [(t.turn, t.ttft.p50, t.ttft.p90) for t in stage.turns if t.model == model]
        known = [(turn, p50, p90) for turn, p50, p90 in rows if p50 is not None and p90 is not None]
        line = ax.plot([k[0] for k in known], [k[1] for k in known], marker="o", label=f"{model} p50")
        ax.plot([k[0] for k in known], [k[2] for k in known], "--", color=line[0].get_color(), label="p90")
    ax.set_xlabel("turn (0 = the question about the image)")
    ax.set_ylabel("TTFT (s)")
    ax.set_title(f"{stage.stage}: TTFT by turn")
    ax.legend(fontsize="small")
    return _png(figure)


def _png(figure: object) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=96)  # type: ignore[attr-defined]
    return buffer.getvalue()


def _stage_markdown(stage: StageSummary, image: str | None) -> list[str]:
    lines = [f"## Stage {stage.stage}", ""]
    if stage.over_time is not None:
        over = stage.over_time
        lines += [
            f"Trace replay, {over.bucket_s:g} s buckets from the {over.anchor}. Offered = requests "
            "scheduled in the bucket (trace rows), achieved = requests sent in it; latency and SLO "
            "attainment of the requests scheduled in it (ok requests meeting every SLO / scheduled).",
            "",
        ]
        if image:
            lines += [f"![{stage.stage} over time]({image})", ""]
        header = ["t (s)", "offered/s", "achieved/s", "ok", "errors", "TTFT p50 ms", "TTFT p99 ms"]
        lines += [*_row([*header, "E2E p99 ms", "lag p99 ms", "SLO"]), "|---" * 10 + "|"]
        for b in over.buckets:
            rates = [f"{b.start_s:g}", f"{b.offered_rate_per_s:.2f}", f"{b.achieved_rate_per_s:.2f}"]
            latency = [_ms(b.ttft_p50_s), _ms(b.ttft_p99_s), _ms(b.e2e_p99_s), _ms(b.schedule_lag_p99_s)]
            lines += _row([*rates, str(b.ok), str(b.errors), *latency, _pct(b.slo_attainment)])
        lines.append("")
    if stage.turns is not None:
        lines += ["Conversations: TTFT by turn index (measure phase, ok requests).", ""]
        if image:
            lines += [f"![{stage.stage} by turn]({image})", ""]
        header = ["model", "turn", "requests", "ok", "TTFT p50 ms", "TTFT p90 ms", "TTFT mean ms"]
        lines += [*_row([*header, "prompt tokens (mean)"]), "|---" * 8 + "|"]
        for t in stage.turns:
            prompt = DASH if t.prompt_tokens_mean is None else f"{t.prompt_tokens_mean:.0f}"
            counts = [t.model, str(t.turn), str(t.requests), str(t.ok)]
            lines += _row([*counts, _ms(t.ttft.p50), _ms(t.ttft.p90), _ms(t.ttft.mean), prompt])
        lines.append("")
    return lines


def _row(cells: list[str]) -> list[str]:
    return ["| " + " | ".join(cells) + " |"]


def write_traffic_report(run_dir: Path, out_dir: Path | None = None) -> dict[str, Path]:
    """traffic.md (+ images/) and traffic.html for the trace and session stages of one load run."""
    from loadgen.summary import summarize_run

    summary: RunSummary = summarize_run(run_dir)
    out = out_dir or run_dir / "report"
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    figures: dict[str, bytes] = {}
    markdown = [f"# Production-shaped load: run {summary.run_id}", ""]
    shaped = [s for s in summary.stages if s.over_time is not None or s.turns is not None]
    if not shaped:
        markdown += ["No trace or session stage in this run: nothing over time or by turn to show.", ""]
    for stage in shaped:
        name = f"traffic-{stage.stage_index:02d}"
        figures[name] = over_time_figure(stage) if stage.over_time is not None else turns_figure(stage)
        (images / f"{name}.png").write_bytes(figures[name])
        markdown += _stage_markdown(stage, f"images/{name}.png")
    paths = {"markdown": out / "traffic.md", "html": out / "traffic.html"}
    text = "\n".join(markdown)
    paths["markdown"].write_text(text, encoding="utf-8")
    paths["html"].write_text(_html(text, figures), encoding="utf-8")
    return paths


def _html(markdown: str, figures: dict[str, bytes]) -> str:
    """The Markdown as simple self-contained HTML: headings, paragraphs, tables, embedded figures."""
    body: list[str] = []
    table: list[list[str]] = []

    def flush() -> None:
        if table:
            head, *rows = table
            body.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>")
            body.extend("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
            body.append("</table>")
            table.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not all(set(c) <= {"-"} for c in cells):
                table.append(cells)
            continue
        flush()
        if line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("!["):
            name = line[line.index("(images/") + 8 : -5]
            data = base64.b64encode(figures[name]).decode("ascii")
            body.append(f'<img alt="{html.escape(name)}" src="data:image/png;base64,{data}">')
        elif line:
            body.append(f"<p>{html.escape(line)}</p>")
    flush()
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto}td,th{padding:2px 8px;text-align:right}"
    )
    head = f"<head><meta charset='utf-8'><style>{style}</style></head>"
    return f"<!doctype html><html>{head}<body>{''.join(body)}</body></html>\n"
