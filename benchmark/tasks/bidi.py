"""Enough of the Unicode bidirectional algorithm (UAX #9) to lay out one line of mixed-direction text.

Covers one paragraph without explicit embeddings or isolates (which statements never contain): the weak
type rules W1-W7, neutrals N1-N2, implicit levels I1-I2, trailing whitespace L1 and run reordering L2.
It returns runs in visual order; each run keeps its characters in logical order and says whether it is
right-to-left, because shaping (Arabic joining, mirrored brackets) must see logical text: the renderer
hands each RTL run to HarfBuzz through raqm with ``direction="rtl"``.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

_STRONG_RTL = {"R", "AL"}
_NEUTRAL = {"B", "S", "WS", "ON", "BN", "LRI", "RLI", "FSI", "PDI"}


@dataclass(frozen=True)
class Run:
    text: str
    rtl: bool


def paragraph_is_rtl(text: str) -> bool:
    """P2/P3: the first strong character decides; none means left-to-right."""
    for char in text:
        kind = unicodedata.bidirectional(char)
        if kind == "L":
            return False
        if kind in _STRONG_RTL:
            return True
    return False


def _resolve_weak(types: list[str], sos: str) -> list[str]:
    out = list(types)
    previous = sos
    for i, kind in enumerate(out):  # W1: non-spacing marks take the previous type
        if kind == "NSM":
            out[i] = previous
        previous = out[i]
    last_strong = sos
    for i, kind in enumerate(out):  # W2 + W3
        if kind in ("L", "R", "AL"):
            last_strong = kind
        if kind == "EN" and last_strong == "AL":
            out[i] = "AN"
    out = ["R" if kind == "AL" else kind for kind in out]
    for i in range(1, len(out) - 1):  # W4
        if out[i] == "ES" and out[i - 1] == out[i + 1] == "EN":
            out[i] = "EN"
        elif out[i] == "CS" and out[i - 1] == out[i + 1] and out[i - 1] in ("EN", "AN"):
            out[i] = out[i - 1]
    for i, kind in enumerate(out):  # W5: European terminators next to European numbers
        if kind == "EN":
            j = i - 1
            while j >= 0 and out[j] == "ET":
                out[j] = "EN"
                j -= 1
            j = i + 1
            while j < len(out) and out[j] == "ET":
                out[j] = "EN"
                j += 1
    out = ["ON" if kind in ("ES", "ET", "CS") else kind for kind in out]  # W6
    last_strong = sos
    for i, kind in enumerate(out):  # W7
        if kind in ("L", "R"):
            last_strong = kind
        elif kind == "EN" and last_strong == "L":
            out[i] = "L"
    return out


def _resolve_neutral(types: list[str], sos: str, embedding: str) -> list[str]:
    out = list(types)
    i = 0
    while i < len(out):
        if out[i] not in _NEUTRAL:
            i += 1
            continue
        j = i
        while j < len(out) and out[j] in _NEUTRAL:
            j += 1
        before = sos if i == 0 else ("R" if out[i - 1] in ("R", "EN", "AN") else "L")
        after = sos if j == len(out) else ("R" if out[j] in ("R", "EN", "AN") else "L")
        fill = before if before == after else embedding
        out[i:j] = [fill] * (j - i)
        i = j
    return out


def levels(text: str, rtl: bool) -> list[int]:
    """Embedding level of every character of one paragraph."""
    base = 1 if rtl else 0
    direction = "R" if rtl else "L"
    types = [unicodedata.bidirectional(char) or "L" for char in text]
    types = _resolve_neutral(_resolve_weak(types, direction), direction, direction)
    result = []
    for kind in types:
        if base == 0:
            result.append(1 if kind == "R" else 2 if kind in ("AN", "EN") else 0)
        else:
            result.append(2 if kind in ("L", "EN", "AN") else 1)
    i = len(text) - 1  # L1: trailing whitespace goes back to the paragraph level
    while i >= 0 and unicodedata.bidirectional(text[i]) in ("WS", "S", "B", "BN"):
        result[i] = base
        i -= 1
    return result


def visual_runs(text: str, rtl: bool) -> list[Run]:
    """Runs of equal level, reordered left to right (L2); characters inside a run stay logical."""
    if not text:
        return []
    char_levels = levels(text, rtl)
    runs: list[tuple[int, str]] = []
    for char, level in zip(text, char_levels, strict=True):
        if runs and runs[-1][0] == level:
            runs[-1] = (level, runs[-1][1] + char)
        else:
            runs.append((level, char))
    highest = max(level for level, _ in runs)
    lowest_odd = min((level for level, _ in runs if level % 2), default=highest + 1)
    for target in range(highest, lowest_odd - 1, -1):
        i = 0
        while i < len(runs):
            if runs[i][0] < target:
                i += 1
                continue
            j = i
            while j < len(runs) and runs[j][0] >= target:
                j += 1
            runs[i:j] = runs[i:j][::-1]
            i = j
    return [Run(chunk, level % 2 == 1) for level, chunk in runs]
