"""Execution grading against real HumanEval problems, in the sandbox this machine offers."""

from __future__ import annotations

import pickle
from concurrent.futures import ProcessPoolExecutor

import pytest

from benchmark.grading import GradeResult, grade
from benchmark.grading.sandbox import resolve_mode
from benchmark.tasks.loaders.humaneval import read_problems, to_record
from benchmark.tasks.schema import TaskRecord

PROBLEMS = {problem.task_id: problem for problem in read_problems()}


def task(number: int, timeout_s: float = 3.0) -> TaskRecord:
    record = to_record(PROBLEMS[f"HumanEval/{number}"])
    grading = record.grading.model_copy(update={"timeout_s": timeout_s})
    return record.model_copy(update={"grading": grading})


def fenced(code: str) -> str:
    return f"Here you go:\n```python\n{code}\n```\nThis works because..."


@pytest.mark.parametrize("number", [0, 10, 32, 38, 53, 129, 163])
def test_canonical_solution_passes_and_a_wrong_one_fails(number: int) -> None:
    record = task(number)
    assert record.canonical_solution is not None
    good = grade(record, fenced(record.canonical_solution))
    assert good.verdict == "pass", good.detail
    wrong = grade(record, fenced(f"def {record.entry_point}(*args):\n    return 0\n"))
    assert wrong.verdict == "fail", wrong.detail


def test_body_only_completion_passes() -> None:
    problem = PROBLEMS["HumanEval/2"]
    assert grade(task(2), problem.canonical_solution).verdict == "pass"


def test_helpers_from_the_prompt_are_available_to_the_answer() -> None:
    # decode_cyclic's reference solution calls encode_cyclic, defined only in the prompt
    answer = fenced("def decode_cyclic(s: str):\n    return encode_cyclic(encode_cyclic(s))\n")
    assert grade(task(38), answer).verdict == "pass"


def test_verdicts_carry_reasons() -> None:
    record = task(0, timeout_s=2.0)
    cases = {
        "no code": ("Sorry, I cannot help.", "fail", "no code"),
        "syntax": ("```python\ndef has_close_elements(:\n```", "error", "does not load"),
        "missing": (
            "```python\ndef other():\n    return 1\n```",
            "fail",
            "does not define has_close_elements",
        ),
        "raises": (
            fenced("def has_close_elements(n, t):\n    raise ValueError('nope')"),
            "fail",
            "ValueError",
        ),
        "wrong type": (
            fenced("def has_close_elements(n, t):\n    return iter([])"),
            "fail",
            "not plain data",
        ),
        "loop": (fenced("def has_close_elements(n, t):\n    while True:\n        pass"), "timeout", "2 s"),
    }
    for name, (answer, verdict, words) in cases.items():
        result = grade(record, answer)
        assert (result.verdict, words in result.detail) == (verdict, True), (name, result)
        assert result.duration_s > 0


def test_an_assertion_failure_names_the_test_line() -> None:
    result = grade(task(0), fenced("def has_close_elements(numbers, threshold):\n    return True\n"))
    assert result.verdict == "fail"
    assert "assert candidate(" in result.detail
    assert "test line" in result.detail


def test_unsupported_programming_language_is_an_error() -> None:
    record = task(0).model_copy(update={"programming_language": "java"})
    assert grade(record, "class A {}").verdict == "error"


def _grade_in_worker(payload: bytes) -> GradeResult:
    record, answer = pickle.loads(payload)
    return grade(record, answer)


def test_safe_from_a_process_pool() -> None:
    jobs = []
    for number in (3, 4, 5, 6):
        record = task(number)
        jobs.append(pickle.dumps((record, fenced(record.canonical_solution or ""))))
    with ProcessPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(_grade_in_worker, jobs))
    assert [result.verdict for result in results] == ["pass"] * 4


def test_sandbox_mode_is_known() -> None:
    assert resolve_mode() in ("bwrap", "rlimit")
