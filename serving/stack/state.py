"""What ``serve up`` leaves behind so that ``status`` and ``down`` (other processes) find the stack:
one JSON state file and the served self-description, in a state directory."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATE_FILE = "serve-state.json"
INFO_FILE = "serve-info.json"


def default_state_dir() -> Path:
    env = os.environ.get("M3BENCH_STATE_DIR")
    if env:
        return Path(env)
    cache = os.environ.get("M3BENCH_CACHE")
    return (Path(cache) if cache else Path.home() / ".cache" / "m3bench") / "serve"


class StateError(RuntimeError):
    """A state file that cannot be read; the message says which and what to do."""


@dataclass
class StackState:
    catalog_file: str | None
    catalog_name: str
    models: list[str]
    endpoint: str
    ray_address: str
    dashboard_url: str | None
    apps: list[str]
    started_cluster: bool
    cluster: dict[str, Any] | None = None  # LocalRayCluster.to_state() when m3bench started it
    ready: bool = False
    created_at: str = ""
    owner_pid: int = field(default_factory=os.getpid)
    # Each model's OpenAI base URL (direct streaming gives several models their own route prefixes).
    model_endpoints: dict[str, str] = field(default_factory=dict)

    def save(self, state_dir: Path) -> Path:
        state_dir.mkdir(parents=True, exist_ok=True)
        path = state_dir / STATE_FILE
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        temporary.replace(path)
        return path

    @classmethod
    def load(cls, state_dir: Path) -> StackState | None:
        path = state_dir / STATE_FILE
        if not path.is_file():
            return None
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as e:
            raise StateError(f"unreadable serve state {path} ({e}); delete it if no stack runs") from None

    @staticmethod
    def remove(state_dir: Path) -> None:
        for name in (STATE_FILE, INFO_FILE):
            (state_dir / name).unlink(missing_ok=True)


def write_info(state_dir: Path, info: dict[str, Any]) -> Path:
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / INFO_FILE
    path.write_text(json.dumps(info, indent=2, default=str) + "\n", encoding="utf-8")
    return path
