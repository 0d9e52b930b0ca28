"""Docstrings, translations and the bidi algorithm: the text side of M3-HumanEval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmark.tasks.bidi import paragraph_is_rtl, visual_runs
from benchmark.tasks.docstrings import (
    TranslationRejectedError,
    docstrings,
    last_function,
    localize,
    signature_of,
)
from benchmark.tasks.languages import LANGUAGES
from benchmark.tasks.loaders.humaneval import read_problems
from benchmark.tasks.translations import load_language

PROBLEMS = {problem.task_id: problem for problem in read_problems()}
TWO_DOCSTRINGS = PROBLEMS["HumanEval/10"].prompt  # is_palindrome + make_palindrome


def test_every_prompt_round_trips_and_has_a_signature() -> None:
    for problem in PROBLEMS.values():
        found = docstrings(problem.prompt)
        assert found, problem.task_id
        assert localize(problem.prompt, [d.content for d in found]) == problem.prompt
        assert signature_of(problem.prompt, problem.entry_point).startswith(f"def {problem.entry_point}(")
        assert last_function(problem.prompt) == problem.entry_point


def test_docstrings_in_order() -> None:
    first, second = docstrings(TWO_DOCSTRINGS)
    assert "palindrome" in first.content
    assert ">>> make_palindrome('')" in second.content
    assert first.start < second.start


def test_localize_substitutes_and_keeps_code() -> None:
    _first, second = docstrings(TWO_DOCSTRINGS)
    doctests = "\n".join(line for line in second.content.splitlines() if ">>>" in line or "'" in line)
    localized = localize(
        TWO_DOCSTRINGS, [" Prüft, ob ein Palindrom vorliegt ", "\n    Kürzestes Palindrom.\n" + doctests]
    )
    assert "Prüft" in localized
    assert "def make_palindrome(string: str) -> str:" in localized
    assert "return string == string[::-1]" in localized


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        (["only one"], r"1 docstring\(s\) given, the prompt has 2"),
        ("not a list", "list of strings"),
        (["a", "b"], "'>>>' line not kept verbatim"),
        (['a """ b', "c"], "quote"),
        (["a", "   "], ">>>"),
    ],
)
def test_localize_refuses_broken_entries(entry: object, reason: str) -> None:
    with pytest.raises(TranslationRejectedError, match=reason):
        localize(TWO_DOCSTRINGS, entry)


def test_bad_entries_are_skipped_with_id_and_language(tmp_path: Path) -> None:
    prompts = {task_id: problem.prompt for task_id, problem in PROBLEMS.items()}
    good = [d.content.replace("Check", "Vérifie") for d in docstrings(PROBLEMS["HumanEval/0"].prompt)]
    (tmp_path / "fr.json").write_text(
        json.dumps({"HumanEval/0": good, "HumanEval/1": ["no doctests"], "HumanEval/999": ["x"]}),
        encoding="utf-8",
    )
    (tmp_path / "de.json").write_text("{not json", encoding="utf-8")
    french = load_language("fr", prompts, tmp_path)
    assert list(french.localized_prompts) == ["HumanEval/0"]
    reasons = {item.task_id: str(item) for item in french.skipped}
    assert reasons["HumanEval/1"].startswith("fr HumanEval/1: docstring 1: '>>>' line")
    assert "no such HumanEval task" in reasons["HumanEval/999"]
    german = load_language("de", prompts, tmp_path)
    assert not german.localized_prompts
    assert "not readable JSON" in str(german.skipped[0])
    assert not load_language("pt", prompts, tmp_path).localized_prompts  # no file: nothing, no crash


def test_ten_languages_with_instructions() -> None:
    assert list(LANGUAGES) == ["en", "zh", "ja", "es", "fr", "de", "ru", "ar", "hi", "pt"]
    for lang in LANGUAGES.values():
        assert "```python" in lang.image_instruction
        assert "```python" in lang.text_instruction
    assert LANGUAGES["ar"].direction == "rtl"


def test_bidi_rtl_paragraph_reverses_runs_but_keeps_latin_order() -> None:
    line = "أرجع True إذا كان"
    assert paragraph_is_rtl(line)
    runs = visual_runs(line, rtl=True)
    assert [(run.text, run.rtl) for run in runs] == [(" إذا كان", True), ("True", False), ("أرجع ", True)]


def test_bidi_ltr_line_with_an_arabic_word() -> None:
    runs = visual_runs("return x (مرحبا) y", rtl=False)
    assert [(run.text, run.rtl) for run in runs] == [("return x (", False), ("مرحبا", True), (") y", False)]
    assert not paragraph_is_rtl("    >>> f(1)")


def test_bidi_numbers_in_rtl_text_stay_left_to_right() -> None:
    runs = visual_runs("العدد 123 هنا", rtl=True)
    assert ("123", False) in [(run.text, run.rtl) for run in runs]
