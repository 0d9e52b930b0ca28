"""Find the program in a model's answer: fenced or raw, a whole function or only its body.

Rules, in order:

1. Fenced blocks (```python, ```py, ``` with no tag; an unterminated last fence counts, as when the model
   ran out of tokens). The last block that defines the entry point wins; if none does, the blocks are
   joined. No fence: the whole answer is the code.
2. When the code parses, only top-level imports, function and class definitions, assignments and
   ``try`` blocks are kept: example calls, prints and ``if __name__ == "__main__":`` demos are dropped
   so that they neither run nor fail the grade.
3. When the code does not define the entry point and starts indented, it is a completion of the
   prompt's function (the HumanEval convention): the program is the prompt's code followed by it.
   Unfenced text that neither parses nor defines the function is prose: no code.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

MAX_ANSWER_CHARS = 1_000_000
_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})[ \t]*([\w+.#-]*)[^\n]*\n", re.MULTILINE)
_CODE_TAGS = {"", "python", "py", "python3", "py3", "python 3"}
_KEPT = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Assign,
         ast.AnnAssign, ast.Try)  # fmt: skip


@dataclass(frozen=True)
class Extracted:
    program: str
    how: str


def fenced_blocks(answer: str) -> list[str]:
    """Code blocks in order; language tags other than Python's (or none) are skipped."""
    blocks: list[str] = []
    position = 0
    while True:
        opening = _FENCE.search(answer, position)
        if opening is None:
            return blocks
        fence, tag = opening.group(1), opening.group(2).lower()
        closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$", re.MULTILINE)
        end = closing.search(answer, opening.end())
        body = answer[opening.end() : end.start() if end else len(answer)]
        if tag in _CODE_TAGS:
            blocks.append(body)
        if end is None:
            return blocks
        position = end.end()


def _defines(code: str, entry_point: str) -> bool:
    return re.search(rf"^\s*(async\s+)?def\s+{re.escape(entry_point)}\s*\(", code, re.MULTILINE) is not None


def _keep_definitions(code: str) -> str:
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return code
    lines = code.splitlines(keepends=True)
    kept: list[str] = []
    for node in tree.body:
        if not isinstance(node, _KEPT):
            continue
        first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        end = node.end_lineno if node.end_lineno is not None else node.lineno
        kept.append("".join(lines[first - 1 : end]))
    return "\n".join(part.rstrip("\n") + "\n" for part in kept)


def extract_program(answer: str, entry_point: str | None, prelude: str | None) -> Extracted | None:
    """The program to run, or None when the answer holds no code at all."""
    text = answer[:MAX_ANSWER_CHARS].replace("\r\n", "\n")
    blocks = fenced_blocks(text)
    if blocks:
        defining = [b for b in blocks if entry_point and _defines(b, entry_point)]
        code, how = (defining[-1], "fenced block") if defining else ("\n".join(blocks), "fenced blocks")
    else:
        code, how = text, "raw answer"
    if not code.strip():
        return None
    if entry_point and not _defines(code, entry_point):
        first = next((line for line in code.splitlines() if line.strip()), "")
        if prelude and first[:1] in (" ", "\t"):
            return Extracted(program=prelude.rstrip("\n") + "\n" + code, how=how + ", completing the prompt")
        if not blocks and not _parses(code):
            return None  # prose without a fence and without the function: no code at all
    return Extracted(program=_keep_definitions(code), how=how)


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True
