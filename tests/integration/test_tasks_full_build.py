"""The whole M3-HumanEval build, and every canonical solution graded in every language (slow: ~2 min)."""

from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from benchmark.grading import grade
from benchmark.tasks.builder import BuildOptions, build
from benchmark.tasks.languages import LANGUAGES
from benchmark.tasks.schema import TaskRecord
from benchmark.tasks.taskset import read_tasks, validate
from benchmark.tasks.translations import TRANSLATIONS_DIR, available_languages

pytestmark = pytest.mark.slow


def _grade_canonical(record_json: str) -> tuple[str, str, str]:
    record = TaskRecord.model_validate_json(record_json)
    result = grade(record, f"```python\n{record.canonical_solution}\n```")
    return record.id, result.verdict, result.detail


@pytest.fixture(scope="module")
def full_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("m3-humaneval")
    report = build(BuildOptions(out_dir=out))
    translated = set(available_languages(TRANSLATIONS_DIR))
    assert report.problems["en"] == 164
    for code in LANGUAGES:
        if code != "en" and code in translated:
            assert report.problems[code] == 80, (code, report.skipped)
    assert not report.skipped
    return out


def test_counts_and_manifest(full_set: Path) -> None:
    records = read_tasks(full_set)
    by_language = Counter(record.natural_language for record in records if record.metadata.group == "image")
    assert by_language["en"] == 164
    manifest = json.loads((full_set / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["records"] == len(records) == 2 * sum(by_language.values())
    count, problems = validate(full_set)
    assert (count, problems) == (len(records), [])


def test_every_canonical_solution_passes_in_every_language(full_set: Path) -> None:
    image_records = [record for record in read_tasks(full_set) if record.metadata.group == "image"]
    with ProcessPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(_grade_canonical, [r.model_dump_json() for r in image_records], chunksize=8))
    failures = [(task_id, verdict, detail) for task_id, verdict, detail in results if verdict != "pass"]
    assert not failures
    languages = Counter(task_id.split("/")[2] for task_id, _, _ in results)
    assert set(languages) == {code for code in LANGUAGES if languages[code]}
