"""A task set on disk: ``tasks.jsonl`` (one ``TaskRecord`` per line) and ``images/`` beside it.

Reading refuses a malformed record with file, line and field. ``validate`` goes further: unique ids,
images present with the recorded hash and size, what each grading method needs, and (optionally) that
every canonical solution passes its own tests while a wrong one does not.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from pydantic import ValidationError

from benchmark.tasks.loaders.common import LoaderError
from benchmark.tasks.schema import TaskRecord

TASKS_FILE = "tasks.jsonl"


def tasks_file(task_set: Path) -> Path:
    return task_set / TASKS_FILE if task_set.is_dir() else task_set


def iter_tasks(task_set: Path) -> Iterator[tuple[int, TaskRecord]]:
    """(line number, record) for every record; the first malformed one raises ``LoaderError``."""
    path = tasks_file(task_set)
    if not path.is_file():
        raise LoaderError(path, None, None, "no such task file (build one with `m3bench tasks build`)")
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield number, TaskRecord.model_validate_json(line)
            except ValidationError as exc:
                error = exc.errors()[0]
                field = ".".join(str(part) for part in error["loc"]) or None
                if error["type"] == "json_invalid":
                    raise LoaderError(path, number, None, f"invalid JSON: {error['msg']}") from None
                raise LoaderError(path, number, field, error["msg"]) from None


def read_tasks(task_set: Path) -> list[TaskRecord]:
    return [record for _, record in iter_tasks(task_set)]


def write_tasks(task_set: Path, records: list[TaskRecord]) -> Path:
    """Write atomically, one compact JSON line per record, in the given order."""
    task_set.mkdir(parents=True, exist_ok=True)
    path = task_set / TASKS_FILE
    temporary = path.with_suffix(".jsonl.part")
    with temporary.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(record.model_dump_json(exclude_none=False) + "\n")
    temporary.replace(path)
    return path


def find_task(task_set: Path, task_id: str) -> TaskRecord:
    for _, record in iter_tasks(task_set):
        if record.id == task_id:
            return record
    raise KeyError(f"no task {task_id!r} in {tasks_file(task_set)}")


@dataclass(frozen=True)
class Problem:
    line: int
    task_id: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line} ({self.task_id}): {self.field}: {self.message}"


def _check_record(root: Path, line: int, record: TaskRecord) -> list[Problem]:
    found: list[Problem] = []

    def problem(field: str, message: str) -> None:
        found.append(Problem(line, record.id, field, message))

    grading = record.grading
    if grading.method == "execution":
        if not grading.tests:
            problem("grading.tests", "execution grading needs tests")
        if not record.entry_point:
            problem("entry_point", "execution grading needs an entry point")
    elif grading.method == "exact_match" and record.expected_answer is None:
        problem("expected_answer", "exact_match grading needs an expected answer")
    elif grading.method == "multiple_choice" and (not record.choices or record.expected_answer is None):
        problem("choices", "multiple_choice grading needs choices and an expected answer")
    if record.metadata.image_required and not record.images:
        problem("images", "image_required but no image")
    for index, image in enumerate(record.images):
        path = root / image.path
        if not path.is_file():
            problem(f"images.{index}.path", f"{image.path} does not exist")
            continue
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != image.sha256:
            problem(f"images.{index}.sha256", f"{image.path} does not have the recorded sha256")
        with Image.open(path) as opened:
            if opened.size != (image.width, image.height):
                problem(
                    f"images.{index}.width", f"recorded {image.width}x{image.height}, file is {opened.size}"
                )
    return found


def _grade_pair(record_json: str) -> tuple[str, str, str, str]:
    """Worker: (id, canonical verdict, its detail, verdict of a deliberately wrong answer)."""
    from benchmark.grading import grade

    record = TaskRecord.model_validate_json(record_json)
    good = grade(record, f"```python\n{record.canonical_solution}\n```")
    wrong = f"```python\ndef {record.entry_point}(*args, **kwargs):\n    return None\n```"
    bad = grade(record, wrong)
    return record.id, good.verdict, good.detail, bad.verdict


def validate(task_set: Path, *, run_solutions: bool = False, workers: int = 1) -> tuple[int, list[Problem]]:
    """(records checked, problems). ``run_solutions`` grades each canonical solution and a wrong one."""
    root = task_set if task_set.is_dir() else task_set.parent
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    runnable: list[tuple[int, TaskRecord]] = []
    count = 0
    for line, record in iter_tasks(task_set):
        count += 1
        if record.id in seen:
            problems.append(Problem(line, record.id, "id", f"duplicate of line {seen[record.id]}"))
        seen.setdefault(record.id, line)
        problems += _check_record(root, line, record)
        if run_solutions and record.grading.method == "execution" and record.canonical_solution:
            runnable.append((line, record))
    if runnable:
        lines = {record.id: line for line, record in runnable}
        payloads = [record.model_dump_json() for _, record in runnable]
        with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
            for task_id, verdict, detail, wrong in pool.map(_grade_pair, payloads, chunksize=4):
                if verdict != "pass":
                    problems.append(
                        Problem(lines[task_id], task_id, "canonical_solution", f"{verdict}: {detail}")
                    )
                if wrong == "pass":
                    problems.append(
                        Problem(lines[task_id], task_id, "grading.tests", "a wrong answer passes")
                    )
    return count, problems


def dump_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")
