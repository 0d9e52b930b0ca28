"""What every loader shares: reading rows with their line numbers, field checks, and image storage."""

from __future__ import annotations

import ast
import gzip
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from benchmark.tasks.schema import TaskImage


class LoaderError(ValueError):
    """A malformed input: which file, which line (or item), which field, and what is wrong."""

    def __init__(self, path: Path | str, line: int | None, field: str | None, message: str) -> None:
        self.path, self.line, self.field, self.message = str(path), line, field, message
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {field}: {message}" if field else f"{where}: {message}")


@dataclass(frozen=True)
class Row:
    path: Path
    line: int  # 1-based line of a JSONL file, or 1-based item of a JSON array
    data: dict[str, object]

    def text(self, field: str, *, optional: bool = False) -> str:
        """A string field; missing or of another type is refused with file, line and field."""
        value = self.data.get(field)
        if value is None and optional:
            return ""
        if not isinstance(value, str):
            got = "missing" if field not in self.data else f"a {type(value).__name__}"
            raise LoaderError(self.path, self.line, field, f"expected a string, got {got}")
        return value

    def first_text(self, *fields: str) -> tuple[str, str]:
        """The first of ``fields`` present (datasets renamed columns across releases)."""
        for field in fields:
            if field in self.data:
                return field, self.text(field)
        raise LoaderError(
            self.path, self.line, fields[0], f"missing (also looked for {', '.join(fields[1:])})"
        )


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return path.open(encoding="utf-8")


def read_rows(path: Path) -> Iterator[Row]:
    """Objects of a ``.jsonl``/``.jsonl.gz`` file (one per line) or of a ``.json`` array."""
    if not path.is_file():
        raise LoaderError(path, None, None, "no such file")
    with _open_text(path) as handle:
        first = handle.read(1)
        while first.isspace():
            first = handle.read(1)
        if first == "[":
            try:
                items = json.loads(first + handle.read())
            except json.JSONDecodeError as exc:
                raise LoaderError(path, exc.lineno, None, f"invalid JSON: {exc.msg}") from None
            for index, item in enumerate(items, start=1):
                if not isinstance(item, dict):
                    raise LoaderError(path, index, None, "array item is not an object")
                yield Row(path, index, item)
            return
        handle.seek(0)
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise LoaderError(path, number, None, f"invalid JSON: {exc.msg}") from None
            if not isinstance(item, dict):
                raise LoaderError(path, number, None, "line is not a JSON object")
            yield Row(path, number, item)


def runnable_prelude(code: str) -> str:
    """The problem's code as it can run: a signature without a body gets ``pass``."""
    for candidate in (code, code.rstrip("\n") + "\n    pass\n"):
        try:
            ast.parse(candidate)
        except SyntaxError:
            continue
        return candidate
    return code


def completion_program(prompt: str, body: str) -> str:
    """prompt + canonical body; a body pasted without its indentation is indented by four spaces."""
    lines = body.splitlines()
    first = next((line for line in lines if line.strip()), "")
    if first and not first[:1].isspace():
        body = "\n".join(("    " + line) if line.strip() else line for line in lines) + "\n"
    return prompt.rstrip("\n") + "\n" + body


def check_call_tests(test: str, entry_point: str) -> str:
    """HumanEval-style tests define ``check(candidate)``; the harness runs them with this call added."""
    return test.rstrip("\n") + f"\n\n\ncheck({entry_point})\n"


class ImageStore:
    """Images addressed by content: ``<root>/images/<sha256>.<ext>``; writing the same bytes is a no-op."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "images").mkdir(parents=True, exist_ok=True)

    def put(self, data: bytes, key: str = "image") -> TaskImage:
        try:
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                extension = (image.format or "png").lower().replace("jpeg", "jpg")
        except (UnidentifiedImageError, OSError) as exc:
            raise ValueError(f"not a readable image: {exc}") from None
        digest = hashlib.sha256(data).hexdigest()
        relative = f"images/{digest}.{extension}"
        target = self.root / relative
        if not target.exists():
            temporary = target.with_suffix(target.suffix + ".part")
            temporary.write_bytes(data)
            temporary.replace(target)
        return TaskImage(key=key, path=relative, sha256=digest, width=width, height=height)
