"""The direction of imports between m3bench's parts (docs/TEAM.md, "Architecture").

``benchmark`` (task set + grader) is the bottom; ``loadgen`` (client) and ``serving`` (server) build on
it and never on each other; ``observability`` reads the load generator's metric names; ``m3bench``
(CLI, demo, report) is the top and nothing imports it. Every import statement is checked, lazy ones
inside functions included, because a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PARTS = ("benchmark", "loadgen", "serving", "observability", "m3bench")
# part -> the other parts it may import
ALLOWED: dict[str, set[str]] = {
    "benchmark": set(),
    "loadgen": {"benchmark"},
    "serving": {"benchmark"},
    "observability": {"benchmark", "loadgen"},
    "m3bench": {"benchmark", "loadgen", "serving", "observability"},
}


def _imported_parts(path: Path) -> set[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[tuple[str, int]] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            top = name.split(".")[0]
            if top in PARTS:
                found.add((top, node.lineno))
    return found


def violations(repo: Path = REPO) -> list[str]:
    out = []
    for part in PARTS:
        for path in sorted((repo / part).rglob("*.py")):
            for target, line in sorted(_imported_parts(path)):
                if target != part and target not in ALLOWED[part]:
                    out.append(f"{path.relative_to(repo)}:{line}: {part} -> {target}")
    return out


def test_imports_follow_the_architecture() -> None:
    assert violations() == []


def test_the_check_sees_a_wrong_import(tmp_path: Path) -> None:
    for part in PARTS:
        (tmp_path / part).mkdir()
    (tmp_path / "serving" / "bad.py").write_text("def f():\n    from loadgen.records import X\n")
    (tmp_path / "benchmark" / "worse.py").write_text("import m3bench.cli\n")
    (tmp_path / "loadgen" / "fine.py").write_text("from benchmark.tasks import schema\n")
    assert violations(tmp_path) == [
        "benchmark/worse.py:1: benchmark -> m3bench",
        "serving/bad.py:2: serving -> loadgen",
    ]


@pytest.mark.parametrize("part", PARTS)
def test_every_part_is_a_package(part: str) -> None:
    assert (REPO / part / "__init__.py").is_file()
