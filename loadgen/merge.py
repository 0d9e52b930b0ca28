"""Make records.jsonl complete: every request any process recorded appears there exactly once.

The master merges final (graded) records as workers forward them. If a worker died before forwarding,
or a message was lost, its own append-only file still has the record: ``reconcile`` adds those (with
their verdict from the worker's grades file, when grading finished) and drops duplicates.
"""

from __future__ import annotations

import json
from pathlib import Path

from loadgen.records import read_grades


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    return [line for line in lines[:-1] if line.strip()]  # the last piece is "" or a torn line


def reconcile(run_dir: Path) -> int:
    """Add records missing from records.jsonl and drop duplicate ids; returns how many were added."""
    merged_path = run_dir / "records.jsonl"
    seen: set[str] = set()
    kept: list[str] = []
    duplicates = 0
    for line in _lines(merged_path):
        request_id = json.loads(line)["request_id"]
        if request_id in seen:
            duplicates += 1
            continue
        seen.add(request_id)
        kept.append(line)
    added: list[str] = []
    for raw in sorted((run_dir / "records").glob("*.jsonl")):
        if raw.name.endswith(".grades.jsonl"):
            continue
        grades = read_grades(raw.with_name(raw.name.replace(".jsonl", ".grades.jsonl")))
        for line in _lines(raw):
            row = json.loads(line)
            if row["request_id"] in seen:
                continue
            seen.add(row["request_id"])
            grade = grades.get(row["request_id"])
            if grade is not None:
                row.update(grade)
            elif row["status"] == "ok" and row.get("grade") == "ungraded" and not row.get("grade_detail"):
                row["grade_detail"] = "live grading did not finish"
            added.append(json.dumps(row, ensure_ascii=False, separators=(",", ":")))
    if added or duplicates:
        temporary = merged_path.with_suffix(".jsonl.tmp")
        temporary.write_text("".join(line + "\n" for line in kept + added), encoding="utf-8")
        temporary.replace(merged_path)
    return len(added)
