"""Write the report document as report.json, report.md (+ images/) and a self-contained report.html.

The HTML embeds every figure as a base64 ``data:`` PNG and its CSS inline: no external URL and no
JavaScript, so it opens the same from a file, a mail attachment or a CI artifact.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import jinja2

TEMPLATES = Path(__file__).with_name("templates")
DASH = "–"


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "model"


def _ms(value: float | None, digits: int = 1) -> str:
    return DASH if value is None else f"{value * 1e3:.{digits}f} ms"


def _num(value: float | None, digits: int = 2) -> str:
    return DASH if value is None else f"{value:.{digits}f}"


def _rate(value: float | None) -> str:
    return DASH if value is None else f"{value:.2f} req/s"


def _pct(value: float | None, digits: int = 1) -> str:
    return DASH if value is None else f"{value * 100:.{digits}f}%"


def _usd(value: float | None) -> str:
    if value is None:
        return DASH
    return f"${value:,.2f}" if value >= 1 else f"${value:.4f}"


def _signed_pct(value: float | None) -> str:
    return DASH if value is None else f"{value * 100:+.1f}%"


def _pp(value: float | None) -> str:
    """A difference of two fractions in percentage points."""
    return DASH if value is None else f"{value * 100:+.1f} pp"


def _bound(bound: str) -> str:
    return {
        "interpolated": "interpolated",
        "saturated": "at capacity",
        "lower_bound": "lower bound",
        "below_range": "below the lowest level",
        "no_levels": "no valid level",
    }.get(bound, bound)


def _describe(value: object) -> str:
    """A machine description: a line as is, a mapping as key=value pairs."""
    if isinstance(value, dict):
        return ", ".join(f"{key}={item}" for key, item in value.items())
    return str(value)


def _md_cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "html.jinja"), default=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        ms=_ms,
        num=_num,
        rate=_rate,
        pct=_pct,
        usd=_usd,
        signed_pct=_signed_pct,
        pp=_pp,
        bound=_bound,
        md=_md_cell,
        slug=slug,
        describe=_describe,
    )
    env.filters["tojson_pretty"] = lambda value: json.dumps(value, indent=2, sort_keys=True, default=str)
    return env


def make_figures(document: dict[str, Any]) -> dict[str, bytes]:
    """name -> PNG bytes for every figure the templates show."""
    from m3bench.report import plots  # matplotlib: imported when a report is drawn, not by the CLI
    from m3bench.report.cpu import figure as cpu_figure

    figures: dict[str, bytes] = {}
    options = document["options"]
    for model in document["models"]:
        name = slug(model["model"])
        figures[f"latency-{name}"] = plots.model_latency(model, options)
        figures[f"throughput-{name}"] = plots.model_throughput(model)
    if document["models"]:
        figures["accuracy-by-language"] = plots.accuracy_by_language(document["models"])
        figures["pareto"] = plots.pareto(document["comparison"])
    if document.get("accuracy", {}).get("models"):
        figures["accuracy-overview"] = plots.accuracy_overview(document["accuracy"])
    if document["planner_check"]:
        figures["planner-check"] = plots.planner_check(document["planner_check"])
    cpu = document.get("cpu") or {}
    for sweep in cpu.get("sweeps", []):
        figures[f"cpu-{slug(sweep['label'])}"] = cpu_figure(sweep, cpu.get("groups", {}))
    return figures


def panel_images(panels_dir: Path | None) -> dict[str, bytes]:
    """PNG renders of dashboard panels saved beside the results (optional)."""
    if panels_dir is None or not panels_dir.is_dir():
        return {}
    return {f"panel-{slug(path.stem)}": path.read_bytes() for path in sorted(panels_dir.glob("*.png"))}


def write_report(
    document: dict[str, Any], out_dir: Path, panels: dict[str, bytes] | None = None
) -> dict[str, Path]:
    """Render JSON, Markdown and HTML into ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = make_figures(document)
    panels = panels or {}
    images_dir = out_dir / "images"
    images_dir.mkdir(exist_ok=True)
    for stale in images_dir.glob("*.png"):
        stale.unlink()
    for name, data in {**figures, **panels}.items():
        (images_dir / f"{name}.png").write_bytes(data)
    env = _environment()
    context = {"doc": document, "panels": sorted(panels)}
    paths = {
        "json": out_dir / "report.json",
        "markdown": out_dir / "report.md",
        "html": out_dir / "report.html",
    }
    paths["json"].write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")
    markdown_images = {name: f"images/{name}.png" for name in {**figures, **panels}}
    paths["markdown"].write_text(
        env.get_template("report.md.jinja").render(images=markdown_images, **context), encoding="utf-8"
    )
    data_uris = {
        name: "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        for name, data in {**figures, **panels}.items()
    }
    paths["html"].write_text(
        env.get_template("report.html.jinja").render(images=data_uris, **context), encoding="utf-8"
    )
    return paths
