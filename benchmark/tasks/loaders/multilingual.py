"""Multilingual text sets derived from HumanEval: HumanEval-XL and mHumanEval.

HumanEval-XL (``data/<pl>/<Language>.jsonl``): ``task_id`` ("python/0"), ``language`` (programming
language), ``natural_language`` (an English name: "Arabic"), ``prompt``, ``description``,
``entry_point``, ``canonical_solution`` (body), ``test`` (defines ``check``).

mHumanEval (``mHumanEval-<flores code>.json`` arrays, expert ``.json`` files one object per line):
``task_id`` ("HumanEval/0"), ``nl`` (a FLORES-200 code: "arb_Arab"), ``pl``, ``prompt``,
``canonical_solution`` (body, sometimes unindented), ``test`` (``tests`` in the Hub release). It has no
entry point field: it is the prompt's last top-level function. CSV exports carry ``Unnamed: N`` columns,
which are ignored.
"""

from __future__ import annotations

from pathlib import Path

from benchmark.tasks.docstrings import last_function
from benchmark.tasks.loaders.common import (
    LoaderError,
    Row,
    check_call_tests,
    completion_program,
    read_rows,
    runnable_prelude,
)
from benchmark.tasks.schema import TaskRecord

XL_LANGUAGES = {
    "English": "en", "Russian": "ru", "Chinese": "zh", "German": "de", "Spanish": "es", "French": "fr",
    "Italian": "it", "Portuguese": "pt", "Greek": "el", "Hungarian": "hu", "Dutch": "nl", "Finnish": "fi",
    "Indonesian": "id", "Turkish": "tr", "Arabic": "ar", "Vietnamese": "vi", "Bulgarian": "bg",
    "Persian": "fa", "Malay": "ms", "Hebrew": "he", "Estonian": "et", "Tagalog": "tl", "Afrikaans": "af",
}  # fmt: skip
# FLORES-200 language part -> BCP-47 primary subtag (others keep their ISO 639-3 code, which BCP-47 allows)
_FLORES_PRIMARY = {
    "arb": "ar", "ben": "bn", "deu": "de", "eng": "en", "fra": "fr", "hin": "hi", "ita": "it", "jpn": "ja",
    "kor": "ko", "por": "pt", "rus": "ru", "spa": "es", "swh": "sw", "tel": "te", "sin": "si", "zul": "zu",
    "zho": "zh", "tur": "tr", "vie": "vi", "ind": "id", "nld": "nl", "pol": "pl", "ukr": "uk", "heb": "he",
    "ell": "el", "fin": "fi", "hun": "hu", "ces": "cs", "dan": "da", "swe": "sv", "tha": "th", "urd": "ur",
}  # fmt: skip
# scripts that BCP-47 leaves implicit for these languages
_USUAL_SCRIPT = {"ar": "Arab", "bn": "Beng", "hi": "Deva", "ja": "Jpan", "ko": "Kore", "ru": "Cyrl",
                 "uk": "Cyrl", "he": "Hebr", "el": "Grek", "th": "Thai", "ur": "Arab", "si": "Sinh",
                 "te": "Telu"}  # fmt: skip


def flores_to_bcp47(code: str) -> str:
    """'arb_Arab' -> 'ar', 'zho_Hant' -> 'zh-Hant', 'fon_Latn' -> 'fon'."""
    language, _, script = code.partition("_")
    primary = _FLORES_PRIMARY.get(language, language)
    usual = _USUAL_SCRIPT.get(primary, "Latn")
    if primary == "zh":
        return f"zh-{script}" if script else "zh"
    return primary if not script or script == usual else f"{primary}-{script}"


def _python_or_as_is(programming_language: str) -> str:
    lowered = programming_language.lower()
    return "python" if lowered in ("python", "py", "python3") else lowered


def _record(
    row: Row,
    *,
    benchmark: str,
    license_: str,
    record_id: str,
    source_id: str,
    natural_language: str,
    programming_language: str,
    prompt: str,
    entry_point: str | None,
    body: str,
    test: str,
) -> TaskRecord:
    python = programming_language == "python"
    try:
        return TaskRecord.model_validate(
            {
                "id": record_id,
                "source": {"benchmark": benchmark, "source_id": source_id, "license": license_},
                "natural_language": natural_language,
                "programming_language": programming_language,
                "prompt": prompt,
                "entry_point": entry_point,
                "canonical_solution": completion_program(prompt, body) if python else prompt + body,
                "grading": {
                    "method": "execution",
                    "tests": check_call_tests(test, entry_point) if python and entry_point else test,
                    "prelude": runnable_prelude(prompt) if python else None,
                },
                "metadata": {"image_required": False, "group": "text-only"},
            }
        )
    except ValueError as exc:
        raise LoaderError(row.path, row.line, None, f"does not make a valid task: {exc}") from None


def load_humaneval_xl(path: Path) -> list[TaskRecord]:
    records = []
    for row in read_rows(path):
        task_id, name = row.text("task_id"), row.text("natural_language")
        language = XL_LANGUAGES.get(name)
        if language is None:
            raise LoaderError(path, row.line, "natural_language", f"unknown language {name!r}")
        programming = _python_or_as_is(row.text("language"))
        records.append(
            _record(
                row,
                benchmark="humaneval-xl",
                license_="Apache-2.0 (HumanEval-XL)",
                record_id=f"humaneval-xl/{language}/{task_id}",
                source_id=task_id,
                natural_language=language,
                programming_language=programming,
                prompt=row.text("prompt"),
                entry_point=row.text("entry_point"),
                body=row.text("canonical_solution"),
                test=row.text("test"),
            )
        )
    return records


def load_mhumaneval(path: Path) -> list[TaskRecord]:
    records = []
    for row in read_rows(path):
        flores = row.text("nl")
        if "_" not in flores:
            raise LoaderError(
                path, row.line, "nl", f"expected a FLORES-200 code like arb_Arab, got {flores!r}"
            )
        prompt = row.text("prompt")
        programming = _python_or_as_is(row.text("pl"))
        entry_point = last_function(prompt) if programming == "python" else None
        if programming == "python" and not entry_point:
            raise LoaderError(path, row.line, "prompt", "no top-level function to use as the entry point")
        task_id = row.text("task_id", optional=True) or f"HumanEval/{row.line - 1}"
        _, test = row.first_text("test", "tests")
        language = flores_to_bcp47(flores)
        records.append(
            _record(
                row,
                benchmark="mhumaneval",
                license_="CC-BY-ND-4.0 (mHumanEval)",
                record_id=f"mhumaneval/{flores}/{task_id}",
                source_id=task_id,
                natural_language=language,
                programming_language=programming,
                prompt=prompt,
                entry_point=entry_point,
                body=row.text("canonical_solution"),
                test=test,
            )
        )
    return records
