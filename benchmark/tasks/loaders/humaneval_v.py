"""HumanEval-V (image-grounded Python tasks, English), from a local copy.

Fields of the Hub release: ``qid``, ``image`` (``diagram`` in later releases), ``function_signature``
(problem description, imports and the signature to complete), ``test_script`` (a script that calls the
solution itself), ``ground_truth_solution``, ``image_description`` (later
``ground_truth_diagram_description``), and in later releases ``capability_aspects`` and ``task_type``.

Accepted files: the Hub's Parquet shards (needs ``pyarrow``; images are ``{bytes, path}`` structs) or a
JSON/JSONL export whose image is a path relative to the file, ``{"path": ...}`` or ``{"bytes": <base64>}``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from pathlib import Path

from benchmark.tasks.docstrings import last_function
from benchmark.tasks.loaders.common import ImageStore, LoaderError, Row, read_rows, runnable_prelude
from benchmark.tasks.schema import TaskRecord

LICENSE = "Apache-2.0 (HumanEval-V)"
INSTRUCTION = (
    "Complete the Python function below based on the image and the code context. The signature alone "
    "does not contain the whole problem: the image gives the critical details. Reply with the complete "
    "solution, including the function signature, in a single ```python code block.\n\n"
)


def _parquet_rows(path: Path) -> Iterator[Row]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise LoaderError(path, None, None, "reading Parquet needs pyarrow (pip install pyarrow)") from None
    table = pq.read_table(path)
    for index, item in enumerate(table.to_pylist(), start=1):
        yield Row(path, index, item)


def _image_bytes(row: Row, field: str, value: object) -> bytes:
    if isinstance(value, dict):
        raw = value.get("bytes")
        if isinstance(raw, bytes | bytearray):
            return bytes(raw)
        if isinstance(raw, str) and raw:
            try:
                return base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                raise LoaderError(row.path, row.line, field, "bytes are not valid base64") from None
        value = value.get("path")
    if isinstance(value, str) and value:
        image_path = (row.path.parent / value).resolve()
        if not image_path.is_file():
            raise LoaderError(row.path, row.line, field, f"image file {value!r} not found")
        return image_path.read_bytes()
    raise LoaderError(row.path, row.line, field, "expected an image path, {'path': ...} or {'bytes': ...}")


def load_humaneval_v(path: Path, out_dir: Path) -> list[TaskRecord]:
    """Records for ``path``; their images are copied into ``out_dir/images/`` by content hash."""
    store = ImageStore(out_dir)
    rows = _parquet_rows(path) if path.suffix == ".parquet" else read_rows(path)
    records = []
    for row in rows:
        qid = row.text("qid")
        field = "image" if "image" in row.data else "diagram"
        if field not in row.data:
            raise LoaderError(path, row.line, "image", "missing (also looked for diagram)")
        try:
            image = store.put(_image_bytes(row, field, row.data[field]), key="image")
        except ValueError as exc:
            raise LoaderError(path, row.line, field, str(exc)) from None
        signature = row.text("function_signature")
        entry_point = last_function(signature)
        if not entry_point:
            raise LoaderError(path, row.line, "function_signature", "no function to complete")
        test = row.text("test_script")
        solution = row.text("ground_truth_solution", optional=True)
        records.append(
            TaskRecord.model_validate(
                {
                    "id": f"humaneval-v/{qid}",
                    "source": {"benchmark": "humaneval-v", "source_id": qid, "license": LICENSE},
                    "natural_language": "en",
                    "prompt": f"{INSTRUCTION}```python\n{signature.rstrip()}\n```\n",
                    "images": [image],
                    "entry_point": entry_point,
                    "signature": signature,
                    "canonical_solution": solution or None,
                    "grading": {"method": "execution", "tests": test, "prelude": runnable_prelude(signature)},
                    "gen": {"max_tokens": 1024},
                    "metadata": {
                        "image_required": True,
                        "group": "image",
                        "difficulty": str(row.data.get("task_type")) if row.data.get("task_type") else None,
                    },
                }
            )
        )
    return records
