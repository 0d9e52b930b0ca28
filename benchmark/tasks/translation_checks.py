"""Automated checks of the translated docstrings (``data/translations/<lang>.json``) against the English.

``localize`` (docstrings.py) decides whether an entry can be used at all; these checks judge whether it is
a faithful translation, per entry and language, and report every finding instead of refusing:

* ``code``: every code line of the English docstring is in the translation verbatim: ``>>>`` lines, their
  expected-output lines, and example lines such as ``f(x) == y``, ``f(x) ➞ y`` or ``x = f(y)`` (a line is
  code when it parses as Python once the example arrow is read as ``==``; a trailing ``# comment`` and a
  leading bullet are not part of it);
* ``placeholder``: what the English prose quotes from the code is kept: calls ``f(...)``, quoted
  literals, identifiers (``snake_case``, ``camelCase``, ``True``/``False``/``None``) and numbers;
* ``script``: the prose (code and placeholders removed) is mostly in the language's script (non-Latin
  languages), or, for Latin-script languages, is made of the language's own function words and few English
  ones;
* ``length``: the prose is within per-language bounds of the English prose's length;
* ``english``: no English sentence is left as is: an English prose sentence (4 words or more) copied
  verbatim, or a run of 6 Latin words of the translation's prose with 3 English function words in it.

The thresholds are per language (``LIMITS``) and were set from the distribution over the entries of
HumanEval/0..79 with a margin; docs/tasks.md gives the measurements and the reasons.
"""

from __future__ import annotations

import ast
import io
import json
import re
import tokenize
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from benchmark.python_source import parses
from benchmark.tasks.docstrings import TranslationRejectedError, docstrings, localize

# --- what is code -------------------------------------------------------------------------------------

_ARROW = re.compile(r"\s*(?:==>|=>|➞|->|→)\s*")
_BULLET = re.compile(r"^(?:[*\-•]\s+)")
_CALL_START = re.compile(r"[A-Za-z_][\w.]*\(")
_QUOTED = re.compile(r"""(?<![A-Za-z0-9_'"])('[^'\n]{0,60}'|"[^"\n]{0,60}")(?![A-Za-z0-9_'"])""")
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w])")
_IDENT = re.compile(r"\b(?:[A-Za-z]\w*_\w*|[a-z]+[A-Z]\w*|True|False|None)\b")
_BACKTICKED = re.compile(r"`([^`\n]+)`")
_SENTENCE_END = re.compile(r"(?<=[.!?。！？؟।])\s+|(?<=[。！？؟।])")
_LATIN_WORD = re.compile(r"[A-Za-z]+(?:'[a-z]+)?")


_CODE_NODES = (ast.Call, ast.Subscript, ast.List, ast.Tuple, ast.Dict, ast.Set, ast.Compare, ast.BinOp,
               ast.Assign, ast.Assert)  # fmt: skip
_LABEL = re.compile(r"^([^\W\d_][\w ]{0,30}):\s+(\S.*)$")  # "Input: [1, 2]", "Output: 3"


def _code_part(line: str) -> str | None:
    """The code of a line that is an example or statement (``f(x) ➞ y``), or None for prose.

    A line is code when it parses as Python (the example arrow read as ``==``) and has a call, a
    subscript, a display, a comparison, arithmetic, an assignment or a number in it. A prose label before
    a colon ("Input: [1, 2]"), a leading ``return`` or bullet and a trailing ``# comment`` are not part of
    the code: translators translate them.
    """
    text = _BULLET.sub("", line.strip())
    label = _LABEL.match(text)
    if label:
        text = label.group(2)
    candidates = [text.split("#", 1)[0].rstrip()] if "#" in text else []
    candidates.append(text)
    for found in candidates:
        candidate = found.removeprefix("return ").strip()
        parsed = _ARROW.sub(" == ", candidate).rstrip(".,;")
        if not parsed:
            continue
        try:
            tree = ast.parse(parsed)
        except (SyntaxError, ValueError):
            continue
        top = tree.body[0] if len(tree.body) == 1 else None
        if isinstance(top, ast.Expr) and isinstance(top.value, ast.Tuple) and candidate[0] not in "([":
            continue  # 'One', 'Two', ... or 'Uranus, Neptune.': an enumeration in a sentence
        nodes = list(ast.walk(tree))
        literal = any(isinstance(n, ast.Constant) and n.value is not Ellipsis for n in nodes)
        if any(isinstance(n, _CODE_NODES) for n in nodes) or (
            literal and not re.search(r"[^\W\d_]{2,}\s+[^\W\d_]{2,}", candidate)
        ):
            return candidate.rstrip(".,;")
    return None


def _balanced_calls(text: str) -> list[str]:
    """``name(...)`` spans with balanced parentheses."""
    found = []
    for match in _CALL_START.finditer(text):
        if match.start() > 0 and (text[match.start() - 1].isalnum() or text[match.start() - 1] == "_"):
            continue
        depth, position = 0, match.end() - 1
        while position < len(text):
            char = text[position]
            depth += char == "("
            depth -= char == ")"
            if depth == 0:
                found.append(text[match.start() : position + 1])
                break
            position += 1
    return found


@dataclass(frozen=True)
class Split:
    """One docstring split into code lines (verbatim), prose and the placeholders the prose carries."""

    code: list[str]  # doctest lines, their outputs and example lines: must be in the translation verbatim
    prose: str
    placeholders: list[str]
    exact: frozenset[str] = frozenset()  # the doctest and output lines: must be whole lines


def split_docstring(text: str) -> Split:
    code: list[str] = []
    exact: list[str] = []
    prose_lines: list[str] = []
    in_output = False
    for line in text.splitlines():
        stripped = line.strip()
        if ">>>" in stripped:
            code.append(stripped)
            exact.append(stripped)
            in_output = True
            continue
        if not stripped:
            in_output = False
            continue
        if in_output:
            code.append(stripped)
            exact.append(stripped)
            continue
        part = _code_part(stripped)
        if part is not None:
            code.append(part)
            rest = stripped.split("#", 1)[0].replace(part, " ", 1).rstrip(".,;")
            if re.search(r"[^\W\d_]{2,}", rest):
                prose_lines.append(rest)  # "return" or a label around the code is prose; a comment is not
            continue
        prose_lines.append(stripped)
    prose = " ".join(prose_lines)
    placeholders: list[str] = []
    for line in prose_lines:  # a call does not span lines; its arguments must be code, not words
        placeholders += [call for call in _balanced_calls(line) if parses(call)]
    for pattern in (_QUOTED, _BACKTICKED):
        placeholders += [m.group(0) for m in pattern.finditer(prose) if not _is_term(m.group(0), code)]
    placeholders += [m.group(0) for m in _IDENT.finditer(_remove(prose, placeholders))]
    placeholders += [m.group(0) for m in _NUMBER.finditer(_remove(prose, placeholders))]
    return Split(code, prose, list(dict.fromkeys(placeholders)), frozenset(exact))


def _is_term(quoted: str, code: list[str]) -> bool:
    """A quoted plain word the examples never use ('Note: "word" is ...'): prose, translated."""
    inner = quoted[1:-1]
    return (
        quoted[0] == '"'
        and inner.isalpha()
        and inner.islower()
        and len(inner) >= 3
        and not any(inner in line for line in code)
    )


def _remove(text: str, pieces: Iterable[str]) -> str:
    for piece in sorted(set(pieces), key=len, reverse=True):
        text = text.replace(piece, " ")
    return text


def _strip_code(prose: str, names: Iterable[str]) -> str:
    """Prose without calls, quoted literals, identifiers, the prompt's own names, numbers."""
    text = _remove(prose, _balanced_calls(prose))
    text = _BACKTICKED.sub(" ", _QUOTED.sub(" ", text))
    text = _IDENT.sub(" ", text)
    name_set = {n for n in names if n}
    if name_set:
        text = re.sub(r"[A-Za-z_]\w*", lambda m: " " if m.group(0) in name_set else m.group(0), text)
    return _NUMBER.sub(" ", text)


def code_names(prompt: str) -> set[str]:
    """Every name in the prompt outside its docstrings (parameters, functions, imports)."""
    names: set[str] = set()
    try:
        for token in tokenize.generate_tokens(io.StringIO(prompt).readline):
            if token.type == tokenize.NAME:
                names.add(token.string)
    except (tokenize.TokenError, SyntaxError):
        pass
    return names - {"def", "return", "from", "import", "for", "in", "if", "else", "and", "or", "not"}


# --- languages ------------------------------------------------------------------------------------------

_RANGES: dict[str, tuple[tuple[int, int], ...]] = {
    "Han": ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x2FA1F)),
    "Kana": ((0x3040, 0x30FF), (0x31F0, 0x31FF), (0xFF66, 0xFF9F)),
    "Cyrillic": ((0x0400, 0x052F),),
    "Arabic": ((0x0600, 0x06FF), (0x0750, 0x077F), (0x08A0, 0x08FF), (0xFB50, 0xFDFF), (0xFE70, 0xFEFF)),
    "Devanagari": ((0x0900, 0x097F), (0xA8E0, 0xA8FF)),
}


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# English function words that are not words of es/fr/de/pt (so "a", "an", "in", "for", "was", "will",
# "also" are left out: German or Portuguese words too).
ENGLISH_FUNCTION_WORDS = _words(
    "the of and that is are be been with which should given returns return if it its this these those "
    "from each all then than there their they them when where whose would can could must "
    "has have had into only such any every other but by at we you your our"
)
_TARGET_FUNCTION_WORDS: dict[str, frozenset[str]] = {
    "es": _words("el la los las de del que y en un una por para con se su sus es al lo si no o"),
    "fr": _words(
        "le la les de des du que et en un une pour par avec se sa son ses est au aux si ne "
        "pas ou qui dans sur"
    ),
    "de": _words(
        "der die das den dem des und ist ein eine einer einen eines zu von mit sich im in "
        "auf wenn nicht oder für sie es wird werden"
    ),
    "pt": _words(
        "o a os as de do da dos das que e em um uma por para com se seu sua é ao no na nos nas não ou"
    ),
}
# Words only one of the four languages has (and not one-letter ones): which language a text is in.
_DISTINCT: dict[str, frozenset[str]] = {
    code: frozenset(w for w in words if len(w) > 1)
    - frozenset().union(*(other for name, other in _TARGET_FUNCTION_WORDS.items() if name != code))
    for code, words in _TARGET_FUNCTION_WORDS.items()
}
# Spellings only one of them has, counted like one more distinct word per occurrence.
_MARKS: dict[str, re.Pattern[str]] = {
    "es": re.compile(r"ñ|¿|¡|ción\b|ciones\b", re.IGNORECASE),
    "fr": re.compile(r"è|ê|œ|\b(?:l|d|qu|n|s)['’](?=[^\W\d_])", re.IGNORECASE),
    "de": re.compile(r"ß|ä|ö|ü", re.IGNORECASE),
    "pt": re.compile(r"ã|õ|ção\b|ções\b", re.IGNORECASE),
}
OTHER_LANGUAGE_MARGIN = 0.10  # another language's distinct words outweigh the target's by this: flagged


@dataclass(frozen=True)
class Limits:
    """What an entry of one language must meet (set from HumanEval/0..79, docs/tasks.md)."""

    scripts: tuple[str, ...] = ()  # non-Latin: the script(s) the prose letters must mostly be in
    min_script_share: float = 0.0
    min_target_words: float = 0.0  # Latin: share of the prose's words that are the language's function words
    max_english_words: float = 1.0  # Latin: share of the prose's words that are English function words
    min_ratio: float = 0.0  # prose length (characters, no spaces) / English prose length
    max_ratio: float = 10.0


LIMITS: dict[str, Limits] = {
    "zh": Limits(("Han",), 0.50, min_ratio=0.20, max_ratio=0.85),
    "ja": Limits(("Han", "Kana"), 0.55, min_ratio=0.25, max_ratio=1.20),
    "ru": Limits(("Cyrillic",), 0.70, min_ratio=0.65, max_ratio=2.30),
    "ar": Limits(("Arabic",), 0.65, min_ratio=0.45, max_ratio=2.20),
    "hi": Limits(("Devanagari",), 0.60, min_ratio=0.55, max_ratio=2.20),
    "es": Limits(min_target_words=0.10, max_english_words=0.10, min_ratio=0.70, max_ratio=2.20),
    "fr": Limits(min_target_words=0.10, max_english_words=0.10, min_ratio=0.70, max_ratio=2.30),
    "de": Limits(min_target_words=0.05, max_english_words=0.10, min_ratio=0.75, max_ratio=2.60),
    "pt": Limits(min_target_words=0.10, max_english_words=0.10, min_ratio=0.65, max_ratio=2.10),
}
MIN_PROSE_FOR_RATIO = 40  # English prose shorter than this (characters) gets no length check: too noisy
MIN_LETTERS_FOR_SCRIPT = 12  # fewer prose letters than this: no script check
MIN_WORDS_FOR_LATIN = 10  # fewer prose words than this: no function-word check (one short phrase)


def _in_script(char: str, scripts: tuple[str, ...]) -> bool:
    code = ord(char)
    return any(lo <= code <= hi for script in scripts for lo, hi in _RANGES[script])


def _letters(text: str) -> list[str]:
    return [c for c in text if unicodedata.category(c)[0] in "LM"]


# --- the checks ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    task_id: str
    language: str
    check: str  # structure | code | placeholder | script | length | english
    reason: str

    def __str__(self) -> str:
        return f"{self.language} {self.task_id}: {self.check}: {self.reason}"


@dataclass(frozen=True)
class EntryMeasures:
    """The numbers the limits apply to (None where the entry is too short to measure)."""

    script_share: float | None
    target_words: float | None
    english_words: float | None
    ratio: float | None
    other_language: tuple[str, float] | None = None  # (code, its distinct-word share minus the target's)


def _compact(text: str) -> int:
    return len(re.sub(r"\s+", "", text))


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


def measure(language: str, prompt: str, translated: list[str]) -> EntryMeasures:
    names = code_names(_without_docstrings(prompt))
    english = [split_docstring(d.content) for d in docstrings(prompt)]
    ours = [split_docstring(text) for text in translated]
    prose_en = " ".join(_strip_code(s.prose, names) for s in english)
    prose = " ".join(_strip_code(s.prose, names) for s in ours)
    limits = LIMITS.get(language, Limits())
    letters = _letters(prose)
    share = None
    if limits.scripts and len(letters) >= MIN_LETTERS_FOR_SCRIPT:
        share = sum(_in_script(c, limits.scripts) for c in letters) / len(letters)
    words = [w.lower() for w in re.findall(r"[^\W\d_]+", prose)]
    target = english_share = None
    other: tuple[str, float] | None = None
    if len(words) >= MIN_WORDS_FOR_LATIN:
        english_share = sum(w in ENGLISH_FUNCTION_WORDS for w in words) / len(words)
        if language in _TARGET_FUNCTION_WORDS:
            target = sum(w in _TARGET_FUNCTION_WORDS[language] for w in words) / len(words)
            shares = {
                code: (sum(w in distinct for w in words) + len(_MARKS[code].findall(prose))) / len(words)
                for code, distinct in _DISTINCT.items()
            }
            rival = max((c for c in shares if c != language), key=lambda c: shares[c])
            other = (rival, shares[rival] - shares[language])
    en_length = _compact(prose_en)
    ratio = _compact(prose) / en_length if en_length >= MIN_PROSE_FOR_RATIO else None
    return EntryMeasures(share, target, english_share, ratio, other)


def _without_docstrings(prompt: str) -> str:
    pieces, position = [], 0
    for d in docstrings(prompt):
        pieces.append(prompt[position : d.start])
        position = d.end
    pieces.append(prompt[position:])
    return "".join(pieces)


def check_entry(task_id: str, language: str, prompt: str, translated: object) -> list[Finding]:
    """Every finding for one entry (empty: the entry passes)."""

    def finding(check: str, reason: str) -> Finding:
        return Finding(task_id, language, check, reason)

    try:
        localize(prompt, translated)
    except TranslationRejectedError as exc:
        return [finding("structure", str(exc))]
    assert isinstance(translated, list)
    names = code_names(_without_docstrings(prompt))
    found: list[Finding] = []
    for index, (original, text) in enumerate(zip(docstrings(prompt), translated, strict=True)):
        english = split_docstring(original.content)
        lines = {line.strip() for line in text.splitlines()}
        where = f"docstring {index + 1}: " if len(translated) > 1 else ""
        for code in english.code:
            if code not in lines and (code in english.exact or code not in text):
                found.append(finding("code", f"{where}code line changed or missing: {code!r}"))
        ours = split_docstring(text)
        flat = re.sub(r"\s+", " ", text)
        for placeholder in english.placeholders:
            if re.sub(r"\s+", " ", placeholder) not in flat:
                found.append(finding("placeholder", f"{where}{placeholder!r} is missing"))
        en_prose = re.sub(r"\s+", " ", english.prose)
        for sentence in _sentences(en_prose):
            words = _LATIN_WORD.findall(_strip_code(sentence, names))
            if len(words) >= 4 and sentence in re.sub(r"\s+", " ", ours.prose):
                found.append(finding("english", f"{where}English sentence left as is: {sentence[:80]!r}"))
        english_run = _english_run(_strip_code(ours.prose, names))
        if english_run:
            found.append(finding("english", f"{where}reads as English: {english_run!r}"))
    found += _limit_findings(task_id, language, measure(language, prompt, translated))
    return list(dict.fromkeys(found))


ENGLISH_WINDOW = 6  # words
ENGLISH_IN_WINDOW = 3  # English function words among them that make the run English


def _english_run(prose: str) -> str | None:
    """The first run of ``ENGLISH_WINDOW`` Latin words with ``ENGLISH_IN_WINDOW`` English function words."""
    words = _LATIN_WORD.findall(prose)
    for start in range(max(1, len(words) - ENGLISH_WINDOW + 1)):  # shorter prose: one window
        window = words[start : start + ENGLISH_WINDOW]
        if sum(w.lower() in ENGLISH_FUNCTION_WORDS for w in window) >= ENGLISH_IN_WINDOW:
            return " ".join(window)
    return None


def _limit_findings(task_id: str, language: str, m: EntryMeasures) -> list[Finding]:
    limits = LIMITS.get(language)
    if limits is None:
        return []
    found = []
    if m.script_share is not None and m.script_share < limits.min_script_share:
        found.append(Finding(task_id, language, "script",
                             f"{m.script_share:.2f} of the prose letters in {'+'.join(limits.scripts)}, "
                             f"below {limits.min_script_share:.2f}"))  # fmt: skip
    if m.target_words is not None and m.target_words < limits.min_target_words:
        found.append(Finding(task_id, language, "script",
                             f"{m.target_words:.2f} of the words are {language} function words, below "
                             f"{limits.min_target_words:.2f}"))  # fmt: skip
    if m.english_words is not None and m.english_words > limits.max_english_words:
        found.append(Finding(task_id, language, "script",
                             f"{m.english_words:.2f} of the words are English function words, above "
                             f"{limits.max_english_words:.2f}"))  # fmt: skip
    if m.other_language is not None and m.other_language[1] >= OTHER_LANGUAGE_MARGIN:
        found.append(Finding(task_id, language, "script",
                             f"reads as {m.other_language[0]}: its own words outweigh {language}'s by "
                             f"{m.other_language[1]:.2f}"))  # fmt: skip
    if m.ratio is not None and not limits.min_ratio <= m.ratio <= limits.max_ratio:
        found.append(Finding(task_id, language, "length",
                             f"prose {m.ratio:.2f}x the English, outside {limits.min_ratio:.2f}-"
                             f"{limits.max_ratio:.2f}"))  # fmt: skip
    return found


@dataclass
class CheckReport:
    entries: dict[str, int] = field(default_factory=dict)  # language -> entries checked
    findings: list[Finding] = field(default_factory=list)


def check_translations(prompts: dict[str, str], directory: Path, languages: Iterable[str]) -> CheckReport:
    """Check every entry of ``<directory>/<lang>.json`` of ``languages``; ``prompts``: id -> prompt."""
    report = CheckReport()
    for language in languages:
        path = directory / f"{language}.json"
        if language == "en" or not path.exists():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            report.findings.append(Finding("*", language, "structure", f"{path.name} unreadable: {exc}"))
            continue
        if not isinstance(data, dict):
            report.findings.append(Finding("*", language, "structure", f"{path.name} is not an object"))
            continue
        report.entries[language] = len(data)
        for task_id, entry in data.items():
            prompt = prompts.get(task_id)
            if prompt is None:
                report.findings.append(Finding(task_id, language, "structure", "no such HumanEval task"))
                continue
            report.findings += check_entry(task_id, language, prompt, entry)
    return report
