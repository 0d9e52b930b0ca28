"""Statement images: shaping works for every script, RTL lines sit on the right, bytes are reproducible."""

from __future__ import annotations

import hashlib
import io

import pytest
from PIL import Image, ImageFont, features

from benchmark.tasks.render import MAX_SIDE, MIN_SIDE, find_font, render_statement

ARABIC_LINE = "    تُرجع الدالة قائمة الأعداد الموجبة فقط"
HINDI_WORD = "क्षत्रिय"  # conjuncts: क्ष and त्र


def ink_columns(png: bytes) -> tuple[int, int]:
    """First and last column holding dark pixels."""
    with Image.open(io.BytesIO(png)) as image:
        box = image.point(lambda value: 255 if value < 128 else 0).getbbox()
    assert box is not None
    return box[0], box[2]


def test_raqm_is_available() -> None:
    assert features.check("raqm"), "Pillow needs raqm (Debian libraqm0 or libfribidi0) to shape scripts"


def test_arabic_is_shaped() -> None:
    font = ImageFont.truetype(
        str(find_font("NotoSansArabic-Regular.ttf")), 40, layout_engine=ImageFont.Layout.RAQM
    )
    word = "بيت"
    joined = font.getlength(word, direction="rtl")
    isolated = sum(font.getlength(char, direction="rtl") for char in word)
    assert joined < isolated  # joined forms are narrower than the isolated forms side by side


def test_devanagari_conjuncts_are_formed() -> None:
    path = str(find_font("NotoSansDevanagari-Regular.ttf"))
    shaped = ImageFont.truetype(path, 40, layout_engine=ImageFont.Layout.RAQM)
    basic = ImageFont.truetype(path, 40, layout_engine=ImageFont.Layout.BASIC)
    assert shaped.getbbox(HINDI_WORD) != basic.getbbox(HINDI_WORD)
    assert shaped.getlength("क्ष") < shaped.getlength("क") + shaped.getlength("्") + shaped.getlength("ष")


def test_rtl_lines_are_right_aligned_and_code_lines_left() -> None:
    code = render_statement("def f(x):\n    return x", "ar", "Arab", 20, 768)
    arabic = render_statement("def f(x):\n" + ARABIC_LINE * 2, "ar", "Arab", 20, 768)
    left, _ = ink_columns(code.png)
    _, right = ink_columns(arabic.png)
    assert left <= 25
    assert right >= arabic.width - 25 - 4 * 12  # right edge minus margin and the mirrored indentation


@pytest.mark.parametrize(
    ("language", "script", "text"),
    [
        ("en", "Latn", "Return the sum of the list."),
        ("zh", "Hans", "返回列表中所有数字的和。"),
        ("ja", "Jpan", "リストの合計を返します。"),
        ("ru", "Cyrl", "Вернуть сумму списка."),
        ("ar", "Arab", "أرجع مجموع القائمة."),
        ("hi", "Deva", "सूची का योग लौटाएँ।"),
    ],
)
def test_every_script_renders_deterministically(language: str, script: str, text: str) -> None:
    statement = f'def total(xs: list) -> int:\n    """ {text}\n    >>> total([1, 2])\n    3\n    """\n'
    first = render_statement(statement, language, script, 18, 1024)
    second = render_statement(statement, language, script, 18, 1024)
    assert first.png == second.png
    assert MIN_SIDE <= first.width <= MAX_SIDE
    assert MIN_SIDE <= first.height <= MAX_SIDE
    assert first.png.startswith(b"\x89PNG")
    assert b"tIME" not in first.png
    assert (
        hashlib.sha256(first.png).hexdigest()
        != hashlib.sha256(render_statement(statement, language, script, 22, 1024).png).hexdigest()
    )


def test_long_statements_shrink_and_wrap_to_fit() -> None:
    statement = "\n".join(f"    line {i}: " + "word " * 20 for i in range(40))
    rendered = render_statement(statement, "en", "Latn", 22, 768)
    assert rendered.width <= MAX_SIDE
    assert rendered.height <= MAX_SIDE
    assert rendered.font_px < 22
    unbroken = render_statement("x" * 500, "en", "Latn", 18, 768)
    assert unbroken.width <= 768
