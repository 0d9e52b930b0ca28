"""The translation checks: every real entry passes, and each kind of planted fault is caught."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmark.tasks.docstrings import docstrings
from benchmark.tasks.loaders.humaneval import read_problems
from benchmark.tasks.translation_checks import (
    LIMITS,
    Finding,
    check_entry,
    check_translations,
    split_docstring,
)
from benchmark.tasks.translations import TRANSLATIONS_DIR, available_languages

PROMPTS = {problem.task_id: problem.prompt for problem in read_problems()}


def _entry(language: str, task_id: str) -> list[str]:
    data = json.loads((TRANSLATIONS_DIR / f"{language}.json").read_text(encoding="utf-8"))
    entry = data[task_id]
    assert isinstance(entry, list)
    return entry


def _checks(findings: list[Finding]) -> set[str]:
    return {finding.check for finding in findings}


def test_every_language_has_limits() -> None:
    assert set(available_languages()) <= set(LIMITS)


def test_every_real_entry_passes() -> None:
    report = check_translations(PROMPTS, TRANSLATIONS_DIR, available_languages())
    assert report.entries, "no translation files found"
    assert all(count >= 80 for count in report.entries.values()), report.entries
    assert [str(f) for f in report.findings] == []


def test_code_lines_are_found() -> None:
    (original,) = docstrings(PROMPTS["HumanEval/72"])
    split = split_docstring(original.content)
    assert "will_it_fly([1, 2], 5) ➞ False" in split.code
    assert not any("Example" in line for line in split.code)
    (original,) = docstrings(PROMPTS["HumanEval/68"])
    split = split_docstring(original.content)
    assert "[4,2,3]" in split.code  # "Input: [4,2,3]": the label is prose, the list is code
    assert "Input" in split.prose


@pytest.mark.parametrize(
    ("language", "task_id", "old", "new", "check", "named"),
    [
        pytest.param(
            "zh", "HumanEval/12", "    'ccc'\n", "    'bb'\n", "code", "'ccc'", id="changed-doctest-output"
        ),
        pytest.param(
            "ru",
            "HumanEval/72",
            "will_it_fly([3], 5) ➞ True",
            "will_it_fly([3], 5) ➞ Истина",
            "code",
            "will_it_fly([3], 5) ➞ True",
            id="changed-example-line",
        ),
        pytest.param("ja", "HumanEval/12", "None", "なし", "placeholder", "'None'", id="lost-placeholder"),
    ],
)
def test_planted_fault_is_caught(
    language: str, task_id: str, old: str, new: str, check: str, named: str
) -> None:
    """A real entry with one fault planted: exactly that check fires, and its reason names what broke."""
    entry = _entry(language, task_id)
    bad = [entry[0].replace(old, new)]
    assert bad != entry
    findings = check_entry(task_id, language, PROMPTS[task_id], bad)
    assert _checks(findings) == {check}
    assert named in findings[0].reason


def test_prose_in_the_wrong_script_is_caught() -> None:
    (original,) = docstrings(PROMPTS["HumanEval/12"])
    pinyin = original.content.replace(
        "Out of list of strings, return the longest one. Return the first one in case of multiple",
        "Cong zifuchuan liebiao zhong fanhui zui chang de yige. Ruguo you duoge xiangtong changdu de",
    ).replace(
        "strings of the same length. Return None in case the input list is empty.",
        "zifuchuan, fanhui diyige. Shuru liebiao wei kong shi fanhui None.",
    )
    findings = check_entry("HumanEval/12", "zh", PROMPTS["HumanEval/12"], [pinyin])
    assert "script" in _checks(findings)


@pytest.mark.parametrize(("language", "written_in"), [("es", "fr"), ("pt", "de")])
def test_another_latin_language_is_caught(language: str, written_in: str) -> None:
    other = _entry(written_in, "HumanEval/129")
    findings = check_entry("HumanEval/129", language, PROMPTS["HumanEval/129"], other)
    assert any(f.check == "script" and f"reads as {written_in}" in f.reason for f in findings)


def test_truncated_translation_is_caught() -> None:
    entry = _entry("ru", "HumanEval/12")
    first_sentence_only = [entry[0].split(".", 1)[0] + ".\n" + entry[0][entry[0].index("    >>>") :]]
    findings = check_entry("HumanEval/12", "ru", PROMPTS["HumanEval/12"], first_sentence_only)
    assert "length" in _checks(findings)


@pytest.mark.parametrize("language", ["ar", "de"])
def test_untranslated_english_sentence_is_caught(language: str) -> None:
    entry = _entry(language, "HumanEval/12")
    english = " Return None in case the input list is empty and do not raise.\n"
    bad = [entry[0].replace("\n", english, 1)]
    findings = check_entry("HumanEval/12", language, PROMPTS["HumanEval/12"], bad)
    assert "english" in _checks(findings)


def test_english_copied_verbatim_is_caught() -> None:
    (original,) = docstrings(PROMPTS["HumanEval/12"])
    findings = check_entry("HumanEval/12", "hi", PROMPTS["HumanEval/12"], [original.content])
    assert {"english", "script"} <= _checks(findings)


def test_structure_faults_come_from_localize() -> None:
    findings = check_entry("HumanEval/12", "hi", PROMPTS["HumanEval/12"], ["no doctests"])
    assert _checks(findings) == {"structure"}
    assert "'>>>' line" in findings[0].reason


def test_a_file_with_a_planted_entry(tmp_path: Path) -> None:
    data = {task_id: _entry("pt", task_id) for task_id in ("HumanEval/0", "HumanEval/12")}
    data["HumanEval/12"] = [data["HumanEval/12"][0].replace("    'a'\n", "    'z'\n")]
    (tmp_path / "pt.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    (tmp_path / "de.json").write_text("{not json", encoding="utf-8")
    report = check_translations(PROMPTS, tmp_path, ["pt", "de", "fr"])
    assert report.entries == {"pt": 2}
    assert sorted((f.language, f.task_id, f.check) for f in report.findings) == [
        ("de", "*", "structure"),
        ("pt", "HumanEval/12", "code"),
    ]


def test_the_cli_reports_findings_and_fails(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from benchmark.tasks.cli import app

    data = {"HumanEval/12": [_entry("ar", "HumanEval/12")[0].replace("    'a'\n", "    'b'\n")]}
    (tmp_path / "ar.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    result = CliRunner().invoke(app, ["check-translations", "--translations", str(tmp_path)])
    assert result.exit_code == 2
    assert "ar HumanEval/12: code: code line changed or missing: \"'a'\"" in result.output
    ok = CliRunner().invoke(app, ["check-translations", "--languages", "ja"])
    assert ok.exit_code == 0
    assert ok.output.startswith("ok: ")
