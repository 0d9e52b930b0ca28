"""Summaries of a task set: counts by language, script and group, image sizes, prompt tokens.

Prompt tokens are counted with ``tokenizers`` from any ``tokenizer.json`` (the embedded models' files,
or a downloaded model's); image sizes are also given as 28x28-pixel patches, the unit several VLMs' image
token counts scale with, as a rough guide to vision tokens.
"""

from __future__ import annotations

import statistics
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from benchmark.tasks.languages import LANGUAGES
from benchmark.tasks.schema import TaskRecord

_SCRIPT_PREFIXES = (
    ("ARABIC", "Arab"), ("DEVANAGARI", "Deva"), ("CYRILLIC", "Cyrl"), ("HIRAGANA", "Jpan"),
    ("KATAKANA", "Jpan"), ("CJK", "Hani"), ("HANGUL", "Kore"), ("HEBREW", "Hebr"), ("GREEK", "Grek"),
    ("THAI", "Thai"), ("BENGALI", "Beng"), ("LATIN", "Latn"),
)  # fmt: skip
_PATCH = 28


def dominant_script(text: str) -> str:
    """ISO 15924 code of the script most letters of ``text`` are in; Japanese kana win over Han."""
    counts: Counter[str] = Counter()
    for char in text:
        if not char.isalpha():
            continue
        name = unicodedata.name(char, "")
        for prefix, code in _SCRIPT_PREFIXES:
            if name.startswith(prefix):
                counts[code] += 1
                break
    if counts["Jpan"]:
        return "Jpan"
    latin = counts.pop("Latn", 0)
    if counts:  # code and identifiers are Latin in every language; prose decides
        return counts.most_common(1)[0][0]
    return "Latn" if latin else "Zyyy"


def _summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    return {
        "min": ordered[0],
        "p50": statistics.median(ordered),
        "mean": round(statistics.fmean(ordered), 1),
        "p95": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))],
        "max": ordered[-1],
    }


@dataclass
class Stats:
    records: int = 0
    by_language: Counter[str] = field(default_factory=Counter)
    by_script: Counter[str] = field(default_factory=Counter)
    by_group: Counter[str] = field(default_factory=Counter)
    by_method: Counter[str] = field(default_factory=Counter)
    image_widths: list[float] = field(default_factory=list)
    image_heights: list[float] = field(default_factory=list)
    image_patches: list[float] = field(default_factory=list)
    prompt_tokens: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "records": self.records,
            "by_language": dict(sorted(self.by_language.items())),
            "by_script": dict(sorted(self.by_script.items())),
            "by_group": dict(sorted(self.by_group.items())),
            "by_method": dict(sorted(self.by_method.items())),
            "images": {
                "count": len(self.image_widths),
                "width_px": _summary(self.image_widths),
                "height_px": _summary(self.image_heights),
                f"patches_{_PATCH}px": _summary(self.image_patches),
            },
            "prompt_tokens": {
                name: {lang: _summary(values) for lang, values in sorted(per_lang.items())}
                for name, per_lang in self.prompt_tokens.items()
            },
        }


def compute(records: list[TaskRecord], tokenizers: list[Path] | None = None) -> Stats:
    from tokenizers import Tokenizer

    loaded = {path.parent.name or path.name: Tokenizer.from_file(str(path)) for path in tokenizers or []}
    stats = Stats()
    for record in records:
        stats.records += 1
        stats.by_language[record.natural_language] += 1
        known = LANGUAGES.get(record.natural_language)
        stats.by_script[known.script if known else dominant_script(record.prompt)] += 1
        stats.by_group[record.metadata.group or "-"] += 1
        stats.by_method[record.grading.method] += 1
        for image in record.images:
            stats.image_widths.append(image.width)
            stats.image_heights.append(image.height)
            stats.image_patches.append(-(-image.width // _PATCH) * -(-image.height // _PATCH))
        for name, tokenizer in loaded.items():
            count = len(tokenizer.encode(record.prompt).ids)
            per_lang = stats.prompt_tokens.setdefault(name, defaultdict(list))
            per_lang[record.natural_language].append(count)
    return stats
