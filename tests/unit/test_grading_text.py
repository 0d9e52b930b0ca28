"""Pure parts of grading: code extraction, the wire format, exact-match and multiple-choice graders."""

from __future__ import annotations

import math
import pickle

import pytest

from benchmark.grading import GradeResult, grade
from benchmark.grading._wire import UnencodableError, WireError, decode_value, encode_value
from benchmark.grading.extract import extract_program, fenced_blocks
from benchmark.grading.matching import chosen_option, grade_choice, grade_exact
from benchmark.tasks.schema import TaskRecord

PRELUDE = 'def add(a, b):\n    """Add."""\n'


def test_fenced_block_that_defines_the_entry_point_wins() -> None:
    answer = (
        "Here is a sketch:\n```python\nprint('hi')\n```\nFinal:\n```python\nimport math\n\n"
        "def add(a, b):\n    return a + b\n\nprint(add(1, 2))\n"
        "if __name__ == '__main__':\n    add(0, 0)\n```\n"
    )
    extracted = extract_program(answer, "add", PRELUDE)
    assert extracted is not None
    assert "def add" in extracted.program
    assert "import math" in extracted.program
    assert "print(" not in extracted.program
    assert "__main__" not in extracted.program


def test_unterminated_fence_and_other_languages() -> None:
    assert fenced_blocks("```js\nx\n```\n```py\ny = 1\n") == ["y = 1\n"]
    assert fenced_blocks("~~~python\nz = 2\n~~~\n") == ["z = 2\n"]


def test_raw_body_completes_the_prompt() -> None:
    extracted = extract_program("    return a + b\n", "add", PRELUDE)
    assert extracted is not None
    assert extracted.program.startswith("def add(a, b):")
    assert extracted.program.endswith("return a + b\n")


def test_no_code_at_all() -> None:
    assert extract_program("   \n", "add", PRELUDE) is None
    assert extract_program("```python\n```", "add", PRELUDE) is None


SOLUTION = "def add(a, b):\n    if a:\n        return a + b\n    return b\n"


def _indent(text: str, prefix: str) -> str:
    return "".join(prefix + line if line.strip() else line for line in text.splitlines(keepends=True))


@pytest.mark.parametrize(
    "answer",
    [
        # the issue's answer: a list item, then an indented ```Python fence with indented code
        "Steps:\n\n1. Handle the empty case.\n2. Here is the function:\n\n   ```Python\n"
        + _indent(SOLUTION, "   ")
        + "   ```\n\n3. Done.\n",
        "- Solution:\n    ```python\n" + _indent(SOLUTION, "    ") + "    ```\n",  # 4-space list indent
        "* ```python\n" + _indent(SOLUTION, "  ") + "  ```\n",  # fence right after the list marker
        "1. ```py\n" + _indent(SOLUTION, "   ") + "   ```\n",
        "> Here it is:\n>\n> ```python\n" + _indent(SOLUTION, "> ") + "> ```\n",  # block quote
        "> - quoted list item\n>   ```python\n" + _indent(SOLUTION, ">   ") + ">   ```\n",
        "~~~python\n" + SOLUTION + "~~~\n",
        "~~~~ Python\n" + SOLUTION + "~~~~\n",
        "```python title=solution.py\n" + SOLUTION + "```\n",  # trailing text after the tag
        "```python3\n" + SOLUTION + "```\n",
        "```py3 {linenos}\n" + SOLUTION + "```\n",
        "````markdown\nThe answer:\n```python\n" + SOLUTION + "```\n````\n",  # nested fences
        "````python\n" + SOLUTION + "# a fence in a comment: ```\n````\n",  # a longer fence keeps ```
        "<think>\nMaybe:\n```python\ndef add(a, b):\n    return 0\n```\nNo, wrong.\n</think>\n"
        "```python\n" + SOLUTION + "```",  # reasoning draft, then the final block wins
        "Sure!\r\n```python\r\n" + SOLUTION.replace("\n", "\r\n") + "```\r\n",  # CRLF
        "```\n" + SOLUTION + "\n\nprint(add(1, 2))\n```\nOutput: 3\n```text\n3\n```\n",
        "```python\n    " + SOLUTION.replace("\n", "\n    ").rstrip() + "\n```\n",  # whole block indented
        "```python\n" + SOLUTION,  # ran out of tokens before the closing fence
    ],
)
def test_honest_answer_formats_give_the_function_unindented(answer: str) -> None:
    extracted = extract_program(answer, "add", PRELUDE)
    assert extracted is not None
    assert extracted.program.startswith("def add(a, b):\n    if a:\n        return a + b\n"), extracted
    namespace: dict[str, object] = {}
    exec(compile(extracted.program, "<answer>", "exec"), namespace)  # our own test strings, not answers
    add = namespace["add"]
    assert callable(add)
    assert add(2, 3) == 5
    assert add(0, 3) == 3


def test_list_item_indentation_is_removed_only_up_to_the_fence() -> None:
    # code less indented than its fence (sloppy but seen): what indentation there is, is removed
    answer = "1. Code:\n\n    ```python\n  def add(a, b):\n      return a + b\n    ```\n"
    assert fenced_blocks(answer) == ["def add(a, b):\n  return a + b\n"]
    # tabs in a string literal are content, not indentation
    answer = "- x\n  ```python\n  s = 'a\tb'\n  ```\n"
    assert fenced_blocks(answer) == ["s = 'a\tb'\n"]


def test_other_languages_inside_quotes_and_lists_are_skipped() -> None:
    answer = "> ```js\n> let x = 1\n> ```\n- ```bash\n  ls\n  ```\n```python\ny = 2\n```\n"
    assert fenced_blocks(answer) == ["y = 2\n"]


def test_list_item_answer_grades_pass() -> None:
    from benchmark.tasks.loaders.humaneval import read_problems, to_record

    problem = next(p for p in read_problems() if p.task_id == "HumanEval/2")
    record = to_record(problem)
    assert record.canonical_solution is not None
    answer = (
        "Here is my approach:\n\n1. Take the fractional part.\n\n   ```Python\n"
        + _indent(record.canonical_solution, "   ")
        + "   ```\n"
    )
    result = grade(record, answer)
    assert result.verdict == "pass", result.detail


def test_a_body_after_a_stray_space_before_the_fence_grades_pass() -> None:
    # What the embedded models answer (served, 2026-12-05): " ```python" after "ASSISTANT:", the body
    # indented for the prompt's function. Relative to the 1-space fence it would lose a space of every
    # line (IndentationError, graded error); as written it completes the prompt.
    from benchmark.tasks.loaders.humaneval import read_problems, to_record

    problem = next(p for p in read_problems() if p.task_id == "HumanEval/2")
    record = to_record(problem)
    assert record.canonical_solution is not None
    answer = " ```python\n" + record.canonical_solution.rstrip() + "\n```"
    result = grade(record, answer)
    assert result.verdict == "pass", result.detail
    wrong = " ```python\n    return 0.0\n```"
    assert grade(record, wrong).verdict == "fail"


@pytest.mark.parametrize(
    "value",
    [None, True, 0, -(10**30), 1.5, math.inf, "é\u0000x", b"\x00\xff", 1 + 2j, [1, (2, 3)], {"a": [1]},
     {1, 2}, frozenset({"x"}), {(1, 2): {3}}],
)  # fmt: skip
def test_wire_round_trip_keeps_exact_types(value: object) -> None:
    back = decode_value(encode_value(value))
    assert back == value
    assert type(back) is type(value)


def test_wire_nan_and_subclasses_become_plain() -> None:
    assert math.isnan(decode_value(encode_value(float("nan"))))  # type: ignore[arg-type]

    class Sneaky(str):
        def __eq__(self, other: object) -> bool:
            return True

        __hash__ = str.__hash__

    back = decode_value(encode_value(Sneaky("x")))
    assert type(back) is str
    assert back != "y"


@pytest.mark.parametrize(
    "data",
    [
        b"",  # nothing
        b"X",  # unknown tag
        b"i\x00\x00\x00\x05123",  # length beyond the frame
        b"i\x00\x00\x00\x02x1",  # not a number
        b"l\xff\xff\xff\xff",  # a count that cannot fit
        b"S\x00\x00\x00\x01l\x00\x00\x00\x00",  # unhashable set item
        b"NN",  # trailing bytes
        b"s\x00\x00\x00\x01\xff",  # invalid UTF-8
        b"l\x00\x00\x00\x01" * 300 + b"N",  # nested too deeply
    ],
)
def test_wire_decoder_refuses_anything_else(data: bytes) -> None:
    with pytest.raises(WireError):
        decode_value(data)


def test_wire_refuses_objects() -> None:
    with pytest.raises(UnencodableError):
        encode_value(object())
    with pytest.raises(UnencodableError):
        encode_value(x for x in range(3))


def _record(method: str, **extra: object) -> TaskRecord:
    return TaskRecord.model_validate(
        {
            "id": "t/1",
            "source": {"benchmark": "t", "source_id": "1", "license": "MIT"},
            "natural_language": "en",
            "prompt": "?",
            "grading": {"method": method},
            "metadata": {"image_required": False},
            **extra,
        }
    )


def test_exact_match() -> None:
    assert grade_exact("  Paris. ", "paris")[0] == "pass"
    assert grade_exact("Let me think.\nAnswer: 42", "42")[0] == "pass"
    assert grade_exact("答案：４２", "42")[0] == "pass"  # full-width digits fold under NFKC
    assert grade_exact("41", "42")[0] == "fail"
    result = grade(_record("exact_match", expected_answer="42"), "The answer is\n42")
    assert isinstance(result, GradeResult)
    assert result.verdict == "pass"
    assert grade(_record("exact_match"), "42").verdict == "error"


def test_multiple_choice() -> None:
    choices = ["red", "green", "blue"]
    assert chosen_option("B", choices) == 1
    assert chosen_option("(C) because...", choices) == 2
    assert chosen_option("I think so.\nAnswer: A", choices) == 0
    assert chosen_option("green", choices) == 1
    assert chosen_option("none of these", choices) is None
    assert grade_choice("B", choices, "B")[0] == "pass"
    assert grade_choice("B", choices, "blue")[0] == "fail"
    assert grade_choice("B", choices, "Z")[0] == "error"
    assert (
        grade(_record("multiple_choice", choices=choices, expected_answer="C"), "Answer: C").verdict == "pass"
    )


def test_grade_result_is_frozen_and_picklable() -> None:
    result = GradeResult(verdict="fail", detail="x", duration_s=0.1)
    assert pickle.loads(pickle.dumps(result)) == result
    with pytest.raises(ValueError, match="frozen"):
        result.verdict = "pass"  # type: ignore[misc]
