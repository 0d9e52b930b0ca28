"""Prometheus' HTTP API (instant and range queries, label values, targets, rules) and the record of a
run's time range that reports use to query that run later."""

from __future__ import annotations

import contextlib
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WINDOW_FILE = "prometheus_window.json"


class PrometheusError(RuntimeError):
    """Prometheus could not start, answered an error, or a query failed. The message says what to do."""


@dataclass(frozen=True)
class RunWindow:
    """A run's time range (unix seconds) and where its Prometheus kept the data."""

    run_id: str
    start: float
    end: float | None
    prometheus_url: str | None = None
    data_dir: str | None = None

    def save(self, results_dir: Path) -> Path:
        results_dir.mkdir(parents=True, exist_ok=True)
        path = results_dir / WINDOW_FILE
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(self.__dict__, indent=2) + "\n", encoding="utf-8")
        temporary.replace(path)
        return path

    @classmethod
    def load(cls, path: Path) -> RunWindow:
        file = path / WINDOW_FILE if path.is_dir() else path
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
            return cls(**data)
        except (OSError, ValueError, TypeError) as e:
            raise PrometheusError(f"cannot read the run window {file}: {e}") from e


class PrometheusClient:
    """Instant and range queries through the HTTP API (``/api/v1/query``, ``/api/v1/query_range``)."""

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def _get(self, path: str, params: dict[str, str]) -> Any:
        address = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(address, timeout=self.timeout_s) as response:  # noqa: S310
                body = json.loads(response.read())
        except urllib.error.HTTPError as e:
            detail = e.read().decode("utf-8", "replace")
            with contextlib.suppress(ValueError):
                detail = json.loads(detail).get("error", detail)
            raise PrometheusError(f"Prometheus {path} failed ({e.code}): {detail}") from e
        except (urllib.error.URLError, OSError) as e:
            raise PrometheusError(f"Prometheus at {self.url} unreachable: {e}") from e
        if body.get("status") != "success":
            raise PrometheusError(f"Prometheus {path}: {body.get('error', body)}")
        return body["data"]

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """Instant vector: ``[{"metric": {...}, "value": [t, "v"]}]`` (a scalar comes back as one sample)."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._get("/api/v1/query", params)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def query_range(self, promql: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        """Range matrix: ``[{"metric": {...}, "values": [[t, "v"], ...]}]``."""
        params = {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
        return list(self._get("/api/v1/query_range", params)["result"])

    def label_values(
        self, label: str, match: str | None = None, start: float | None = None, end: float | None = None
    ) -> list[str]:
        """What Grafana's ``label_values(match, label)`` variable query lists."""
        params = {"match[]": match} if match else {}
        if start is not None:
            params["start"] = f"{start:.3f}"
        if end is not None:
            params["end"] = f"{end:.3f}"
        return [str(value) for value in self._get(f"/api/v1/label/{label}/values", params)]

    def targets(self) -> list[dict[str, Any]]:
        """Active scrape targets with their job, health and last error."""
        return list(self._get("/api/v1/targets", {"state": "active"})["activeTargets"])

    def rules(self) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/rules", {})["groups"])

    def wait_for(self, promql: str, timeout_s: float = 30.0, poll_s: float = 0.5) -> list[dict[str, Any]]:
        """Poll until the query returns data; PrometheusError with the last targets' state if not."""
        deadline = time.monotonic() + timeout_s
        while True:
            result = self.query(promql)
            if result:
                return result
            if time.monotonic() > deadline:
                health = [
                    (t["labels"].get("job"), t["health"], t.get("lastError", "")) for t in self.targets()
                ]
                raise PrometheusError(f"no data for {promql!r} after {timeout_s:g}s; targets: {health}")
            time.sleep(poll_s)
