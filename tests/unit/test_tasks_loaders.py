"""Loaders for sets on disk, fed small files written in each dataset's own format."""

from __future__ import annotations

import base64
import gzip
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from benchmark.grading import grade
from benchmark.tasks.loaders import LoaderError, load
from benchmark.tasks.loaders.multilingual import flores_to_bcp47

PROMPT = (
    "from typing import List\n\n\ndef below_zero(operations: List[int]) -> bool:\n"
    '    """ {doc}\n    >>> below_zero([1, 2, 3])\n    False\n    """\n'
)
BODY = (
    "    balance = 0\n    for op in operations:\n        balance += op\n"
    "        if balance < 0:\n            return True\n    return False\n"
)
TEST = (
    "\n\nMETADATA = {'author': 'jt', 'dataset': 'test'}\n\n\ndef check(candidate):\n"
    "    assert candidate([]) == False\n    assert candidate([1, 2, -4, 5, 6]) == True\n"
)


def jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def passes(record_solution: str | None, record: object) -> bool:
    return grade(record, f"```python\n{record_solution}\n```").verdict == "pass"  # type: ignore[arg-type]


def test_plain_humaneval_gz(tmp_path: Path) -> None:
    row = {"task_id": "HumanEval/3", "prompt": PROMPT.format(doc="Detect a negative balance."),
           "entry_point": "below_zero", "canonical_solution": BODY, "test": TEST}  # fmt: skip
    path = tmp_path / "HumanEval.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write(json.dumps(row) + "\n")
    (record,) = load("humaneval", path, tmp_path)
    assert record.id == "humaneval/HumanEval/3"
    assert record.grading.tests.endswith("check(below_zero)\n")
    assert passes(record.canonical_solution, record)


def test_humaneval_xl(tmp_path: Path) -> None:
    rows = [
        {"task_id": "python/0", "prompt": PROMPT.format(doc="اكتشف ما إذا كان الرصيد سالبًا."),
         "entry_point": "below_zero", "test": TEST, "language": "python", "canonical_solution": BODY,
         "description": "اكتشف ما إذا كان الرصيد سالبًا.\n    ", "natural_language": "Arabic"},
        {"task_id": "java/0", "prompt": "class Solution {", "entry_point": "belowZero", "test": "}",
         "language": "java", "canonical_solution": "}", "description": "x", "natural_language": "Arabic"},
    ]  # fmt: skip
    python, java = load("humaneval-xl", jsonl(tmp_path / "Arabic.jsonl", rows), tmp_path)
    assert (python.id, python.natural_language) == ("humaneval-xl/ar/python/0", "ar")
    assert passes(python.canonical_solution, python)
    assert java.programming_language == "java"
    assert grade(java, "class A {}").verdict == "error"


def test_mhumaneval_array_and_expert_lines(tmp_path: Path) -> None:
    # the main release: a JSON array with CSV leftovers, bodies sometimes pasted unindented
    unindented = (
        "balance = 0\nfor op in operations:\n    balance += op\n    if balance < 0:\n"
        "        return True\nreturn False\n"
    )
    array = [{"task_id": "HumanEval/3", "nl": "hin_Deva", "pl": "python",
              "prompt": PROMPT.format(doc="जाँचें कि शेष राशि शून्य से नीचे जाती है या नहीं।"),
              "canonical_solution": unindented, "test": TEST,
              "Unnamed: 6": "", "Unnamed: 7": ""}]  # fmt: skip
    path = tmp_path / "mHumanEval-hin_Deva.json"
    path.write_text(json.dumps(array, ensure_ascii=False, indent=4), encoding="utf-8")
    (record,) = load("mhumaneval", path, tmp_path)
    assert (record.id, record.natural_language, record.entry_point) == (
        "mhumaneval/hin_Deva/HumanEval/3", "hi", "below_zero")  # fmt: skip
    assert passes(record.canonical_solution, record)
    # the expert files: one object per line, no task_id, "tests" in the Hub release
    expert = {"nl": "zho_Hans", "pl": "python", "prompt": PROMPT.format(doc="判断余额是否低于零。"),
              "canonical_solution": BODY, "tests": TEST}  # fmt: skip
    (record,) = load("mhumaneval", jsonl(tmp_path / "Human_Expert_zho_Hans.json", [expert]), tmp_path)
    assert record.natural_language == "zh-Hans"
    assert passes(record.canonical_solution, record)
    assert flores_to_bcp47("arb_Arab") == "ar"
    assert flores_to_bcp47("fon_Latn") == "fon"


def test_humaneval_v_with_paths_and_bytes(tmp_path: Path) -> None:
    image = png_bytes()
    (tmp_path / "q1.png").write_bytes(image)
    signature = (
        'def solution(grid: list) -> int:\n    """\n    Count the red cells shown in the image.\n    """\n'
    )
    solution = "def solution(grid: list) -> int:\n    return sum(row.count('r') for row in grid)\n"
    test = (
        "def test():\n    assert solution([['r', 'b'], ['r', 'r']]) == 3\n"
        "    assert solution([]) == 0\n\ntest()\n"
    )
    rows = [
        {"qid": "q1", "image": "q1.png", "function_signature": signature, "test_script": test,
         "ground_truth_solution": solution, "image_description": "a grid"},
        {"qid": "q1-2", "diagram": {"bytes": base64.b64encode(image).decode(), "path": None},
         "function_signature": signature, "test_script": test, "ground_truth_solution": solution,
         "ground_truth_diagram_description": "a grid", "capability_aspects": {}, "task_type": "counting"},
    ]  # fmt: skip
    out = tmp_path / "set"
    first, second = load("humaneval-v", jsonl(tmp_path / "humaneval_v.jsonl", rows), out)
    assert first.images == second.images
    assert (out / first.images[0].path).read_bytes() == image
    assert (first.images[0].width, first.images[0].height) == (64, 48)
    assert first.entry_point == "solution"
    assert first.metadata.image_required
    assert passes(first.canonical_solution, first)
    assert grade(first, "```python\ndef solution(grid):\n    return 3\n```").verdict == "fail"


@pytest.mark.parametrize(
    ("kind", "rows", "line", "field"),
    [
        ("humaneval", [{"task_id": "HumanEval/0", "prompt": 5}], 1, "prompt"),
        ("humaneval-xl", [{"task_id": "python/0", "natural_language": "Klingon"}], 1, "natural_language"),
        ("mhumaneval", [{}, {"nl": "arabic"}], 1, "nl"),
        ("humaneval-v", [{"qid": "q1", "image": "missing.png"}], 1, "image"),
    ],
)
def test_malformed_files_name_file_line_and_field(
    tmp_path: Path, kind: str, rows: list[dict[str, object]], line: int, field: str
) -> None:
    path = jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(LoaderError) as caught:
        load(kind, path, tmp_path)
    assert (caught.value.path, caught.value.line, caught.value.field) == (str(path), line, field)
    assert str(caught.value).startswith(f"{path}:{line}: {field}: ")


def test_invalid_json_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("\n{oops\n", encoding="utf-8")
    with pytest.raises(LoaderError, match=r"bad.jsonl:2: invalid JSON"):
        load("humaneval-xl", path, tmp_path)


def test_humaneval_v_parquet_shard(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    signature = 'def solution(n: int) -> int:\n    """Apply the rule in the image."""\n'
    table = pa.table(
        {
            "qid": ["q7"],
            "image": [{"bytes": png_bytes(), "path": "q7.png"}],
            "function_signature": [signature],
            "test_script": ["assert solution(2) == 4\n"],
            "ground_truth_solution": ["def solution(n: int) -> int:\n    return n * 2\n"],
            "image_description": ["doubling"],
        }
    )
    path = tmp_path / "test-00000-of-00001.parquet"
    pq.write_table(table, path)
    (record,) = load("humaneval-v", path, tmp_path / "set")
    assert record.id == "humaneval-v/q7"
    assert record.images[0].width == 64
    assert passes(record.canonical_solution, record)
