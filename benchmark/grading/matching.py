"""Graders for answers that are text, not programs: exact match and multiple choice."""

from __future__ import annotations

import re
import unicodedata

from benchmark.grading.result import Verdict

_ANSWER_WORDS = "answer|final answer|réponse|respuesta|resposta|antwort|ответ|答案|答え|回答|الإجابة|उत्तर"
_ANSWER_LINE = re.compile(rf"(?:{_ANSWER_WORDS})\s*[:：]\s*(.+)", re.IGNORECASE)


def normalize(text: str) -> str:
    """NFKC, case-folded, whitespace collapsed, surrounding quotes and final period removed."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    folded = " ".join(folded.split())
    return folded.strip().strip("\"'`").rstrip(".。").strip()


def _candidates(answer: str) -> list[str]:
    """The whole answer, the text after the last 'Answer:' marker, and the last non-empty line."""
    found = [answer]
    markers = _ANSWER_LINE.findall(answer)
    if markers:
        found.append(markers[-1])
    lines = [line for line in answer.splitlines() if line.strip()]
    if lines:
        found.append(lines[-1])
    return found


def grade_exact(answer: str, expected: str) -> tuple[Verdict, str]:
    target = normalize(expected)
    for candidate in _candidates(answer):
        if normalize(candidate) == target:
            return "pass", "matches the expected answer"
    return "fail", f"expected {expected[:80]!r}, got {answer.strip()[:80]!r}"


def _letter(index: int) -> str:
    return chr(ord("A") + index)


def chosen_option(answer: str, choices: list[str]) -> int | None:
    """Index of the option the answer picks: an explicit letter, else the exact text of one choice."""
    letters = "".join(_letter(i) for i in range(len(choices)))
    standalone = re.compile(rf"(?<![A-Za-z])\(?([{letters}])\)?(?![A-Za-z])")
    for candidate in reversed(_candidates(answer)):
        stripped = unicodedata.normalize("NFKC", candidate).strip()
        exact = re.fullmatch(rf"\(?([{letters}])[\).:]?(?:\s.*)?", stripped, re.DOTALL)
        if exact:
            return ord(exact.group(1)) - ord("A")
        texts = [normalize(choice) for choice in choices]
        if normalize(stripped) in texts:
            return texts.index(normalize(stripped))
    marked = _ANSWER_LINE.findall(answer)
    if marked:
        match = standalone.search(marked[-1])
        if match:
            return ord(match.group(1)) - ord("A")
    return None


def grade_choice(answer: str, choices: list[str], expected: str) -> tuple[Verdict, str]:
    """``expected`` is a letter (A, B, ...) or the text of the right choice."""
    expected_index: int | None = None
    if re.fullmatch(r"[A-Z]", expected.strip()) and ord(expected.strip()) - ord("A") < len(choices):
        expected_index = ord(expected.strip()) - ord("A")
    else:
        texts = [normalize(choice) for choice in choices]
        if normalize(expected) in texts:
            expected_index = texts.index(normalize(expected))
    if expected_index is None:
        return "error", f"expected answer {expected[:40]!r} is neither a letter nor one of the choices"
    picked = chosen_option(answer, choices)
    if picked is None:
        return "fail", "no choice found in the answer"
    if picked == expected_index:
        return "pass", f"chose {_letter(picked)}"
    return "fail", f"chose {_letter(picked)}, expected {_letter(expected_index)}"
