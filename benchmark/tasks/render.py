"""Render a problem statement (code with translated docstrings) into a deterministic grayscale PNG.

Text goes through raqm (HarfBuzz shaping, FriBiDi) so Arabic joins and Devanagari conjuncts form. Each
line is laid out on its own: a line whose first strong character is right-to-left is an RTL paragraph,
right-aligned, with its runs ordered by ``bidi.visual_runs``; code lines stay left-to-right. Glyphs come
from Debian's Noto fonts: Noto Sans Mono CJK (Latin, Cyrillic, CJK; monospaced for code) as the base,
Noto Sans Arabic and Noto Sans Devanagari for their scripts. The same text, size and fonts give the same
bytes: no timestamps, fixed PNG settings.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import PIL
from PIL import Image, ImageDraw, ImageFont, features

from benchmark.tasks.bidi import paragraph_is_rtl, visual_runs

RENDERER_VERSION = "1"
MIN_SIDE = 336
MAX_SIDE = 1344
MIN_FONT_PX = 11
_FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts")
_BASE_FILE = "NotoSansCJK-Regular.ttc"
_SCRIPT_FILES = {"Arab": "NotoSansArabic-Regular.ttf", "Deva": "NotoSansDevanagari-Regular.ttf"}
_SCRIPT_RANGES = {
    "Arab": ((0x0600, 0x06FF), (0x0750, 0x077F), (0x08A0, 0x08FF), (0xFB50, 0xFDFF), (0xFE70, 0xFEFF)),
    "Deva": ((0x0900, 0x097F), (0xA8E0, 0xA8FF), (0x1CD0, 0x1CFF)),
}
_JOINERS = {"\u200c", "\u200d"}
_CJK_TOKEN = re.compile(
    r"[\u3000-\u30ff\u3400-\u9fff\uf900-\ufaff\uff00-\uffef]|\s+|[^\s\u3000-\u30ff\u3400-\u9fff\uf900-\ufaff\uff00-\uffef]+"
)


class RenderError(RuntimeError):
    """Rendering cannot be done as required here (missing font, no complex-script shaping)."""


@dataclass(frozen=True)
class Rendered:
    png: bytes
    width: int
    height: int
    font_px: int


def find_font(name: str) -> Path:
    """A font file by name under ``M3BENCH_FONT_DIR`` or the standard font directories."""
    roots = [os.environ["M3BENCH_FONT_DIR"]] if os.environ.get("M3BENCH_FONT_DIR") else []
    for root in [*roots, *_FONT_DIRS]:
        for path in sorted(Path(root).rglob(name)) if Path(root).is_dir() else []:
            return path
    raise RenderError(f"font {name} not found; install Debian's fonts-noto-core and fonts-noto-cjk")


def font_files(script: str) -> list[Path]:
    files = [find_font(_BASE_FILE)]
    if script in _SCRIPT_FILES:
        files.append(find_font(_SCRIPT_FILES[script]))
    return files


def environment_fingerprint(script: str) -> str:
    """What else the pixels depend on: renderer, Pillow, FreeType, raqm and the font files' bytes."""
    digest = hashlib.sha256()
    for part in (
        RENDERER_VERSION,
        PIL.__version__,
        features.version("freetype2"),
        features.version("raqm"),
    ):
        digest.update(str(part).encode())
    for path in font_files(script):
        digest.update(_file_digest(path).encode())
    return digest.hexdigest()


@functools.cache
def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def require_shaping() -> None:
    if not features.check("raqm"):
        raise RenderError(
            "Pillow has no raqm layout (needed to shape Arabic and Devanagari); "
            "install Debian's libraqm0 (or libfribidi0 for Pillow's bundled raqm)"
        )


@functools.cache
def _base_font(language: str, size: int) -> ImageFont.FreeTypeFont:
    path = find_font(_BASE_FILE)
    wanted = "Noto Sans Mono CJK JP" if language == "ja" else "Noto Sans Mono CJK SC"
    for index in range(16):
        font = ImageFont.truetype(str(path), size, index=index, layout_engine=ImageFont.Layout.RAQM)
        if font.getname()[0] == wanted:
            return font
    raise RenderError(f"{wanted} is not in {path}")


@functools.cache
def _script_font(script: str, size: int) -> ImageFont.FreeTypeFont | None:
    if script not in _SCRIPT_FILES:
        return None
    return ImageFont.truetype(
        str(find_font(_SCRIPT_FILES[script])), size, layout_engine=ImageFont.Layout.RAQM
    )


def _in_script(char: str, script: str) -> bool:
    point = ord(char)
    return any(low <= point <= high for low, high in _SCRIPT_RANGES.get(script, ()))


@dataclass(frozen=True)
class _Fonts:
    base: ImageFont.FreeTypeFont
    script: ImageFont.FreeTypeFont | None
    script_name: str
    language: str

    def split(self, text: str) -> list[tuple[str, ImageFont.FreeTypeFont]]:
        """Logical-order pieces of ``text`` with the font that has their glyphs."""
        if self.script is None:
            return [(text, self.base)]
        marks = [
            _in_script(c, self.script_name)
            or c in _JOINERS
            or (
                unicodedata.category(c).startswith("M")
                and i > 0
                and _in_script(text[i - 1], self.script_name)
            )
            for i, c in enumerate(text)
        ]
        for i, char in enumerate(text):  # spaces between two script words stay in the script font
            if char == " " and not marks[i]:
                left = next((marks[j] for j in range(i - 1, -1, -1) if text[j] != " "), False)
                right = next((marks[j] for j in range(i + 1, len(text)) if text[j] != " "), False)
                marks[i] = left and right
        pieces: list[tuple[str, ImageFont.FreeTypeFont]] = []
        for char, in_script in zip(text, marks, strict=True):
            font = self.script if in_script else self.base
            if pieces and pieces[-1][1] is font:
                pieces[-1] = (pieces[-1][0] + char, font)
            else:
                pieces.append((char, font))
        return pieces

    def segments(self, line: str) -> list[tuple[str, ImageFont.FreeTypeFont, str]]:
        """(text, font, direction) in visual order, left to right."""
        out: list[tuple[str, ImageFont.FreeTypeFont, str]] = []
        for run in visual_runs(line, paragraph_is_rtl(line)):
            pieces = self.split(run.text)
            if run.rtl:
                pieces.reverse()
            out += [(text, font, "rtl" if run.rtl else "ltr") for text, font in pieces]
        return out

    def width(self, line: str) -> float:
        return sum(
            font.getlength(t, direction=d, language=self.language) for t, font, d in self.segments(line)
        )


def _wrap(line: str, fonts: _Fonts, max_px: float) -> list[str]:
    """Greedy wrapping in logical order; continuation lines keep the indentation plus two spaces.

    Token widths are measured once and added up (kerning across token edges is ignored), which keeps
    wrapping linear in the line's length; the canvas is sized from exact widths afterwards.
    """
    if fonts.width(line) <= max_px:
        return [line]
    indent = " " * (len(line) - len(line.lstrip(" ")) + 2)
    indent_px = fonts.width(indent)
    out: list[str] = []
    current, current_px = line[: len(indent) - 2], fonts.width(line[: len(indent) - 2])
    for token in _CJK_TOKEN.findall(line.lstrip(" ")):
        token_px = fonts.width(token)
        if current.strip() and current_px + token_px > max_px and not token.isspace():
            out.append(current.rstrip())
            current, current_px = indent, indent_px
        if token_px > max_px - indent_px:  # one token longer than a line: cut it by characters
            for char in token:
                char_px = fonts.width(char)
                if current.strip() and current_px + char_px > max_px:
                    out.append(current.rstrip())
                    current, current_px = indent, indent_px
                current, current_px = current + char, current_px + char_px
            continue
        current, current_px = current + token, current_px + token_px
    if current.strip():
        out.append(current.rstrip())
    return out


def _layout(
    statement: str, language: str, script: str, size: int, max_width: int
) -> tuple[_Fonts, list[str]]:
    fonts = _Fonts(_base_font(language, size), _script_font(script, size), script, language)
    margin = size
    lines: list[str] = []
    for raw in statement.expandtabs(4).strip("\n").split("\n"):
        lines += _wrap(raw.rstrip(), fonts, max_width - 2 * margin)
    return fonts, lines


def render_statement(statement: str, language: str, script: str, size: int, max_width: int) -> Rendered:
    """Draw ``statement``; the font shrinks from ``size`` (then the width grows) until it fits MAX_SIDE."""
    require_shaping()
    while True:
        fonts, lines = _layout(statement, language, script, size, max_width)
        # Fixed ratios, not the fonts' own (very tall) metrics: marks above and below need more room.
        ascent = round(size * 1.2)
        line_px = round(size * (1.75 if fonts.script is not None else 1.5))
        margin = size
        height = len(lines) * line_px + 2 * margin
        if height <= MAX_SIDE:
            break
        if size > MIN_FONT_PX:
            size -= 1
        elif max_width < MAX_SIDE:  # smallest legible size and still too tall: use the widest canvas
            max_width, size = MAX_SIDE, MIN_FONT_PX + 2
        else:
            break  # taller than MAX_SIDE: only for statements far longer than any HumanEval prompt
    widths = [fonts.width(line) for line in lines]
    width = max(MIN_SIDE, min(MAX_SIDE, int(max(widths, default=0)) + 2 * margin + 1))
    height = max(MIN_SIDE, height)
    image = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(image)
    for row, line in enumerate(lines):
        baseline = margin + row * line_px + ascent
        if paragraph_is_rtl(line):
            stripped = line.lstrip(" ")
            indent = fonts.base.getlength(" " * (len(line) - len(stripped)))
            x = width - margin - indent - fonts.width(stripped)
            segments = fonts.segments(stripped)
        else:
            x = float(margin)
            segments = fonts.segments(line)
        for text, font, direction in segments:
            draw.text(
                (x, baseline), text, font=font, fill=20, anchor="ls", direction=direction, language=language
            )
            x += font.getlength(text, direction=direction, language=language)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=6)
    return Rendered(png=buffer.getvalue(), width=width, height=height, font_px=size)
