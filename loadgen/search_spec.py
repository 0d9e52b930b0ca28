"""The settings of an SLO search (``mode: search`` in a profile; ``loadgen.search`` runs it)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Target(_Model):
    """One SLO: the ``quantile`` of ``metric`` over a probe's measured requests must be at most ``max_s``.

    ttft and e2e count from the *scheduled* send (what a user arriving on schedule sees); a request that
    failed counts as missing its target (+inf), so errors cannot make a probe look faster.
    """

    metric: Literal["ttft", "tpot", "e2e", "itl"] = "ttft"
    quantile: float = Field(default=0.99, gt=0, lt=1)
    max_s: float = Field(gt=0)


class SearchSpec(_Model):
    """Bracket geometrically from ``start_rate`` (x ``growth`` up while probes pass, / ``growth`` down while
    they fail), then bisect geometrically until ``high / low <= 1 + resolution``."""

    targets: list[Target] = Field(min_length=1)
    start_rate: float = Field(gt=0, description="First probe's rate (requests/s).")
    min_rate: float = Field(default=0.01, gt=0, description="Stop bracketing down below this.")
    max_rate: float = Field(default=10_000.0, gt=0, description="Stop bracketing up above this.")
    growth: float = Field(default=2.0, gt=1, description="Bracketing factor.")
    resolution: float = Field(default=0.05, gt=0, description="Stop when high / low <= 1 + resolution.")
    confidence: float = Field(default=0.95, gt=0.5, lt=1, description="Of each percentile's interval.")
    precision: float = Field(
        default=0.10,
        gt=0,
        lt=1,
        description="A probe is resolved when its interval's half-width / estimate <= this.",
    )
    min_requests: int | None = Field(
        default=None, ge=10, description="Measured requests per probe; default: the fewest with an interval."
    )
    max_requests: int = Field(default=4000, ge=10, description="A probe is extended (doubled) up to this.")
    warmup_s: float = Field(default=2.0, ge=0, description="Each probe's warmup at its rate.")
    retries: int = Field(default=2, ge=0, description="Re-runs of a probe the generator marked invalid.")
    on_inconclusive: Literal["fail"] = Field(
        default="fail", description="A probe still unresolved at max_requests counts as missing the SLO."
    )

    @model_validator(mode="after")
    def _bounds(self) -> SearchSpec:
        if not self.min_rate <= self.start_rate <= self.max_rate:
            raise ValueError(
                f"start_rate {self.start_rate} must lie in "
                f"[min_rate {self.min_rate}, max_rate {self.max_rate}]"
            )
        if self.min_requests is not None and self.min_requests > self.max_requests:
            raise ValueError("min_requests must not exceed max_requests")
        return self
