"""The task record: one benchmark item, as stored one per line in ``tasks.jsonl``.

Images live beside the JSONL file, addressed by sha256 (``images/<sha256>.png``); a record names them
by path relative to the task-set directory. The schema is the contract in docs/design.md and every loader
(M3-HumanEval builder, HumanEval, HumanEval-V, HumanEval-XL, mHumanEval) produces exactly this.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

GradingMethod = Literal["execution", "exact_match", "multiple_choice"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Strict):
    benchmark: str = Field(description="Name of the set the item comes from, e.g. 'm3-humaneval'.")
    source_id: str = Field(description="The item's id in that set, e.g. 'HumanEval/0'.")
    license: str


class TaskImage(_Strict):
    key: str = Field(description="Name the prompt uses for this image, e.g. 'statement'.")
    path: str = Field(description="Path relative to the task-set directory.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    width: int = Field(gt=0)
    height: int = Field(gt=0)


class Grading(_Strict):
    method: GradingMethod
    tests: str | None = Field(default=None, description="Test code run against the answer (execution).")
    prelude: str | None = Field(
        default=None,
        description=(
            "Trusted problem code (imports, helper functions, the entry point's stub) run before the answer "
            "and before the tests, so both see the problem's own helpers (execution)."
        ),
    )
    timeout_s: float = Field(default=10.0, gt=0)
    memory_mb: int = Field(default=512, gt=0)


class Generation(_Strict):
    max_tokens: int = Field(default=512, gt=0)
    stop: list[str] = Field(default_factory=list)


class TaskMetadata(_Strict):
    image_required: bool
    difficulty: str | None = None
    group: str | None = Field(default=None, description="Variant group, e.g. 'image' or 'text-only'.")


class TaskRecord(_Strict):
    id: str
    source: Source
    natural_language: str = Field(description="BCP-47 tag of the prose, e.g. 'en', 'zh', 'ar'.")
    programming_language: str = "python"
    prompt: str = Field(description="The text part of the request.")
    images: list[TaskImage] = Field(default_factory=list)
    entry_point: str | None = None
    signature: str | None = None
    canonical_solution: str | None = None
    grading: Grading
    expected_answer: str | None = None
    choices: list[str] | None = None
    gen: Generation = Field(default_factory=Generation)
    metadata: TaskMetadata
