"""The report's Accuracy section from synthetic accuracy runs: pass@1 traced to records, quantization
schemes, image versus text-only, and low load versus saturation with its sign test and named incidents."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from loadgen.records import RecordWriter, RequestRecord
from m3bench.report import ReportOptions, build_report
from m3bench.report.accuracy import compare_loads, sign_test_p

S = 1_000_000_000
LANGUAGES = ("en", "zh")
PROBLEMS = 5  # per language: 5 x 2 languages x 2 groups = 20 tasks per run


def _record(model: str, task: str, language: str, group: str, index: int, **extra: Any) -> RequestRecord:
    fields: dict[str, Any] = {
        "run_id": "run",
        "request_id": f"{model}-{index}",
        "stage": "s0-c1",
        "stage_index": 0,
        "phase": "measure",
        "mode": "closed",
        "target": 1,
        "worker": "local",
        "model": model,
        "task_id": task,
        "task_group": group,
        "language": language,
        "sent_ns": index * S,
        "first_token_ns": index * S + S // 10,
        "end_ns": index * S + S // 2,
        "chunk_offsets_ns": [S // 10, S // 5],
        "timing": "kernel",
        "anchor_wall_ns": 1_700_000_000 * S,
        "anchor_perf_ns": 0,
        "output_tokens": 60,
        "finish_reason": "stop",
        "status": "ok",
        "grade": "pass",
    }
    fields.update(extra)
    return RequestRecord(**fields)


def _tasks() -> list[tuple[str, str, str]]:
    return [
        (f"m3-humaneval/{n}/{lang}/{'image' if group == 'image' else 'text'}", lang, group)
        for n in range(PROBLEMS)
        for lang in LANGUAGES
        for group in ("image", "text-only")
    ]


def _run(
    directory: Path,
    model: str,
    fails: set[str] | None = None,
    odd: dict[str, dict[str, Any]] | None = None,
    target: int = 1,
    planned: int | None = None,
    asked: int | None = None,
) -> list[RequestRecord]:
    """One accuracy run: every task once (or the first ``asked``), failing ``fails``; ``odd`` overrides."""
    directory.mkdir(parents=True)
    tasks = _tasks()
    profile = {
        "name": "accuracy",
        "mode": "closed",
        "sampling": {"by": "cycle"},
        "sweep": {"concurrencies": [target], "measure_requests": planned or len(tasks)},
        "request": {"max_tokens": None, "extra_body": {}},
    }
    (directory / "run.json").write_text(json.dumps({"endpoint": "http://127.0.0.1:1", "profile": profile}))
    records = []
    writer = RecordWriter(directory / "records.jsonl")
    for index, (task, language, group) in enumerate(tasks[:asked]):
        extra: dict[str, Any] = {"target": target, "stage": f"s0-c{target}"}
        if task in (fails or set()):
            extra["grade"] = "fail"
        extra.update((odd or {}).get(task, {}))
        record = _record(model, task, language, group, index, **extra)
        writer.write(record)
        records.append(record)
    writer.close()
    return records


def _sweep(directory: Path, model: str) -> None:
    directory.mkdir(parents=True)
    profile = {
        "name": "sweep",
        "mode": "closed",
        "request": {"max_tokens": 48, "extra_body": {"ignore_eos": True}},
    }
    (directory / "run.json").write_text(json.dumps({"endpoint": "http://127.0.0.1:1", "profile": profile}))
    writer = RecordWriter(directory / "records.jsonl")
    for index in range(6):
        writer.write(_record(model, f"t{index}", "en", "image", index, grade="fail", finish_reason="length"))
    writer.close()


def _entry(model: str, quantization: str, run_dir: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "quantization": quantization, "family": "tiny-llava", "run_dir": run_dir, **extra}


def test_sign_test_tolerates_seven_one_way_flips_at_alpha_001() -> None:
    assert sign_test_p(0, 0) == 1.0
    assert sign_test_p(7, 0) == pytest.approx(2 / 2**7)  # 0.0156: within noise
    assert sign_test_p(8, 0) == pytest.approx(2 / 2**8)  # 0.0078: not
    assert sign_test_p(0, 8) == sign_test_p(8, 0)
    assert sign_test_p(3, 1) == pytest.approx(2 * (1 + 4) / 16)
    assert sign_test_p(2, 2) == 1.0


def test_compare_loads_pairs_tasks_and_names_what_explains_a_flip(tmp_path: Path) -> None:
    low = _run(tmp_path / "low", "m")
    cut, late = "m3-humaneval/0/en/image", "m3-humaneval/1/zh/text"
    saturated = _run(
        tmp_path / "sat",
        "m",
        fails={"m3-humaneval/2/en/text"},
        odd={
            cut: {"finish_reason": "length", "grade": "fail", "output_tokens": 768},
            late: {"status": "timeout", "grade": "ungraded"},
        },
        target=8,
    )
    result = compare_loads(low, saturated)
    assert result.tasks == 20
    assert (result.low, result.saturated) == (1.0, pytest.approx(17 / 20))
    assert sorted(result.worse) == sorted([cut, late, "m3-humaneval/2/en/text"])
    assert result.better == []
    assert result.p_value == pytest.approx(2 / 2**3)
    assert result.within_noise
    assert sorted(result.explained) == sorted([cut, late])
    note = result.describe()
    assert f"{cut} (truncated)" in note
    assert f"{late} (timeout)" in note
    assert "2 of the 3 pass->fail flips" in note


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("results")
    tasks = _tasks()
    image_tasks = [t for t, _, g in tasks if g == "image"]
    text_tasks = [t for t, _, g in tasks if g == "text-only"]
    _sweep(root / "load/bf16", "tiny-llava-bf16")
    _sweep(root / "load/awq", "tiny-llava-awq-g32")
    # BF16: passes everything but two zh text-only tasks. AWQ g32: fails 4 image tasks at low load and
    # the other 6 and 2 text-only tasks at saturation too (8 one-way flips: not noise). GPTQ: a run cut
    # short after 12 of its 20 requests.
    _run(root / "acc/bf16", "tiny-llava-bf16", fails={"m3-humaneval/0/zh/text", "m3-humaneval/1/zh/text"})
    _run(root / "acc/awq", "tiny-llava-awq-g32", fails=set(image_tasks[:4]))
    _run(root / "acc/awq-sat", "tiny-llava-awq-g32", fails={*image_tasks, *text_tasks[:2]}, target=8)
    _run(root / "acc/gptq", "tiny-llava-gptq", asked=12)
    index = {
        "run": {
            "run_id": "demo-acc",
            "started": "2025-01-01T00:00:00Z",
            "machine": "test box",
            "accuracy_note": "memorizing stand-ins: this measures the serving path and quantization",
        },
        "sweeps": [
            {**_entry("tiny-llava-bf16", "none", "load/bf16"), "replicas": 1, "accelerator": "cpu-1core"},
            {**_entry("tiny-llava-awq-g32", "awq", "load/awq"), "replicas": 1, "accelerator": "cpu-1core"},
        ],
        "accuracy": [
            _entry("tiny-llava-bf16", "none", "acc/bf16", load="low"),
            _entry("tiny-llava-awq-g32", "awq", "acc/awq", load="low"),
            _entry("tiny-llava-awq-g32", "awq", "acc/awq-sat", load="saturation"),
            _entry("tiny-llava-gptq", "gptq", "acc/gptq", load="low", group_size=128),
        ],
    }
    (root / "index.json").write_text(json.dumps(index))
    build_report(root, ReportOptions())
    return root, json.loads((root / "report/report.json").read_text())


def test_pass_at_1_by_model_language_scheme_and_group(report: tuple[Path, dict[str, Any]]) -> None:
    _, doc = report
    rows = {row["model"]: row for row in doc["accuracy"]["models"]}
    bf16, awq, gptq = rows["tiny-llava-bf16"], rows["tiny-llava-awq-g32"], rows["tiny-llava-gptq"]
    assert bf16["pass_at_1"] == pytest.approx(18 / 20)
    assert bf16["by_language"]["zh"]["pass_at_1"] == pytest.approx(8 / 10)
    assert bf16["by_language"]["en"]["pass_at_1"] == 1.0
    assert bf16["image_minus_text"] == pytest.approx(1.0 - 8 / 10)
    assert awq["image_minus_text"] == pytest.approx(6 / 10 - 1.0)
    assert [row["scheme"] for row in (bf16, awq, gptq)] == ["BF16", "AWQ g32", "GPTQ g128"]
    assert awq["group_size"] == 32  # from the name's -g32 suffix
    assert awq["vs_bf16"] == pytest.approx(16 / 20 - 18 / 20)
    assert gptq["tasks"] == 12
    assert gptq["vs_bf16"] == pytest.approx(2 / 12)  # over the 12 tasks both asked (BF16 fails 2 of them)
    schemes = {row["scheme"]: row for row in doc["accuracy"]["schemes"]}
    assert next(iter(schemes)) == "BF16"
    assert schemes["AWQ g32"]["pass_at_1"] == pytest.approx(16 / 20)
    # The model summary takes the accuracy run, not the cut sweeps (which fail every task).
    models = {model["model"]: model for model in doc["models"]}
    assert models["tiny-llava-bf16"]["accuracy"] == pytest.approx(18 / 20)
    assert models["tiny-llava-bf16"]["accuracy_by_language"]["zh"]["accuracy"] == pytest.approx(0.8)
    assert "accuracy run" in models["tiny-llava-bf16"]["accuracy_source"]
    assert "ignore_eos" in models["tiny-llava-bf16"]["sweeps"][0]["output_note"]


def test_load_comparison_and_warnings(report: tuple[Path, dict[str, Any]]) -> None:
    _, doc = report
    (row,) = doc["accuracy"]["load"]
    assert row["model"] == "tiny-llava-awq-g32"
    assert row["saturation_offered"] == "8 streams"
    assert (row["pass_at_1_low"], row["pass_at_1_saturation"]) == (pytest.approx(0.8), pytest.approx(0.4))
    assert len(row["worse"]) == 8
    assert row["p_value"] == pytest.approx(2 / 2**8)
    assert row["within_noise"] is False
    warnings = "\n".join(doc["warnings"])
    assert "tiny-llava-awq-g32: accuracy depends on load" in warnings
    assert "asked 12 of 20 planned requests" in warnings
    runs = {run["label"]: run for run in doc["accuracy"]["runs"]}
    assert runs["tiny-llava-gptq low"]["coverage"] is not None
    assert runs["tiny-llava-bf16 low"]["output_limit"] == "the task's own max_tokens"
    assert runs["tiny-llava-bf16 low"]["offered"] == "1 stream"


def test_markdown_and_html_show_the_section(report: tuple[Path, dict[str, Any]]) -> None:
    root, _ = report
    markdown = (root / "report/report.md").read_text()
    html = (root / "report/report.html").read_text()
    for text in (markdown, html):
        assert "memorizing stand-ins" in text
        for heading in ("By quantization", "Image versus text-only", "Low load versus saturation"):
            assert heading in text
        assert "GPTQ g128" in text
        assert "ignore_eos" in text  # the sweeps' note
    assert "| tiny-llava-awq-g32 | AWQ g32 |" in markdown
    assert "**not within noise**" in markdown
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert "images/accuracy-overview.png" in links
    assert all((root / "report" / link).is_file() for link in links)
