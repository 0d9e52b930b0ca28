"""The whole M3-HumanEval build, and every record's canonical solution graded pass, a wrong answer fail.

Slow: the build renders 1,640 statement images (~30 s of CPU) and the grading runs 328 sandboxed grades.
Every image task and text-only twin of a problem carries the same canonical solution, prelude, tests and
limits (the tests are the English ones in every language), so each distinct (program, tests) pair is
graded once and the verdict holds for every record that has it: 164 canonical + 164 wrong gradings cover
all 3,280 records. The test checks that the pairs really are shared rather than assuming it.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from benchmark.grading import grade
from benchmark.tasks.builder import BuildOptions, build
from benchmark.tasks.languages import LANGUAGES
from benchmark.tasks.schema import TaskRecord
from benchmark.tasks.taskset import read_tasks, validate
from benchmark.tasks.translations import TRANSLATIONS_DIR

pytestmark = pytest.mark.slow
PROBLEMS = 164


def _expected_problems(code: str) -> int:
    if code == "en":
        return PROBLEMS
    path = TRANSLATIONS_DIR / f"{code}.json"
    return len(json.loads(path.read_text(encoding="utf-8"))) if path.exists() else 0


def _grading_key(record: TaskRecord) -> str:
    grading = record.grading
    return json.dumps([record.canonical_solution, record.entry_point, grading.prelude, grading.tests,
                       grading.timeout_s, grading.memory_mb])  # fmt: skip


def _grade_pair(record_json: str) -> tuple[str, str, str, str, str]:
    """(key, canonical verdict, its detail, wrong answer's verdict, its detail)."""
    record = TaskRecord.model_validate_json(record_json)
    good = grade(record, f"```python\n{record.canonical_solution}\n```")
    wrong = grade(record, f"```python\ndef {record.entry_point}(*args, **kwargs):\n    return None\n```")
    return _grading_key(record), good.verdict, good.detail, wrong.verdict, wrong.detail


@pytest.fixture(scope="module")
def full_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # M3BENCH_FULL_BUILD_OUT keeps the build (an empty or new directory) for the datasheet's counts table
    kept = os.environ.get("M3BENCH_FULL_BUILD_OUT")
    out = Path(kept) if kept else tmp_path_factory.mktemp("m3-humaneval")
    if kept:
        assert not out.exists() or not any(out.iterdir()), (
            f"{out} must be empty: the test builds from scratch"
        )
    report = build(BuildOptions(out_dir=out))
    assert not report.skipped, [str(s) for s in report.skipped]
    assert report.problems == {code: _expected_problems(code) for code in LANGUAGES}
    return out


def test_counts_and_manifest(full_set: Path) -> None:
    records = read_tasks(full_set)
    image = Counter(r.natural_language for r in records if r.metadata.group == "image")
    text = Counter(r.natural_language for r in records if r.metadata.group == "text-only")
    assert image == text == {code: _expected_problems(code) for code in LANGUAGES}
    assert all(len(r.images) == 1 for r in records if r.metadata.group == "image")
    manifest = json.loads((full_set / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["records"] == len(records) == 2 * sum(image.values())
    assert manifest["skipped_translations"] == []
    count, problems = validate(full_set)  # ids unique, every image present with its hash and size
    assert (count, problems) == (len(records), [])


def test_complete_set_has_1640_image_tasks_and_1640_twins(full_set: Path) -> None:
    records = read_tasks(full_set)
    groups = Counter(record.metadata.group for record in records)
    if any(_expected_problems(code) < PROBLEMS for code in LANGUAGES):
        pytest.fail(f"translations incomplete: {groups} ({ {c: _expected_problems(c) for c in LANGUAGES} })")
    assert groups == {"image": 1640, "text-only": 1640}


def test_every_canonical_solution_passes_and_a_wrong_answer_fails(full_set: Path) -> None:
    records = read_tasks(full_set)
    by_key: dict[str, list[str]] = defaultdict(list)
    representative: dict[str, TaskRecord] = {}
    for record in records:
        key = _grading_key(record)
        by_key[key].append(record.id)
        representative.setdefault(key, record)
    assert len(by_key) == PROBLEMS  # one (program, tests) pair per problem, shared by all its records
    with ProcessPoolExecutor(max_workers=2) as pool:
        payloads = [record.model_dump_json() for record in representative.values()]
        results = list(pool.map(_grade_pair, payloads, chunksize=4))
    assert {key for key, *_ in results} == set(by_key)
    failures = [
        (by_key[key][0], verdict, detail) for key, verdict, detail, _, _ in results if verdict != "pass"
    ]
    assert failures == []
    wrong = [(by_key[key][0], verdict, detail) for key, _, _, verdict, detail in results if verdict != "fail"]
    assert wrong == []
    covered = sum(len(by_key[key]) for key, *_ in results)
    assert covered == len(records)
    print(f"\n{len(results) * 2} distinct gradings cover {covered} records x (canonical, wrong)")
