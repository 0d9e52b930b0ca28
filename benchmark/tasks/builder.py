"""M3-HumanEval: HumanEval x 10 natural languages, the statement rendered as an image, plus text-only twins.

Per problem and language two records share the same tests:

* ``group="image"``: the text part is a short instruction in that language and the entry point's
  signature; the statement itself (code with translated docstrings) is only in the PNG;
* ``group="text-only"``: the same statement in the text, no image, to measure how much the image matters.

Identifiers, code and doctest lines are never translated; grading always runs the original English prompt
as the trusted prelude. Images are content-addressed and the render cache is keyed by everything the
pixels depend on (text, size, fonts' bytes, Pillow/FreeType/raqm versions), so a rebuild only renders
what changed and the same inputs give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import PIL
from PIL import features

from benchmark.tasks.docstrings import signature_of
from benchmark.tasks.languages import LANGUAGES, Language
from benchmark.tasks.loaders.common import ImageStore, runnable_prelude
from benchmark.tasks.loaders.humaneval import LICENSE, Problem, read_problems
from benchmark.tasks.render import environment_fingerprint, render_statement, require_shaping
from benchmark.tasks.schema import TaskImage, TaskRecord
from benchmark.tasks.taskset import dump_json, write_tasks
from benchmark.tasks.translations import TRANSLATIONS_DIR, Skipped, load_language

BENCHMARK = "m3-humaneval"
FONT_SIZES = tuple(range(14, 23))
MAX_WIDTHS = (768, 1024, 1344)
TIMEOUT_S = 10.0
MEMORY_MB = 512
MAX_TOKENS = 768


@dataclass(frozen=True)
class BuildOptions:
    out_dir: Path
    languages: tuple[str, ...] = tuple(LANGUAGES)
    limit_per_language: int | None = None
    translations_dir: Path = TRANSLATIONS_DIR
    humaneval_path: Path | None = None
    text_only: bool = True


@dataclass
class BuildReport:
    problems: dict[str, int] = field(default_factory=dict)  # language -> problems built
    records: int = 0
    rendered: int = 0
    reused: int = 0
    skipped: list[Skipped] = field(default_factory=list)


def record_id(problem: Problem, language: str, group: str) -> str:
    return f"{BENCHMARK}/{problem.number}/{language}/{'text' if group == 'text-only' else group}"


def render_params(task_id: str, language: str) -> tuple[int, int]:
    """Font size and maximum width, fixed per (problem, language) so image sizes vary like real traffic."""
    digest = hashlib.sha256(f"{task_id}|{language}".encode()).digest()
    return FONT_SIZES[digest[0] % len(FONT_SIZES)], MAX_WIDTHS[digest[1] % len(MAX_WIDTHS)]


class _RenderCache:
    """key -> image facts, in ``<out>/.render-cache.json``; an entry counts only if its file exists."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / ".render-cache.json"
        self.entries: dict[str, dict[str, object]] = {}
        if self.path.is_file():
            try:
                self.entries = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                self.entries = {}

    def get(self, key: str, out_dir: Path) -> TaskImage | None:
        entry = self.entries.get(key)
        if entry is None:
            return None
        image = TaskImage.model_validate(entry)
        return image if (out_dir / image.path).is_file() else None

    def put(self, key: str, image: TaskImage) -> None:
        self.entries[key] = image.model_dump()

    def save(self) -> None:
        dump_json(self.path, self.entries)


def _statement_image(
    statement: str,
    task_id: str,
    lang: Language,
    *,
    store: ImageStore,
    cache: _RenderCache,
    report: BuildReport,
) -> TaskImage:
    size, max_width = render_params(task_id, lang.code)
    facts = {"text": statement, "lang": lang.code, "size": size, "width": max_width}
    key = hashlib.sha256(
        (json.dumps(facts, sort_keys=True) + environment_fingerprint(lang.script)).encode()
    ).hexdigest()
    cached = cache.get(key, store.root)
    if cached is not None:
        report.reused += 1
        return cached
    rendered = render_statement(statement, lang.code, lang.script, size, max_width)
    image = store.put(rendered.png, key="statement")
    cache.put(key, image)
    report.rendered += 1
    return image


def _records(problem: Problem, lang: Language, statement: str, image: TaskImage | None) -> list[TaskRecord]:
    signature = signature_of(problem.prompt, problem.entry_point)
    common = {
        "source": {"benchmark": BENCHMARK, "source_id": problem.task_id, "license": LICENSE},
        "natural_language": lang.code,
        "programming_language": "python",
        "entry_point": problem.entry_point,
        "signature": signature,
        "canonical_solution": problem.solution_program,
        "grading": {
            "method": "execution",
            "tests": problem.tests,
            "prelude": runnable_prelude(problem.prompt),
            "timeout_s": TIMEOUT_S,
            "memory_mb": MEMORY_MB,
        },
        "gen": {"max_tokens": MAX_TOKENS},
    }
    out = []
    if image is not None:
        prompt = f"{lang.image_instruction}\n\n```python\n{signature}\n```\n"
        out.append(
            {
                **common,
                "id": record_id(problem, lang.code, "image"),
                "prompt": prompt,
                "images": [image],
                "metadata": {"image_required": True, "group": "image"},
            }
        )
    prompt = f"{lang.text_instruction}\n\n```python\n{statement.strip(chr(10))}\n```\n"
    out.append(
        {
            **common,
            "id": record_id(problem, lang.code, "text-only"),
            "prompt": prompt,
            "metadata": {"image_required": False, "group": "text-only"},
        }
    )
    return [TaskRecord.model_validate(item) for item in out]


def build(options: BuildOptions, progress: Callable[[str], None] | None = None) -> BuildReport:
    """Build the set into ``options.out_dir`` (tasks.jsonl, images/, manifest.json)."""
    require_shaping()
    for code in options.languages:
        if code not in LANGUAGES:
            raise ValueError(f"unknown language {code!r}; known: {', '.join(LANGUAGES)}")
    problems = read_problems(options.humaneval_path)
    prompts = {problem.task_id: problem.prompt for problem in problems}
    store = ImageStore(options.out_dir)
    cache = _RenderCache(options.out_dir)
    report = BuildReport()
    per_language: dict[str, list[tuple[Problem, str]]] = {}
    for code in options.languages:
        if code == "en":
            chosen = [(problem, problem.prompt) for problem in problems]
        else:
            loaded = load_language(code, prompts, options.translations_dir)
            report.skipped += loaded.skipped
            chosen = [
                (p, loaded.localized_prompts[p.task_id])
                for p in problems
                if p.task_id in loaded.localized_prompts
            ]
        if options.limit_per_language is not None:
            chosen = chosen[: options.limit_per_language]
        per_language[code] = chosen
        report.problems[code] = len(chosen)
    records: list[TaskRecord] = []
    statements = {(code, p.task_id): text for code, chosen in per_language.items() for p, text in chosen}
    for problem in problems:  # problem-major order: interleaves languages in the file
        wanted = [code for code in options.languages if (code, problem.task_id) in statements]
        for code in wanted:
            lang, statement = LANGUAGES[code], statements[(code, problem.task_id)]
            image = _statement_image(
                statement, problem.task_id, lang, store=store, cache=cache, report=report
            )
            built = _records(problem, lang, statement, image)
            records += built if options.text_only else built[:1]
        if wanted and progress is not None:
            progress(problem.task_id)
    cache.save()
    write_tasks(options.out_dir, records)
    report.records = len(records)
    _write_manifest(options, report)
    return report


def _write_manifest(options: BuildOptions, report: BuildReport) -> None:
    dump_json(
        options.out_dir / "manifest.json",
        {
            "benchmark": BENCHMARK,
            "languages": {code: {"problems": n} for code, n in report.problems.items()},
            "records": report.records,
            "text_only_variant": options.text_only,
            "limit_per_language": options.limit_per_language,
            "skipped_translations": [str(item) for item in report.skipped],
            "renderer": {
                "pillow": PIL.__version__,
                "freetype": features.version("freetype2"),
                "raqm": features.version("raqm"),
            },
        },
    )
