"""Reviewed translations of HumanEval's problem prose: ``data/translations/<lang>.json``.

Format (written by the translators): a JSON object mapping a task id to the list of its translated
docstrings, one per triple-quoted docstring of the original prompt, in order, content only. Lines with
``>>>`` stay verbatim; identifiers and code are not translated. An entry that breaks a rule is skipped
with its task id, language and reason; the rest of the file is still used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from benchmark.tasks.docstrings import TranslationRejectedError, localize

TRANSLATIONS_DIR = Path(__file__).parent / "data" / "translations"


@dataclass(frozen=True)
class Skipped:
    task_id: str
    language: str
    reason: str

    def __str__(self) -> str:
        return f"{self.language} {self.task_id}: {self.reason}"


@dataclass
class LanguageTranslations:
    language: str
    localized_prompts: dict[str, str] = field(default_factory=dict)  # task id -> localized prompt
    skipped: list[Skipped] = field(default_factory=list)


def available_languages(directory: Path = TRANSLATIONS_DIR) -> list[str]:
    return sorted(path.stem for path in directory.glob("*.json"))


def load_language(
    language: str, prompts: dict[str, str], directory: Path = TRANSLATIONS_DIR
) -> LanguageTranslations:
    """Localized prompts for every valid entry of ``<language>.json``; ``prompts`` maps id -> original."""
    result = LanguageTranslations(language)
    path = directory / f"{language}.json"
    if not path.exists():
        return result
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        result.skipped.append(Skipped("*", language, f"{path.name} is not readable JSON: {exc}"))
        return result
    if not isinstance(data, dict):
        result.skipped.append(Skipped("*", language, f"{path.name} must hold a JSON object"))
        return result
    for task_id, entry in data.items():
        original = prompts.get(task_id)
        if original is None:
            result.skipped.append(Skipped(task_id, language, "no such HumanEval task"))
            continue
        try:
            result.localized_prompts[task_id] = localize(original, entry)
        except TranslationRejectedError as exc:
            result.skipped.append(Skipped(task_id, language, str(exc)))
    return result
