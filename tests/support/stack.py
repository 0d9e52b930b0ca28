"""A serving stack that `m3bench serve up` started, as the integration tests hold it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from serving.stack import StackState
from serving.stack.cluster import LocalRayCluster


@dataclass(frozen=True)
class Up:
    state: StackState
    state_dir: Path  # what `serve status/down --state-dir` take

    @property
    def endpoint(self) -> str:
        return self.state.endpoint

    @property
    def dashboard(self) -> str:
        assert self.state.dashboard_url is not None
        return self.state.dashboard_url

    @property
    def cluster(self) -> LocalRayCluster:
        assert self.state.cluster is not None
        return LocalRayCluster.from_state(self.state.cluster)
