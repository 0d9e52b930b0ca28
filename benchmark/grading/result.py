"""The outcome of grading one answer."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Verdict = Literal["pass", "fail", "error", "timeout"]


class GradeResult(BaseModel):
    """One verdict with the reason for it. Frozen and picklable (safe across process pools).

    ``pass``: the answer is right. ``fail``: it ran and is wrong (a test failed, it raised, it does not
    define the function, it chose another option). ``error``: it could not be judged as written (does not
    load, crashed, hit the memory limit, broke the protocol, or the task itself is unusable).
    ``timeout``: the wall-clock or CPU limit ran out.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    verdict: Verdict
    detail: str = Field(description="Why, in one line (which test failed, what limit was hit, ...).")
    duration_s: float = Field(ge=0, description="Wall-clock seconds the grading took.")
