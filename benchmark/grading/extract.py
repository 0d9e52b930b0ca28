"""Find the program in a model's answer: fenced or raw, a whole function or only its body.

Rules, in order:

1. Fenced blocks (```python, ```Python, ```py, ```python3, ``` with no tag, ~~~; text after the tag is
   ignored; an unterminated last fence counts, as when the model ran out of tokens). A fence inside a
   Markdown container (a list item, a block quote ``> ``) has its content taken relative to the fence, as
   CommonMark does: the quote markers and up to the fence's own indentation are removed from every line.
   A ```markdown block is searched for fences inside it. The last block that defines the entry point
   wins; if none does, the blocks are joined. No fence: the whole answer is the code. A completion
   (rule 3) that does not parse relative to its fence is tried as written: chat models often put a
   stray space before a top-level fence (`` ```python`` after "ASSISTANT:"), and the body's indentation
   is then relative to the prompt's function, not to the fence.
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
import textwrap
from dataclasses import dataclass

from benchmark.python_source import parses

MAX_ANSWER_CHARS = 1_000_000
# container prefix (block quote markers, indentation, a list marker), then the fence, the tag, the rest
_FENCE = re.compile(
    r"^(?P<prefix>(?:[ \t]*>)*[ \t]*(?:(?:[-*+]|\d{1,9}[.)])[ \t]+)?)(?P<fence>`{3,}|~{3,})[ \t]*"
    r"(?P<tag>[\w+.#-]*)[^\n]*\n",
    re.MULTILINE,
)
_QUOTE_MARKERS = re.compile(r"^(?:[ \t]*>[ ]?)+")
_CODE_TAG = re.compile(r"^(?:python|py)[\d.]*$|^$")
_NESTING_TAGS = {"markdown", "md"}
_KEPT = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Assign,
         ast.AnnAssign, ast.Try)  # fmt: skip


@dataclass(frozen=True)
class Extracted:
    program: str
    how: str


def fenced_blocks(answer: str, relative: bool = True) -> list[str]:
    """Code blocks in order; language tags other than Python's (or none) are skipped. ``relative``:
    content taken relative to the fence (CommonMark); else only the quote markers are removed."""
    blocks: list[str] = []
    position = 0
    while True:
        opening = _FENCE.search(answer, position)
        if opening is None:
            return blocks
        fence, tag, prefix = opening.group("fence"), opening.group("tag").lower(), opening.group("prefix")
        quotes = prefix.count(">")
        closing = re.compile(
            rf"^(?:[ \t]*>){{0,{quotes}}}[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$", re.MULTILINE
        )
        end = closing.search(answer, opening.end())
        body = answer[opening.end() : end.start() if end else len(answer)]
        if not relative:  # keep only the block-quote markers of the prefix: no indentation is removed
            markers = _QUOTE_MARKERS.match(prefix)
            prefix = markers.group(0) if markers else ""
        content = _relative_to_fence(body, prefix, quotes)
        if tag in _NESTING_TAGS:
            blocks += fenced_blocks(content, relative)
        elif _CODE_TAG.match(tag):
            blocks.append(content)
        if end is None:
            return blocks
        position = end.end()


def _relative_to_fence(body: str, prefix: str, quotes: int) -> str:
    """The block's lines without the container's quote markers and up to the fence's indentation."""
    if quotes:
        inner = _QUOTE_MARKERS.sub("", prefix)
        strip_quotes = re.compile(rf"^(?:[ \t]*>[ ]?){{0,{quotes}}}")
    else:
        inner, strip_quotes = prefix, None
    width = len(inner.expandtabs(4))
    if not width and strip_quotes is None:
        return body
    lines = []
    for raw in body.splitlines(keepends=True):
        line = strip_quotes.sub("", raw, count=1) if strip_quotes is not None else raw
        text = line.lstrip(" \t")
        indent = line[: len(line) - len(text)].expandtabs(4)  # tabs only in the indentation
        lines.append(indent[min(width, len(indent)) :] + text)
    return "".join(lines)


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
            program = prelude.rstrip("\n") + "\n" + code
            if blocks and not parses(program):
                as_written = prelude.rstrip("\n") + "\n" + "\n".join(fenced_blocks(text, relative=False))
                if parses(as_written):
                    program, how = as_written, how + " as written"
            return Extracted(program=program, how=how + ", completing the prompt")
        if not blocks and not parses(code):
            return None  # prose without a fence and without the function: no code at all
    if not parses(code) and parses(textwrap.dedent(code)):
        code, how = textwrap.dedent(code), how + ", dedented"
    return Extracted(program=_keep_definitions(code), how=how)
