"""``m3bench tasks``: build, import, inspect and validate task sets."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from benchmark.tasks.builder import BuildOptions
from benchmark.tasks.builder import build as run_build
from benchmark.tasks.languages import LANGUAGES
from benchmark.tasks.loaders import FORMATS, LoaderError, load
from benchmark.tasks.render import RenderError
from benchmark.tasks.taskset import find_task, read_tasks, tasks_file, validate, write_tasks
from benchmark.tasks.translations import TRANSLATIONS_DIR

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False)

DEFAULT_SET = Path("results/tasks/m3-humaneval")
SetOption = Annotated[Path, typer.Option("--set", "-s", help="Task-set directory (or its tasks.jsonl).")]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=2)


def _languages(value: str) -> tuple[str, ...]:
    codes = tuple(code.strip() for code in value.split(",") if code.strip())
    unknown = [code for code in codes if code not in LANGUAGES]
    if unknown:
        raise typer.BadParameter(f"unknown language(s) {', '.join(unknown)}; known: {', '.join(LANGUAGES)}")
    return codes


@app.command()
def build(
    *,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory.")] = DEFAULT_SET,
    languages: Annotated[str, typer.Option(help="Comma-separated BCP-47 codes.")] = ",".join(LANGUAGES),
    limit_per_language: Annotated[
        int | None, typer.Option(min=1, help="Only the first N problems of each language (demos, tests).")
    ] = None,
    text_only: Annotated[bool, typer.Option(help="Also write the text-only twin of every task.")] = True,
    translations: Annotated[Path | None, typer.Option(help="Directory of <lang>.json translations.")] = None,
    humaneval: Annotated[
        Path | None, typer.Option(help="HumanEval.jsonl(.gz); default: the packaged one.")
    ] = None,
) -> None:
    """Build M3-HumanEval: every problem x language as an image task (and its text-only twin)."""
    options = BuildOptions(
        out_dir=out,
        languages=_languages(languages),
        limit_per_language=limit_per_language,
        translations_dir=translations or TRANSLATIONS_DIR,
        humaneval_path=humaneval,
        text_only=text_only,
    )
    started = time.perf_counter()
    done = 0

    def progress(_task_id: str) -> None:
        nonlocal done
        done += 1
        if done % 20 == 0:
            typer.echo(f"  ... {done} problems", err=True)

    try:
        report = run_build(options, progress)
    except (RenderError, LoaderError, ValueError) as exc:
        raise _fail(str(exc)) from None
    elapsed = time.perf_counter() - started
    for code, count in report.problems.items():
        typer.echo(f"{code}: {count} problems")
    for skipped in report.skipped:
        typer.echo(f"skipped translation: {skipped}")
    findings = _translation_findings(options)
    for finding in findings:
        typer.echo(f"translation check: {finding}")
    typer.echo(
        f"{report.records} records, {report.rendered} images rendered, {report.reused} reused from cache, "
        f"{len(report.skipped)} translation entries skipped, {len(findings)} translation check finding(s), "
        f"{elapsed:.1f} s -> {tasks_file(out)}"
    )


def _translation_findings(options: BuildOptions) -> list[str]:
    """The translation checks' findings for the languages built (docs/tasks.md: what they check)."""
    from benchmark.tasks.loaders.humaneval import read_problems
    from benchmark.tasks.translation_checks import check_translations

    prompts = {problem.task_id: problem.prompt for problem in read_problems(options.humaneval_path)}
    report = check_translations(prompts, options.translations_dir, options.languages)
    return [str(finding) for finding in report.findings]


@app.command("check-translations")
def check_translations_command(
    translations: Annotated[Path | None, typer.Option(help="Directory of <lang>.json translations.")] = None,
    languages: Annotated[str, typer.Option(help="Comma-separated BCP-47 codes.")] = ",".join(LANGUAGES),
) -> None:
    """Check every translated entry against the English (code lines, placeholders, script, length)."""
    from benchmark.tasks.loaders.humaneval import read_problems
    from benchmark.tasks.translation_checks import check_translations

    prompts = {problem.task_id: problem.prompt for problem in read_problems()}
    report = check_translations(prompts, translations or TRANSLATIONS_DIR, _languages(languages))
    for finding in report.findings:
        typer.echo(str(finding), err=True)
    counts = ", ".join(f"{code}={count}" for code, count in report.entries.items())
    if report.findings:
        raise _fail(f"{len(report.findings)} finding(s) in {sum(report.entries.values())} entries ({counts})")
    typer.echo(f"ok: {sum(report.entries.values())} entries ({counts})")


@app.command("import")
def import_set(
    kind: Annotated[str, typer.Argument(help=f"One of: {', '.join(FORMATS)}.")],
    source: Annotated[list[Path], typer.Argument(help="Files to read (JSONL, JSON, .jsonl.gz, Parquet).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output task-set directory.")],
) -> None:
    """Convert public sets on disk (HumanEval, HumanEval-XL, mHumanEval, HumanEval-V) to a task set."""
    records = []
    try:
        for path in source:
            records += load(kind, path, out)
    except LoaderError as exc:
        raise _fail(str(exc)) from None
    path = write_tasks(out, records)
    typer.echo(f"{len(records)} records -> {path}")


@app.command()
def stats(
    task_set: SetOption = DEFAULT_SET,
    tokenizer: Annotated[
        list[Path] | None, typer.Option(help="tokenizer.json to count prompt tokens with (repeatable).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Counts by language, script and group; image sizes; prompt tokens per tokenizer."""
    from benchmark.tasks.stats import compute

    for path in tokenizer or []:
        if not path.is_file():
            raise typer.BadParameter(f"{path} is not a file", param_hint="--tokenizer")
    try:
        summary = compute(read_tasks(task_set), tokenizer).as_dict()
    except LoaderError as exc:
        raise _fail(str(exc)) from None
    if as_json:
        typer.echo(json.dumps(summary, indent=2, ensure_ascii=False))
        return
    typer.echo(f"records: {summary['records']}")
    for key in ("by_language", "by_script", "by_group", "by_method"):
        typer.echo(f"{key.replace('_', ' ')}: " + ", ".join(f"{k}={v}" for k, v in summary[key].items()))  # type: ignore[attr-defined]
    images = summary["images"]
    typer.echo(f"images: {images['count']}")  # type: ignore[index]
    for key, values in images.items():  # type: ignore[attr-defined]
        if key != "count" and values:
            typer.echo(f"  {key}: " + " ".join(f"{k}={v}" for k, v in values.items()))
    for name, per_lang in summary["prompt_tokens"].items():  # type: ignore[attr-defined]
        typer.echo(f"prompt tokens ({name}):")
        for lang, values in per_lang.items():
            typer.echo(f"  {lang}: " + " ".join(f"{k}={v}" for k, v in values.items()))


@app.command("validate")
def validate_command(
    task_set: SetOption = DEFAULT_SET,
    run_solutions: Annotated[
        bool, typer.Option(help="Grade every canonical solution (must pass) and a wrong answer (must not).")
    ] = False,
    workers: Annotated[int, typer.Option(min=1, help="Grading processes for --run-solutions.")] = 1,
) -> None:
    """Check every record: schema, ids, images (hash, size), grading fields; optionally run solutions."""
    try:
        count, problems = validate(task_set, run_solutions=run_solutions, workers=workers)
    except LoaderError as exc:
        raise _fail(str(exc)) from None
    for problem in problems:
        typer.echo(f"{tasks_file(task_set)}: {problem}", err=True)
    if problems:
        raise _fail(f"{len(problems)} problem(s) in {count} records")
    typer.echo(
        f"ok: {count} records" + (" (canonical solutions pass, wrong answers fail)" if run_solutions else "")
    )


@app.command()
def export(
    out: Annotated[Path, typer.Argument(help="Output directory (data/*.parquet and README.md).")],
    task_set: SetOption = DEFAULT_SET,
    format_: Annotated[str, typer.Option("--format", help="Only 'parquet' for now.")] = "parquet",
) -> None:
    """Write the set as Parquet with images embedded, loadable by datasets.load_dataset("parquet", ...)."""
    from benchmark.tasks.export import ExportError, export_parquet

    if format_ != "parquet":
        raise typer.BadParameter(f"unknown format {format_!r}; known: parquet", param_hint="--format")
    started = time.perf_counter()
    try:
        rows, path = export_parquet(task_set, out)
    except (ExportError, LoaderError) as exc:
        raise _fail(str(exc)) from None
    size = path.stat().st_size / 1e6
    typer.echo(f"{rows} records -> {path} ({size:.1f} MB) in {time.perf_counter() - started:.1f} s")


@app.command()
def show(
    task_id: Annotated[str, typer.Argument(help="Record id, e.g. m3-humaneval/0/ar/image.")],
    task_set: SetOption = DEFAULT_SET,
) -> None:
    """Print one record: its prompt, images (with paths on disk) and grading settings."""
    try:
        record = find_task(task_set, task_id)
    except LoaderError as exc:
        raise _fail(str(exc)) from None
    except KeyError as exc:
        raise _fail(str(exc.args[0])) from None
    root = task_set if task_set.is_dir() else task_set.parent
    typer.echo(
        f"id: {record.id}  ({record.source.benchmark} {record.source.source_id}, {record.source.license})"
    )
    typer.echo(f"language: {record.natural_language}  group: {record.metadata.group}")
    typer.echo(f"entry point: {record.entry_point}")
    for image in record.images:
        typer.echo(f"image {image.key}: {root / image.path} ({image.width}x{image.height})")
    grading = record.grading
    typer.echo(f"grading: {grading.method}, timeout {grading.timeout_s} s, {grading.memory_mb} MB")
    typer.echo("--- prompt ---")
    typer.echo(record.prompt)
