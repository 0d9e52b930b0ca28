"""Grading: one call per answer, ``grade(task, answer) -> GradeResult``.

The method comes from ``task.grading.method``: ``execution`` (sandboxed pass@1, see ``execution``),
``exact_match`` or ``multiple_choice`` (see ``matching``). ``grade`` never raises for a bad answer or a
broken task: every outcome is a verdict with a reason. Arguments and result are picklable and no state is
shared between calls, so process-pool workers and concurrent processes may all call it.
"""

from __future__ import annotations

import time

from benchmark.grading.execution import Limits, run_tests
from benchmark.grading.extract import extract_program
from benchmark.grading.matching import grade_choice, grade_exact
from benchmark.grading.result import GradeResult, Verdict
from benchmark.grading.sandbox import SandboxUnavailableError
from benchmark.tasks.schema import TaskRecord

__all__ = ["GradeResult", "Verdict", "grade"]


def _grade_execution(task: TaskRecord, answer: str) -> tuple[Verdict, str]:
    if task.programming_language.lower() not in ("python", "py", "python3"):
        return "error", f"execution grading runs Python only, not {task.programming_language}"
    if not task.grading.tests or not task.entry_point:
        return "error", "task has no tests or no entry point to execute"
    prelude = task.grading.prelude or ""
    extracted = extract_program(answer, task.entry_point, prelude)
    if extracted is None:
        return "fail", "no code found in the answer"
    limits = Limits(timeout_s=task.grading.timeout_s, memory_mb=task.grading.memory_mb)
    try:
        verdict, detail = run_tests(prelude, extracted.program, task.grading.tests, task.entry_point, limits)
    except SandboxUnavailableError as exc:
        return "error", str(exc)
    except OSError as exc:
        return "error", f"could not start the sandbox: {exc}"
    return verdict, f"{detail} [{extracted.how}]"


def grade(task: TaskRecord, answer: str) -> GradeResult:
    """Grade one answer to one task."""
    started = time.perf_counter()
    method = task.grading.method
    if method == "execution":
        verdict, detail = _grade_execution(task, answer)
    elif method == "exact_match":
        if task.expected_answer is None:
            verdict, detail = "error", "exact_match task without expected_answer"
        else:
            verdict, detail = grade_exact(answer, task.expected_answer)
    elif not task.choices or task.expected_answer is None:
        verdict, detail = "error", "multiple_choice task without choices or expected_answer"
    else:
        verdict, detail = grade_choice(answer, task.choices, task.expected_answer)
    return GradeResult(verdict=verdict, detail=detail, duration_s=time.perf_counter() - started)
