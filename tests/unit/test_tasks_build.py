"""The M3-HumanEval builder on a small deterministic subset, the task-set checks, and the CLI."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from typer.testing import CliRunner

from benchmark.tasks.builder import BuildOptions, build
from benchmark.tasks.cli import app
from benchmark.tasks.docstrings import docstrings
from benchmark.tasks.loaders.humaneval import read_problems
from benchmark.tasks.taskset import read_tasks, validate
from benchmark.tasks.translations import TRANSLATIONS_DIR

LANGS = ("en", "zh", "ja", "ru", "ar", "hi")


def translations_with_a_broken_entry(tmp_path: Path) -> Path:
    """The repository's translations for our languages (or generated stand-ins) plus one bad entry."""
    directory = tmp_path / "translations"
    directory.mkdir()
    problems = read_problems()[:3]
    for code in LANGS[1:]:
        source = TRANSLATIONS_DIR / f"{code}.json"
        if source.exists():
            data = json.loads(source.read_text(encoding="utf-8"))
        else:  # not written yet: keep the docstrings, mark them with the language
            data = {p.task_id: [f"[{code}] {d.content}" for d in docstrings(p.prompt)] for p in problems}
        if code == "ru":
            data["HumanEval/1"] = ["без примеров"]
        (directory / f"{code}.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return directory


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp_path = tmp_path_factory.mktemp("build")
    translations = translations_with_a_broken_entry(tmp_path)
    out = tmp_path / "set"
    options = BuildOptions(out_dir=out, languages=LANGS, limit_per_language=2, translations_dir=translations)
    report = build(options)
    assert report.problems == {"en": 2, "zh": 2, "ja": 2, "ru": 2, "ar": 2, "hi": 2}
    assert [(s.task_id, s.language) for s in report.skipped] == [("HumanEval/1", "ru")]
    return out, translations


def test_records_come_in_image_and_text_only_pairs(built: tuple[Path, Path]) -> None:
    out, _ = built
    records = read_tasks(out)
    assert len(records) == 24
    image = {r.id: r for r in records if r.metadata.group == "image"}
    text = {r.id: r for r in records if r.metadata.group == "text-only"}
    assert len(image) == len(text) == 12
    arabic = image["m3-humaneval/0/ar/image"]
    assert arabic.metadata.image_required
    assert len(arabic.images) == 1
    assert arabic.prompt.startswith("تعرض الصورة")
    assert "def has_close_elements(" in arabic.prompt
    assert ">>>" not in arabic.prompt  # the statement is only in the image
    twin = text["m3-humaneval/0/ar/text"]
    assert not twin.images
    assert ">>> has_close_elements([1.0, 2.0, 3.0], 0.5)" in twin.prompt
    assert twin.grading == arabic.grading
    assert twin.canonical_solution == arabic.canonical_solution
    assert "m3-humaneval/2/ru/image" in image  # ru skipped HumanEval/1 and took the next problem
    sizes = {(r.images[0].width, r.images[0].height) for r in image.values()}
    assert len(sizes) > 3


def test_rebuild_is_byte_identical_and_cached(built: tuple[Path, Path], tmp_path: Path) -> None:
    out, translations = built
    options = BuildOptions(out_dir=tmp_path / "again", languages=LANGS, limit_per_language=2,
                           translations_dir=translations)  # fmt: skip
    build(options)

    def digest(root: Path) -> dict[str, str]:
        return {
            str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".render-cache.json"
        }

    assert digest(out) == digest(tmp_path / "again")
    again = build(options)
    assert (again.rendered, again.reused) == (0, 12)


def test_validate_runs_canonical_and_wrong_solutions(built: tuple[Path, Path]) -> None:
    out, _ = built
    count, problems = validate(out, run_solutions=True, workers=2)
    assert (count, problems) == (24, [])


def test_validate_catches_broken_records(built: tuple[Path, Path], tmp_path: Path) -> None:
    out, _ = built
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    lines = (broken / "tasks.jsonl").read_text(encoding="utf-8").splitlines()
    first = json.loads(lines[0])
    first["images"][0]["sha256"] = "0" * 64
    second = json.loads(lines[1])
    second["id"] = first["id"]
    lines[0], lines[1] = json.dumps(first), json.dumps(second)
    (broken / "tasks.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    _, problems = validate(broken)
    assert {(p.line, p.field) for p in problems} == {(1, "images.0.sha256"), (2, "id")}

    third = json.loads(lines[2])
    del third["grading"]
    lines[2] = json.dumps(third)
    (broken / "tasks.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["validate", "--set", str(broken)])
    assert result.exit_code == 2
    assert "tasks.jsonl:3: grading: Field required" in result.output


def test_cli_build_stats_show(tmp_path: Path) -> None:
    tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0, "def": 1}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer_path = tmp_path / "tiny" / "tokenizer.json"
    tokenizer_path.parent.mkdir()
    tokenizer.save(str(tokenizer_path))
    runner = CliRunner()
    out = tmp_path / "set"
    result = runner.invoke(
        app, ["build", "--out", str(out), "--languages", "en,ar", "--limit-per-language", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "4 records" in result.output
    result = runner.invoke(app, ["stats", "--set", str(out), "--tokenizer", str(tokenizer_path), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["by_script"] == {"Arab": 2, "Latn": 2}
    assert summary["images"]["count"] == 2
    assert set(summary["prompt_tokens"]["tiny"]) == {"ar", "en"}
    result = runner.invoke(app, ["show", "m3-humaneval/0/ar/image", "--set", str(out)])
    assert result.exit_code == 0
    assert "images/" in result.output
    result = runner.invoke(app, ["show", "nope", "--set", str(out)])
    assert result.exit_code == 2
    assert "no task 'nope'" in result.output
    result = runner.invoke(app, ["build", "--out", str(out), "--languages", "xx"])
    assert result.exit_code != 0
    assert "unknown language" in result.output
