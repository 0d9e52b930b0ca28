"""A tiny synthetic task set for calibration runs and tests: a few languages, one small PNG each.

Grading is ``exact_match`` against the calibration server's reply text, so live grading has real
verdicts without a model: answers of the programmed length pass, truncated ones fail.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

from PIL import Image

from benchmark.tasks.schema import TaskRecord

PROMPTS = {
    "en": "Describe the picture in one word.",
    "zh": "用一个词描述这张图片。",
    "ar": "صف الصورة بكلمة واحدة.",
    "es": "Describe la imagen con una palabra.",
}


def _png(seed: int) -> bytes:
    image = Image.new("RGB", (32, 24), ((seed * 70) % 256, (seed * 40) % 256, 200))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_calibration_tasks(
    directory: Path,
    per_language: int = 2,
    languages: tuple[str, ...] = ("en", "zh"),
    expected: str | None = None,
    max_tokens: int = 16,
) -> Path:
    """Write tasks.jsonl and images/ under ``directory``; returns ``directory``."""
    images = directory / "images"
    images.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    for language in languages:
        for number in range(per_language):
            data = _png(len(lines))
            digest = hashlib.sha256(data).hexdigest()
            (images / f"{digest}.png").write_bytes(data)
            record = TaskRecord.model_validate(
                {
                    "id": f"calib/{language}/{number}",
                    "source": {
                        "benchmark": "m3bench-calibration",
                        "source_id": f"{language}-{number}",
                        "license": "Apache-2.0",
                    },
                    "natural_language": language,
                    "prompt": PROMPTS.get(language, PROMPTS["en"]),
                    "images": [
                        {
                            "key": "picture",
                            "path": f"images/{digest}.png",
                            "sha256": digest,
                            "width": 32,
                            "height": 24,
                        }
                    ],
                    "grading": {"method": "exact_match", "timeout_s": 5.0},
                    "expected_answer": expected if expected is not None else ("tok " * max_tokens).strip(),
                    "gen": {"max_tokens": max_tokens},
                    "metadata": {"image_required": True, "group": "image"},
                }
            )
            lines.append(record.model_dump_json())
    (directory / "tasks.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory
