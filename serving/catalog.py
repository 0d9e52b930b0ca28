"""The model catalog: which models one endpoint serves, from where, and on what engine settings.

A catalog is a YAML file (``deploy/models/*.yaml``) validated by :class:`Catalog`; every field is
declared here once, unknown keys are refused, and a bad file ends as one line naming the file, the
field and the reason (:class:`CatalogError`). Sources are resolved separately
(:func:`resolve_source`) because that touches the filesystem or builds the embedded models.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Quantization = Literal["awq", "gptq", "compressed-tensors", "none"]
Ingress = Literal["proxy", "haproxy"]
SourceKind = Literal["local", "embedded", "hub"]

EMBEDDED_PREFIX = "embedded:"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_MODEL_ID = re.compile(r"^[A-Za-z0-9][\w.-]*$")
_LOCAL_PREFIXES = ("/", "./", "../", "~", "$")
# config.json quant_method -> catalog quantization (vLLM's own names).
_QUANT_METHODS = {"awq": "awq", "gptq": "gptq", "compressed-tensors": "compressed-tensors"}


class CatalogError(ValueError):
    """A catalog that cannot be served; the message is one line that says what to fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EngineArgs(_Strict):
    """vLLM engine arguments (``vllm.engine.arg_utils.AsyncEngineArgs`` names). Unset ones keep vLLM's
    defaults; ``extra`` passes any other engine argument through unchanged."""

    max_model_len: int | None = Field(default=None, gt=0)
    max_num_seqs: int | None = Field(default=None, gt=0)
    max_num_batched_tokens: int | None = Field(default=None, gt=0)
    limit_mm_per_prompt: dict[str, int] | None = None
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    kv_cache_memory_bytes: int | None = Field(default=None, gt=0)
    load_format: str | None = Field(default=None, description="auto, safetensors, dummy, ...")
    dtype: str | None = None
    enforce_eager: bool | None = None
    enable_prefix_caching: bool | None = None
    trust_remote_code: bool | None = None
    seed: int | None = None
    extra: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _extra_does_not_shadow(self) -> EngineArgs:
        named = set(type(self).model_fields) - {"extra"}
        clash = sorted(named & set(self.extra))
        if clash:
            raise ValueError(f"extra repeats named engine arguments {clash}; set them directly")
        reserved = sorted({"model", "served_model_name", "tensor_parallel_size"} & set(self.extra))
        if reserved:
            raise ValueError(
                f"extra may not set {reserved}: use the model's source, id or tensor_parallel_size"
            )
        return self

    def to_kwargs(self) -> dict[str, Any]:
        kwargs = {k: v for k, v in self.model_dump(exclude={"extra"}).items() if v is not None}
        return {**kwargs, **self.extra}


class Autoscaling(_Strict):
    """Ray Serve autoscaling for one model (``deployment_config.autoscaling_config``)."""

    min_replicas: int = Field(ge=0)
    max_replicas: int = Field(ge=1)
    initial_replicas: int | None = Field(default=None, ge=0)
    target_ongoing_requests: float = Field(default=8.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) exceeds max_replicas ({self.max_replicas})")
        start = self.initial_replicas
        if start is not None and not self.min_replicas <= start <= self.max_replicas:
            raise ValueError(f"initial_replicas ({start}) must lie within [min_replicas, max_replicas]")
        return self


class Placement(_Strict):
    """Resources of each engine worker's placement-group bundle (Ray adds the replica actor's own CPU
    to the first). A custom resource here (e.g. ``replica_slot: 1``) limits replicas per node."""

    bundle: dict[str, float]
    strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"


class ModelEntry(_Strict):
    id: str = Field(description="The name clients put in the request's `model` field.")
    source: str = Field(description="Local directory, `embedded:<name>` or a hub id (org/name).")
    architecture: str = Field(
        description="The checkpoint's architecture, e.g. LlavaForConditionalGeneration."
    )
    quantization: Quantization
    engine: EngineArgs = Field(default_factory=EngineArgs)
    replicas: int | None = Field(default=None, ge=1, description="Fixed replica count (or autoscaling).")
    autoscaling: Autoscaling | None = None
    max_ongoing_requests: int | None = Field(default=None, ge=1)
    accelerator: str = Field(default="cpu", description="`cpu` or a Ray GPU type such as H200, A100-80G.")
    tensor_parallel_size: int = Field(default=1, ge=1)
    placement: Placement | None = None
    env: dict[str, str] = Field(default_factory=dict, description="Environment of the replica and engine.")

    @field_validator("id")
    @classmethod
    def _id_shape(cls, value: str) -> str:
        if not _MODEL_ID.match(value):
            raise ValueError(f"{value!r} is not a model name (letters, digits, '.', '_', '-')")
        return value

    @field_validator("accelerator")
    @classmethod
    def _known_accelerator(cls, value: str) -> str:
        if value != "cpu" and value not in gpu_types():
            raise ValueError(f"{value!r} is neither 'cpu' nor a Ray GPU type (e.g. H200, H100, A100-80G, L4)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ModelEntry:
        if self.replicas is not None and self.autoscaling is not None:
            raise ValueError("set replicas or autoscaling, not both")
        if self.accelerator == "cpu" and self.engine.gpu_memory_utilization is not None:
            raise ValueError(
                "gpu_memory_utilization applies to GPUs; size the KV cache with kv_cache_memory_bytes"
            )
        return self

    @property
    def fixed_replicas(self) -> int:
        """Replicas started at deploy time (autoscaling: the initial or minimum count)."""
        if self.autoscaling is not None:
            scale = self.autoscaling
            return scale.initial_replicas if scale.initial_replicas is not None else scale.min_replicas
        return self.replicas or 1

    def engine_kwargs(self) -> dict[str, Any]:
        """The arguments handed to vLLM, beside the model path and served name."""
        kwargs = self.engine.to_kwargs()
        if self.tensor_parallel_size > 1:
            kwargs["tensor_parallel_size"] = self.tensor_parallel_size
        return kwargs


# Ids a model may not take when direct streaming gives each model its own application and route
# prefix (they would meet the info application or the OpenAI paths).
RESERVED_MODEL_IDS = frozenset({"m3bench", "info", "v1"})


class Catalog(_Strict):
    name: str
    description: str = ""
    ingress: Ingress = Field(
        default="proxy",
        description="What receives HTTP: `haproxy` (Ray's high-throughput mode: HAProxy in front, "
        "RAY_SERVE_THROUGHPUT_OPTIMIZED) or `proxy` (Ray Serve's Python HTTP proxy). Unset: `proxy`, "
        "Ray Serve LLM's classic path; the shipped catalogs name their mode.",
    )
    direct_streaming: bool = Field(
        default=False,
        description="Each model's LLMServer is its own ingress and streams vLLM's HTTP responses "
        "straight through (RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING); needs `ingress: haproxy`. One "
        "application per model, each under its own route prefix when the catalog serves several.",
    )
    stream_batching_interval_ms: float = Field(
        ge=0,
        description="How long Ray Serve LLM gathers streamed chunks before sending them (0: every chunk "
        "at once). Ray's default, 50 ms, would make inter-token latency unmeasurable.",
    )
    models: list[ModelEntry] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> Catalog:
        seen: set[str] = set()
        for entry in self.models:
            if entry.id in seen:
                raise ValueError(f"model id {entry.id!r} appears twice")
            seen.add(entry.id)
        return self

    @model_validator(mode="after")
    def _mode_consistent(self) -> Catalog:
        if self.direct_streaming and self.ingress != "haproxy":
            raise ValueError("direct_streaming needs ingress: haproxy (Ray routes it through HAProxy)")
        if self.direct_streaming:
            clash = sorted(RESERVED_MODEL_IDS & {m.id for m in self.models})
            if clash:
                raise ValueError(f"model id {clash[0]!r} is a reserved route prefix under direct_streaming")
        return self

    @property
    def serving_mode(self) -> str:
        """The mode in words, e.g. ``haproxy+direct-streaming`` or ``proxy, 0 ms batching``."""
        if self.direct_streaming:
            return f"{self.ingress}+direct-streaming"
        return f"{self.ingress}, {self.stream_batching_interval_ms:g} ms batching"

    def select(self, ids: list[str] | None) -> Catalog:
        """The catalog restricted to ``ids`` (in catalog order); all of it when ``ids`` is empty."""
        if not ids:
            return self
        known = [m.id for m in self.models]
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise CatalogError(
                f"catalog {self.name!r} has no model {unknown[0]!r}; it has {', '.join(known)}"
            )
        return self.model_copy(update={"models": [m for m in self.models if m.id in ids]})


def gpu_types() -> frozenset[str]:
    """Ray's known accelerator type names (``ray.util.accelerators``), GPUs and TPUs alike."""
    from ray.util.accelerators import accelerators

    return frozenset(v for k, v in vars(accelerators).items() if k.isupper() and isinstance(v, str))


def _one_line(exc: ValidationError, where: str) -> str:
    parts = []
    for error in exc.errors():
        location = ".".join(str(p) for p in error["loc"]) or "catalog"
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        parts.append(f"{location}: {message}")
    return f"invalid catalog {where}: " + "; ".join(parts)


def parse_catalog(data: Any, where: str = "<inline>") -> Catalog:
    if not isinstance(data, dict):
        raise CatalogError(
            f"invalid catalog {where}: expected a mapping at the top, got {type(data).__name__}"
        )
    try:
        return Catalog.model_validate(data)
    except ValidationError as e:
        raise CatalogError(_one_line(e, where)) from None


def load_catalog(path: Path) -> Catalog:
    """Read and validate a catalog file; every problem is a one-line :class:`CatalogError`."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise CatalogError(f"cannot read catalog {path}: {e.strerror or e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or "malformed YAML"
        raise CatalogError(f"invalid catalog {path}: YAML{at}: {problem}") from None
    return parse_catalog(data, str(path))


@dataclass(frozen=True)
class ResolvedSource:
    kind: SourceKind
    location: str  # a directory for local and embedded sources, the hub id otherwise


def resolve_source(entry: ModelEntry, base_dir: Path | None = None, build: bool = True) -> ResolvedSource:
    """Where vLLM loads ``entry`` from. Local paths may use ``${VARS}`` and ``~`` and are relative to
    ``base_dir`` (the catalog's folder); they must hold a ``config.json`` whose quantization matches."""
    source = entry.source
    if source.startswith(EMBEDDED_PREFIX):
        return _resolve_embedded(entry, source.removeprefix(EMBEDDED_PREFIX), build)
    if source.startswith(_LOCAL_PREFIXES):
        return ResolvedSource("local", str(_check_local(entry, _expand(entry, source, base_dir))))
    if _HUB_ID.match(source):
        return ResolvedSource("hub", source)
    raise CatalogError(
        f"model {entry.id!r}: source {source!r} is neither a path (start it with /, ./, ~ or $), "
        f"'embedded:<name>' nor a hub id 'org/name'"
    )


def _expand(entry: ModelEntry, source: str, base_dir: Path | None) -> Path:
    unset = [v for v in re.findall(r"\$\{?(\w+)\}?", source) if v not in os.environ]
    if unset:
        raise CatalogError(f"model {entry.id!r}: source {source!r} uses ${unset[0]}, which is not set")
    path = Path(os.path.expanduser(os.path.expandvars(source)))
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return path.resolve()


def _check_local(entry: ModelEntry, path: Path) -> Path:
    if not path.is_dir():
        raise CatalogError(f"model {entry.id!r}: model directory {path} does not exist")
    config_file = path / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CatalogError(
            f"model {entry.id!r}: {config_file} is not a readable model config ({e})"
        ) from None
    architectures = config.get("architectures") or []
    if architectures and entry.architecture not in architectures:
        raise CatalogError(
            f"model {entry.id!r}: catalog says {entry.architecture} but {config_file} says {architectures[0]}"
        )
    method = str((config.get("quantization_config") or {}).get("quant_method", "none")).lower()
    found = _QUANT_METHODS.get(method, method)
    if found != entry.quantization:
        raise CatalogError(
            f"model {entry.id!r}: catalog says quantization {entry.quantization!r} "
            f"but {config_file} says {found!r}"
        )
    return path


def _resolve_embedded(entry: ModelEntry, name: str, build: bool) -> ResolvedSource:
    from serving.embedded import FAMILIES, VARIANTS, build_models
    from serving.embedded.spec import model_name

    known = {model_name(f, v): f.architecture for f in FAMILIES.values() for v in VARIANTS.values()}
    if name not in known:
        raise CatalogError(
            f"model {entry.id!r}: no embedded model {name!r}; known: {', '.join(sorted(known))}"
        )
    if known[name] != entry.architecture:
        raise CatalogError(f"model {entry.id!r}: {name} is a {known[name]}, not a {entry.architecture}")
    if not build:
        return ResolvedSource("embedded", name)
    (built,) = build_models([name])
    if built.quantization != entry.quantization:
        raise CatalogError(
            f"model {entry.id!r}: catalog says quantization {entry.quantization!r} "
            f"but {name} is {built.quantization!r}"
        )
    return ResolvedSource("embedded", str(built.path))
