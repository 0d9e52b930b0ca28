"""Docstrings of a HumanEval prompt: find them in order, check a translation, put it in their place."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from dataclasses import dataclass

_PREFIX = re.compile(r"^[rRuUbBfF]*")


@dataclass(frozen=True)
class Docstring:
    start: int  # offset of the content (after the opening quotes) in the prompt
    end: int  # offset of the closing quotes
    quote: str
    content: str


class TranslationRejectedError(ValueError):
    """A translated entry that cannot be used, with the reason."""


def _offsets(text: str) -> list[int]:
    starts = [0]
    for line in text.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    return starts


def docstrings(prompt: str) -> list[Docstring]:
    """Every triple-quoted string literal of ``prompt``, in order of appearance."""
    found: list[Docstring] = []
    line_starts = _offsets(prompt)
    for token in tokenize.generate_tokens(io.StringIO(prompt).readline):
        if token.type != tokenize.STRING:
            continue
        prefix = _PREFIX.match(token.string)
        body = token.string[prefix.end() if prefix else 0 :]
        if not body.startswith(('"""', "'''")):
            continue
        quote = body[:3]
        begin = line_starts[token.start[0] - 1] + token.start[1]
        finish = line_starts[token.end[0] - 1] + token.end[1]
        content_start = begin + len(token.string) - len(body) + 3
        found.append(Docstring(content_start, finish - 3, quote, prompt[content_start : finish - 3]))
    return found


def doctest_lines(text: str) -> list[str]:
    """The ``>>>`` lines of a docstring, stripped of surrounding whitespace."""
    return [line.strip() for line in text.splitlines() if ">>>" in line]


def localize(prompt: str, translated: object) -> str:
    """``prompt`` with its docstrings replaced by ``translated`` (a list of strings), checked first."""
    originals = docstrings(prompt)
    if not isinstance(translated, list) or not all(isinstance(item, str) for item in translated):
        raise TranslationRejectedError("entry must be a list of strings")
    if len(translated) != len(originals):
        raise TranslationRejectedError(
            f"{len(translated)} docstring(s) given, the prompt has {len(originals)}"
        )
    pieces: list[str] = []
    position = 0
    for index, (original, text) in enumerate(zip(originals, translated, strict=True)):
        have = set(doctest_lines(text))
        missing = [line for line in doctest_lines(original.content) if line not in have]
        if missing:
            raise TranslationRejectedError(
                f"docstring {index + 1}: '>>>' line not kept verbatim: {missing[0]!r}"
            )
        if original.quote in text or text.endswith((original.quote[0], "\\")):
            raise TranslationRejectedError(
                f"docstring {index + 1}: contains or ends with its quote character"
            )
        if not text.strip():
            raise TranslationRejectedError(f"docstring {index + 1}: empty")
        pieces += [prompt[position : original.start], text]
        position = original.end
    pieces.append(prompt[position:])
    localized = "".join(pieces)
    try:
        ast.parse(localized)
    except SyntaxError as exc:
        raise TranslationRejectedError(f"localized prompt is not valid Python: {exc.msg}") from None
    return localized


def signature_of(prompt: str, entry_point: str) -> str:
    """The ``def`` header of ``entry_point`` in ``prompt`` (all its lines, up to the colon)."""
    tree = ast.parse(prompt)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == entry_point:
            lines = prompt.splitlines()
            first = node.lineno
            last = node.body[0].lineno - 1 if node.body else node.lineno
            header = [lines[i - 1] for i in range(first, max(first, last) + 1)]
            text = "\n".join(header).rstrip()
            return text if text.endswith(":") else text.split(":\n")[0]
    raise ValueError(f"no top-level function {entry_point!r} in the prompt")


def last_function(code: str) -> str | None:
    """Name of the last top-level function of ``code`` (the entry point of HumanEval-style prompts)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        names = re.findall(r"^def\s+(\w+)\s*\(", code, re.MULTILINE)
        return names[-1] if names else None
    names = [n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    return names[-1] if names else None
