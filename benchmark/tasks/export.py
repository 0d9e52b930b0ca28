"""Export a task set as Parquet in the layout the Hugging Face ``datasets`` library loads.

``OUT/data/test-00000-of-00001.parquet`` (one row per record, images embedded) and ``OUT/README.md`` (a
short card whose YAML header names the split's files). Load it with
``datasets.load_dataset("parquet", data_files="OUT/data/*.parquet")`` or ``load_dataset("OUT")``.

The image column uses the layout of the library's ``Image`` feature, a struct ``{bytes, path}`` (null for
text-only records), and the Parquet schema carries the ``huggingface`` feature metadata, so ``datasets``
decodes it to a PIL image. ``record`` holds the whole ``TaskRecord`` as JSON (images by path), so the
export loses nothing. Only ``pyarrow`` is needed to write; rows are written in groups, so memory stays
flat whatever the set's size.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from benchmark.tasks.loaders.common import LoaderError
from benchmark.tasks.schema import TaskRecord
from benchmark.tasks.taskset import iter_tasks

SPLIT_FILE = "data/test-00000-of-00001.parquet"
ROWS_PER_GROUP = 64


class ExportError(ValueError):
    """The set cannot be exported as asked (missing image, more than one image, no pyarrow)."""


_STRING: dict[str, object] = {"dtype": "string", "_type": "Value"}
_COLUMNS: list[tuple[str, str]] = [  # name, arrow type name (see _arrow_type)
    ("id", "string"), ("source_benchmark", "string"), ("source_id", "string"), ("license", "string"),
    ("natural_language", "string"), ("programming_language", "string"), ("prompt", "string"),
    ("image", "image"), ("entry_point", "string"), ("signature", "string"),
    ("canonical_solution", "string"), ("grading_method", "string"), ("tests", "string"),
    ("prelude", "string"), ("timeout_s", "float64"), ("memory_mb", "int64"),
    ("expected_answer", "string"), ("choices", "strings"), ("max_tokens", "int64"), ("stop", "strings"),
    ("image_required", "bool"), ("group", "string"), ("difficulty", "string"), ("record", "string"),
]  # fmt: skip
_FEATURES: dict[str, dict[str, object]] = {
    "string": _STRING,
    "float64": {"dtype": "float64", "_type": "Value"},
    "int64": {"dtype": "int64", "_type": "Value"},
    "bool": {"dtype": "bool", "_type": "Value"},
    "image": {"_type": "Image"},
    "strings": {"feature": _STRING, "_type": "List"},
}


def _schema() -> Any:
    try:
        import pyarrow as pa
    except ImportError:
        raise ExportError("Parquet export needs pyarrow: pip install pyarrow") from None
    types = {
        "string": pa.string(),
        "float64": pa.float64(),
        "int64": pa.int64(),
        "bool": pa.bool_(),
        "image": pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
        "strings": pa.list_(pa.string()),
    }
    features = {name: _FEATURES[kind] for name, kind in _COLUMNS}
    metadata = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
    return pa.schema([(name, types[kind]) for name, kind in _COLUMNS], metadata=metadata)


def _row(root: Path, line: int, record: TaskRecord) -> dict[str, object]:
    if len(record.images) > 1:
        raise ExportError(
            f"line {line} ({record.id}): {len(record.images)} images; export holds one per record"
        )
    image = None
    if record.images:
        path = root / record.images[0].path
        try:
            image = {"bytes": path.read_bytes(), "path": record.images[0].path}
        except OSError as exc:
            raise ExportError(f"line {line} ({record.id}): cannot read {path}: {exc.strerror}") from None
    grading = record.grading
    return {
        "id": record.id,
        "source_benchmark": record.source.benchmark,
        "source_id": record.source.source_id,
        "license": record.source.license,
        "natural_language": record.natural_language,
        "programming_language": record.programming_language,
        "prompt": record.prompt,
        "image": image,
        "entry_point": record.entry_point,
        "signature": record.signature,
        "canonical_solution": record.canonical_solution,
        "grading_method": grading.method,
        "tests": grading.tests,
        "prelude": grading.prelude,
        "timeout_s": grading.timeout_s,
        "memory_mb": grading.memory_mb,
        "expected_answer": record.expected_answer,
        "choices": record.choices,
        "max_tokens": record.gen.max_tokens,
        "stop": record.gen.stop,
        "image_required": record.metadata.image_required,
        "group": record.metadata.group,
        "difficulty": record.metadata.difficulty,
        "record": record.model_dump_json(),
    }


def _batches(rows: Iterable[dict[str, object]], size: int) -> Iterator[list[dict[str, object]]]:
    batch: list[dict[str, object]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def export_parquet(task_set: Path, out: Path) -> tuple[int, Path]:
    """Write ``out/data/...parquet`` and ``out/README.md``; returns (rows, parquet path)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _schema()
    root = task_set if task_set.is_dir() else task_set.parent
    target = out / SPLIT_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".parquet.part")
    count = 0
    languages: set[str] = set()
    licenses: set[str] = set()
    try:
        with pq.ParquetWriter(partial, schema, compression="zstd") as writer:
            rows = (_row(root, line, record) for line, record in iter_tasks(task_set))
            for batch in _batches(rows, ROWS_PER_GROUP):
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                count += len(batch)
                languages.update(str(row["natural_language"]) for row in batch)
                licenses.update(str(row["license"]) for row in batch)
    except (ExportError, LoaderError):
        partial.unlink(missing_ok=True)
        raise
    partial.replace(target)
    (out / "README.md").write_text(_card(task_set, count, sorted(languages), licenses), encoding="utf-8")
    return count, target


def _card(task_set: Path, rows: int, languages: list[str], licenses: set[str]) -> str:
    licence = "mit" if licenses and all(text.startswith("MIT") for text in licenses) else "other"
    return (
        "---\n"
        "configs:\n"
        "- config_name: default\n"
        "  data_files:\n"
        "  - split: test\n"
        f"    path: {SPLIT_FILE}\n"
        "language:\n" + "".join(f"- {code}\n" for code in languages) + f"license: {licence}\n"
        "---\n\n"
        f"# {task_set.name}\n\n"
        f"{rows} task records exported by `m3bench tasks export` (m3bench's TaskRecord, one row each;\n"
        "`record` holds the full record as JSON, `image` the statement image for image tasks).\n"
        "The datasheet (source, licence, languages, how the translations were made and checked, known\n"
        "limits) is docs/tasks.md in the m3bench repository.\n"
    )
