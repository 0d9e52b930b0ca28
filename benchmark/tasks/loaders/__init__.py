"""Loaders for public sets a user has on disk, each mapped to ``TaskRecord``.

``load(kind, path, out_dir)`` reads one file; images (HumanEval-V) are copied into ``out_dir/images``.
A malformed file raises ``LoaderError`` naming the file, the line (or array item) and the field.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from benchmark.tasks.loaders import humaneval
from benchmark.tasks.loaders.common import LoaderError
from benchmark.tasks.loaders.humaneval_v import load_humaneval_v
from benchmark.tasks.loaders.multilingual import load_humaneval_xl, load_mhumaneval
from benchmark.tasks.schema import TaskRecord

__all__ = ["FORMATS", "LoaderError", "load"]

FORMATS: dict[str, Callable[[Path, Path], list[TaskRecord]]] = {
    "humaneval": lambda path, _out: humaneval.load(path),
    "humaneval-xl": lambda path, _out: load_humaneval_xl(path),
    "mhumaneval": lambda path, _out: load_mhumaneval(path),
    "humaneval-v": load_humaneval_v,
}


def load(kind: str, path: Path, out_dir: Path) -> list[TaskRecord]:
    try:
        loader = FORMATS[kind]
    except KeyError:
        raise LoaderError(path, None, None, f"unknown format {kind!r}; known: {', '.join(FORMATS)}") from None
    return loader(path, out_dir)
