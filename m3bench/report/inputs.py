"""The report's input contract: ``RESULTS_DIR/index.json`` plus the load-generator run dirs it names.

The index says what each sweep *was* (model, quantization, family, replicas, accelerator, price) and where
its run directory lies; everything measured is derived from the run directories (records.jsonl first of
all), so a report can be re-rendered from saved files alone. The orchestration that runs the sweeps
(``m3bench demo``) writes the index; docs/report.md documents every field.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from loadgen.profile import validation_line
from loadgen.records import RequestRecord, read_records

INDEX_FILE = "index.json"
INDEX_SCHEMA_VERSION: Literal[1] = 1


class ReportError(Exception):
    """Input the user must fix (missing or malformed index, run dir, options); the CLI prints one line."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Entry(_Model):
    """What every entry of the index names: its label, and its model as the report shows it and as the
    run's records name it."""

    name: str | None = Field(default=None, description="Unique label in the report; default: per kind.")
    model: str = Field(min_length=1, description="Model id as the report shows it (catalog name).")
    served_name: str | None = Field(
        default=None, description="The model name in the run's records (default: model)."
    )

    @property
    def record_model(self) -> str:
        return self.served_name or self.model


class _QuantizedEntry(_Entry):
    """An entry that measured one quantized model: the report compares models by these."""

    quantization: Literal["awq", "gptq", "none"]
    group_size: int | None = Field(
        default=None, gt=0, description="INT4 quantization group size (default: from a '-g<N>' name suffix)."
    )
    family: str = Field(min_length=1, description="Model family, e.g. llava, qwen2-vl.")


class SweepEntry(_QuantizedEntry):
    """One load sweep (one load-generator run, or one model's share of it) against a fixed deployment."""

    replicas: int = Field(ge=1, description="Serving replicas behind the endpoint during this sweep.")
    accelerator: str = Field(min_length=1, description="What one replica runs on, e.g. 'cpu-2core', 'H200'.")
    accelerators_per_replica: float = Field(default=1.0, gt=0)
    price_per_accelerator_hour: float | None = Field(
        default=None, ge=0, description="USD; default: the report's --price-per-hour."
    )
    run_dir: str = Field(min_length=1, description="Load-generator run directory, relative to RESULTS_DIR.")

    @property
    def label(self) -> str:
        return self.name or f"{self.model} x{self.replicas}"


class AccuracyEntry(_QuantizedEntry):
    """One accuracy run: natural output lengths, temperature 0, each task asked a fixed number of times
    (``sampling.by: cycle``), at one load; its measure-phase records are what counts."""

    load: Literal["low", "saturation"] = Field(
        description="low: no queueing (e.g. one stream); saturation: the sweeps' highest load."
    )
    run_dir: str = Field(min_length=1, description="Load-generator run directory, relative to RESULTS_DIR.")

    @property
    def label(self) -> str:
        return self.name or f"{self.model} {self.load}"


class SearchEntry(_Entry):
    """One SLO search (``loadgen.search``): its directory holds search.json, every probe's run beneath it."""

    replicas: int = Field(ge=1, description="Serving replicas behind the endpoint during the search.")
    run_dir: str = Field(
        min_length=1, description="The search's directory (search.json), relative to RESULTS_DIR."
    )

    @property
    def label(self) -> str:
        return self.name or f"{self.model} x{self.replicas} search"


class RunMetadata(_Model):
    run_id: str = Field(min_length=1)
    started: datetime
    ended: datetime | None = None
    versions: dict[str, str | None] = Field(
        default_factory=dict, description="m3bench, vllm, ray, torch, ... as resolved at run time."
    )
    catalog: str | None = Field(default=None, description="Model catalog used (name or path).")
    stream_batching_interval_s: float | None = Field(
        default=None, ge=0, description="Ray Serve stream batching interval; ITL is measured over chunks."
    )
    serving_mode: str | None = Field(
        default=None,
        description="How the models were served, e.g. 'haproxy+direct-streaming' or 'proxy, 0 ms batching' "
        "(serving.catalog.Catalog.serving_mode); the report's header states it.",
    )
    machine: str | dict[str, Any] = Field(description="Where the servers ran: a line or a mapping.")
    notes: list[str] = Field(default_factory=list)
    accuracy_note: str | None = Field(
        default=None, description="What the accuracy figures measure; heads the report's Accuracy section."
    )


class ResultsIndex(_Model):
    schema_version: Literal[1] = INDEX_SCHEMA_VERSION
    run: RunMetadata
    sweeps: list[SweepEntry] = Field(min_length=1)
    accuracy: list[AccuracyEntry] = Field(
        default_factory=list, description="Accuracy runs (natural output lengths), at low load or saturation."
    )
    searches: list[SearchEntry] = Field(
        default_factory=list, description="SLO searches: the highest open-loop rate meeting the SLOs, R*."
    )
    prometheus_window: str | None = Field(
        default="prometheus_window.json", description="Saved Prometheus time range of the run (if present)."
    )
    panels_dir: str | None = Field(
        default="panels", description="Directory of PNG dashboard-panel renders to embed (if present)."
    )

    @model_validator(mode="after")
    def _unique(self) -> ResultsIndex:
        for what, labels in (
            ("sweep", [sweep.label for sweep in self.sweeps]),
            ("accuracy run", [run.label for run in self.accuracy]),
            ("search", [search.label for search in self.searches]),
        ):
            duplicates = sorted({label for label in labels if labels.count(label) > 1})
            if duplicates:
                raise ValueError(f"{what} labels must be unique (set 'name'): {', '.join(duplicates)}")
        return self


def _inside(results_dir: Path, relative: str, what: str) -> Path:
    path = (results_dir / relative).resolve()
    if not path.is_relative_to(results_dir.resolve()):
        raise ReportError(f"{what} {relative!r} lies outside {results_dir}")
    return path


def load_index(results_dir: Path) -> ResultsIndex:
    """The validated index of ``results_dir``; every run dir it names must hold a records.jsonl."""
    if not results_dir.is_dir():
        raise ReportError(f"results directory {results_dir} does not exist")
    path = results_dir / INDEX_FILE
    if not path.is_file():
        raise ReportError(f"{path} is missing: the results directory needs an index (see docs/report.md)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ReportError(f"{path} is not valid JSON: {str(exc).splitlines()[0]}") from None
    try:
        index = ResultsIndex.model_validate(data)
    except ValidationError as exc:
        raise ReportError(f"invalid {path}: {validation_line(exc, 'index')}") from None
    entries: list[SweepEntry | AccuracyEntry] = [*index.sweeps, *index.accuracy]
    for entry in entries:
        records = run_dir(results_dir, entry) / "records.jsonl"
        if not records.is_file():
            raise ReportError(f"{_kind(entry)} {entry.label!r}: {records} is missing")
    return index


def _kind(entry: SweepEntry | AccuracyEntry) -> str:
    return "sweep" if isinstance(entry, SweepEntry) else "accuracy run"


def run_dir(results_dir: Path, entry: SweepEntry | AccuracyEntry) -> Path:
    return _inside(results_dir, entry.run_dir, f"{_kind(entry)} {entry.label!r} run_dir")


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON object file of a run (run.json, provenance.json); {} when absent or not an object."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReportError(f"{path} is not valid JSON: {str(exc).splitlines()[0]}") from None
    return data if isinstance(data, dict) else {}


def model_records(
    results_dir: Path, entry: SweepEntry | AccuracyEntry, *, allow_empty: bool = False
) -> tuple[Path, list[RequestRecord]]:
    """The entry's run directory and its model's records; a malformed file, or a run with records of
    other models only (or, unless ``allow_empty``, none at all), is a one-line :class:`ReportError`."""
    directory = run_dir(results_dir, entry)
    what = f"{_kind(entry)} {entry.label!r}"
    try:
        records = read_records(directory / "records.jsonl")
    except (ValidationError, ValueError) as exc:
        first = str(exc).splitlines()[0]
        raise ReportError(f"{what}: malformed records.jsonl: {first}") from None
    mine = [record for record in records if record.model == entry.record_model]
    if not mine and (records or not allow_empty):
        present = ", ".join(sorted({record.model for record in records})) or "none"
        raise ReportError(
            f"{what}: no records for model {entry.record_model!r} in {directory} "
            f"(models there: {present}; set served_name)"
        )
    return directory, mine


def optional_path(results_dir: Path, relative: str | None, what: str) -> Path | None:
    """An optional file or directory named by the index, or None when absent on disk."""
    if relative is None:
        return None
    path = _inside(results_dir, relative, what)
    return path if path.exists() else None
