"""`m3bench tasks export --format parquet`: the round trip through the Hugging Face `datasets` library."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from benchmark.tasks.builder import BuildOptions, build
from benchmark.tasks.cli import app
from benchmark.tasks.schema import TaskRecord
from benchmark.tasks.taskset import read_tasks


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("set")
    build(BuildOptions(out_dir=out, languages=("en", "ar", "ja"), limit_per_language=2))
    return out


def _in_child(check: str, small_set: Path, tmp_path: Path) -> None:
    """Run ``check`` (a function of this module) in a fresh interpreter. By these tests the suite's process
    has loaded torch, vLLM and Ray, and pyarrow (the export's writer, and what `datasets` reads with)
    crashed it once there: a segmentation fault in the CI-equivalent run of 2026-12-05 14:34, while the
    tests pass alone and with the unit tests alone."""
    repo = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(
        [sys.executable, __file__, check, str(small_set), str(tmp_path)],
        capture_output=True, text=True, timeout=600, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert done.stdout.strip().endswith(f"{check} ok")


def test_round_trip_through_datasets(small_set: Path, tmp_path: Path) -> None:
    _in_child("_round_trip", small_set, tmp_path)


def test_export_refuses_a_set_with_a_missing_image(small_set: Path, tmp_path: Path) -> None:
    _in_child("_refuses_a_missing_image", small_set, tmp_path)


def _round_trip(small_set: Path, tmp_path: Path) -> None:
    import datasets

    result = CliRunner().invoke(
        app, ["export", "--format", "parquet", str(tmp_path / "out"), "--set", str(small_set)]
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith("12 records -> ")
    loaded = datasets.load_dataset(
        "parquet",
        data_files=str(tmp_path / "out" / "data" / "*.parquet"),
        split="train",
        cache_dir=str(tmp_path / "hf-cache"),
    )
    assert isinstance(loaded.features["image"], datasets.Image)
    records = {record.id: record for record in read_tasks(small_set)}
    assert len(loaded) == len(records) == 12
    for row in loaded:
        record = records[row["id"]]
        assert TaskRecord.model_validate_json(row["record"]) == record  # lossless
        assert (row["prompt"], row["tests"], row["natural_language"], row["group"]) == (
            record.prompt, record.grading.tests, record.natural_language, record.metadata.group
        )  # fmt: skip
        if record.images:
            image = row["image"]
            assert isinstance(image, Image.Image)
            assert image.size == (record.images[0].width, record.images[0].height)
            stored = (small_set / record.images[0].path).read_bytes()
            assert hashlib.sha256(stored).hexdigest() == record.images[0].sha256
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            assert (
                Image.open(io.BytesIO(buffer.getvalue())).tobytes()
                == Image.open(io.BytesIO(stored)).tobytes()
            )
        else:
            assert row["image"] is None
    # the folder itself loads as a dataset (its README names the split)
    again = datasets.load_dataset(str(tmp_path / "out"), split="test", cache_dir=str(tmp_path / "hf-cache2"))
    assert len(again) == 12
    card = (tmp_path / "out" / "README.md").read_text(encoding="utf-8")
    assert "license: mit" in card
    assert "- ar\n" in card


def _refuses_a_missing_image(small_set: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    lines = (small_set / "tasks.jsonl").read_text(encoding="utf-8").splitlines()
    first = json.loads(lines[0])
    first["images"][0]["path"] = "images/missing.png"
    (broken / "tasks.jsonl").write_text(json.dumps(first) + "\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["export", str(tmp_path / "out"), "--set", str(broken)])
    assert result.exit_code == 2
    assert "line 1 (m3-humaneval/0/en/image): cannot read" in result.output
    assert not list((tmp_path / "out").rglob("*.parquet"))  # nothing half-written is left
    bad_format = CliRunner().invoke(
        app, ["export", "--format", "csv", str(tmp_path / "out"), "--set", str(small_set)]
    )
    assert bad_format.exit_code != 0


if __name__ == "__main__":  # a check's own interpreter (_in_child)
    globals()[sys.argv[1]](Path(sys.argv[2]), Path(sys.argv[3]))
    print(f"{sys.argv[1]} ok")
