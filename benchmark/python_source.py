"""Whether a text is Python source: one definition for the grader's extraction and the translation checks."""

from __future__ import annotations

import ast


def parses(code: str) -> bool:
    """True when ``code`` is syntactically valid Python (a null byte counts as invalid)."""
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True
