"""Model catalogs: every shipped catalog is valid for vLLM and Ray Serve LLM; a bad one fails with one
line naming the field; sources resolve (or fail) with a clear message."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from serving.app import ResolvedModel, llm_config_dict
from serving.catalog import (
    Catalog,
    CatalogError,
    ResolvedSource,
    load_catalog,
    parse_catalog,
    resolve_source,
)

REPO = Path(__file__).resolve().parents[2]
CATALOGS = sorted(REPO.glob("deploy/**/models/*.yaml"))
ENTRY: dict[str, Any] = {
    "id": "m",
    "source": "org/model",
    "architecture": "LlavaForConditionalGeneration",
    "quantization": "awq",
}


def catalog(**overrides: Any) -> dict[str, Any]:
    models = overrides.pop("models", [ENTRY])
    return {"name": "t", "stream_batching_interval_ms": 0, "models": models, **overrides}


def entry(**overrides: Any) -> dict[str, Any]:
    return {**ENTRY, **overrides}


def test_shipped_catalogs_exist() -> None:
    names = {p.name for p in CATALOGS}
    assert {"embedded-cpu.yaml", "embedded-cpu-2node.yaml", "h200.yaml"} <= names


@pytest.mark.parametrize("path", CATALOGS, ids=lambda p: p.name)
def test_every_entry_builds_vllm_engine_args(path: Path, tmp_path: Path) -> None:
    """The keys of every entry exist in vLLM's AsyncEngineArgs, and Ray Serve LLM accepts the config."""
    from ray.serve.llm import LLMConfig
    from vllm.engine.arg_utils import AsyncEngineArgs

    loaded = load_catalog(path)
    known = {f.name for f in dataclasses.fields(AsyncEngineArgs)}
    for model in loaded.models:
        kwargs = model.engine_kwargs()
        assert set(kwargs) <= known, f"{model.id}: {sorted(set(kwargs) - known)}"
        args = AsyncEngineArgs(model=str(tmp_path), **kwargs)  # an existing path: no hub lookup
        for key, value in kwargs.items():
            if not isinstance(value, dict):
                assert getattr(args, key) == value
        config = LLMConfig(**llm_config_dict(loaded, ResolvedModel(model, ResolvedSource("hub", "org/x"))))
        engine = config.get_engine_config()
        assert engine is not None
        assert engine.get_initialization_kwargs()["served_model_name"] == [model.id]


def test_h200_catalog_names_the_grace_conversion_and_real_hub_ids() -> None:
    loaded = load_catalog(REPO / "deploy/models/h200.yaml")
    by_id = {m.id: m for m in loaded.models}
    assert by_id["grace-llava-1.5-7b-w4g128"].source == "${M3BENCH_MODELS}/grace-llava-1.5-7b-w4g128-awq-vllm"
    sources = {m.source for m in loaded.models}
    assert {
        "llava-hf/llava-1.5-7b-hf",
        "ybelkada/llava-1.5-7b-hf-awq",
        "Qwen/Qwen2.5-VL-7B-Instruct-AWQ",
        "OpenGVLab/InternVL3-8B-AWQ",
    } <= sources
    assert {m.quantization for m in loaded.models} == {"awq", "none"}
    assert all(m.accelerator == "H200" for m in loaded.models)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (catalog(colour="red"), "colour: unknown field"),
        (catalog(models=[entry(quantization="int4")]), "models.0.quantization: Input should be 'awq'"),
        (catalog(models=[entry(replicas=2, autoscaling={"min_replicas": 1, "max_replicas": 2})]), "not both"),
        (catalog(models=[entry(accelerator="TPU-X9")]), "neither 'cpu' nor a Ray GPU type"),
        (catalog(models=[entry(), entry()]), "model id 'm' appears twice"),
        (
            catalog(models=[entry(engine={"gpu_memory_utilization": 0.5})]),
            "size the KV cache with kv_cache_memory_bytes",
        ),
        (catalog(models=[entry(engine={"max_model_len": 0})]), "models.0.engine.max_model_len"),
        (catalog(models=[entry(engine={"extra": {"max_model_len": 5}})]), "extra repeats named"),
        (catalog(models=[entry(engine={"extra": {"model": "x"}})]), "extra may not set ['model']"),
        (catalog(models=[entry(autoscaling={"min_replicas": 3, "max_replicas": 2})]), "exceeds max_replicas"),
        (catalog(models=[entry(id="has space")]), "is not a model name"),
        (catalog(models=[]), "models: List should have at least 1 item"),
        (catalog(stream_batching_interval_ms=-1), "stream_batching_interval_ms"),
        ({"name": "t", "models": [ENTRY]}, "stream_batching_interval_ms: Field required"),
        ([1, 2], "expected a mapping"),
    ],
)
def test_bad_catalog_is_one_line(data: Any, expected: str) -> None:
    with pytest.raises(CatalogError) as info:
        parse_catalog(data, "x.yaml")
    message = str(info.value)
    assert expected in message
    assert "\n" not in message
    assert message.startswith("invalid catalog x.yaml")


def test_yaml_errors_and_missing_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: t\nmodels: [\n  - id: x\n", encoding="utf-8")
    with pytest.raises(CatalogError, match=r"YAML at line \d+, column \d+"):
        load_catalog(broken)
    with pytest.raises(CatalogError, match=r"cannot read catalog .*nope\.yaml"):
        load_catalog(tmp_path / "nope.yaml")


def test_select_subset_and_unknown_id() -> None:
    loaded = load_catalog(REPO / "deploy/models/embedded-cpu.yaml")
    picked = loaded.select(["tiny-qwen2vl-awq", "tiny-llava-awq"])
    assert [m.id for m in picked.models] == ["tiny-llava-awq", "tiny-qwen2vl-awq"]  # catalog order
    assert loaded.select(None) is loaded
    with pytest.raises(CatalogError, match="has no model 'nope'; it has tiny-llava-awq"):
        loaded.select(["nope"])


def _model_dir(root: Path, quant: str | None = "awq", arch: str = "LlavaForConditionalGeneration") -> Path:
    root.mkdir(parents=True)
    config: dict[str, Any] = {"architectures": [arch]}
    if quant:
        config["quantization_config"] = {"quant_method": quant, "bits": 4}
    (root / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return root


def _entry(**overrides: Any) -> Any:
    return Catalog.model_validate(catalog(models=[entry(**overrides)])).models[0]


def test_resolve_local_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model_dir(tmp_path / "models" / "grace")
    monkeypatch.setenv("M3BENCH_MODELS", str(tmp_path / "models"))
    assert resolve_source(_entry(source="${M3BENCH_MODELS}/grace")) == ResolvedSource("local", str(model))
    assert resolve_source(_entry(source="./models/grace"), base_dir=tmp_path).location == str(model)
    assert resolve_source(_entry(source="org/name")) == ResolvedSource("hub", "org/name")


@pytest.mark.parametrize(
    ("source", "overrides", "expected"),
    [
        ("${M3BENCH_MODELS}/missing", {}, "model directory .*missing does not exist"),
        ("${NOT_SET_ANYWHERE}/x", {}, r"uses \$NOT_SET_ANYWHERE, which is not set"),
        (
            "${M3BENCH_MODELS}/grace",
            {"quantization": "gptq"},
            "catalog says quantization 'gptq' but .* says 'awq'",
        ),
        (
            "${M3BENCH_MODELS}/grace",
            {"architecture": "Qwen2VLForConditionalGeneration"},
            "catalog says Qwen2VL",
        ),
        ("not a source", {}, "is neither a path"),
        ("embedded:tiny-nothing", {}, "no embedded model 'tiny-nothing'; known: tiny-llava-awq"),
        ("embedded:tiny-qwen2vl-awq", {}, "tiny-qwen2vl-awq is a Qwen2VLForConditionalGeneration"),
    ],
)
def test_resolve_errors_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, overrides: dict[str, Any], expected: str
) -> None:
    _model_dir(tmp_path / "grace")
    monkeypatch.setenv("M3BENCH_MODELS", str(tmp_path))
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    with pytest.raises(CatalogError, match=expected) as info:
        resolve_source(_entry(source=source, **overrides), build=False)
    assert "\n" not in str(info.value)


def test_llm_config_maps_catalog_fields() -> None:
    from ray.serve.llm import LLMConfig

    loaded = Catalog.model_validate(
        catalog(
            stream_batching_interval_ms=5,
            models=[
                entry(
                    accelerator="H200",
                    tensor_parallel_size=2,
                    autoscaling={"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 16},
                    engine={"max_model_len": 4096, "gpu_memory_utilization": 0.8},
                    env={"VLLM_FOO": "1"},
                ),
                entry(
                    id="c", accelerator="cpu", replicas=2, placement={"bundle": {"CPU": 1, "replica_slot": 1}}
                ),
            ],
        )
    )
    gpu, cpu = (
        llm_config_dict(loaded, ResolvedModel(m, ResolvedSource("hub", "o/m"))) for m in loaded.models
    )
    assert gpu["accelerator_type"] == "H200"
    assert "accelerator_config" not in gpu
    assert gpu["engine_kwargs"] == {
        "max_model_len": 4096,
        "gpu_memory_utilization": 0.8,
        "tensor_parallel_size": 2,
    }
    assert gpu["deployment_config"]["autoscaling_config"]["max_replicas"] == 4
    assert gpu["experimental_configs"] == {"stream_batching_interval_ms": 5}
    assert gpu["runtime_env"] == {"env_vars": {"VLLM_FOO": "1"}}
    assert cpu["accelerator_config"] == {"kind": "cpu"}
    assert cpu["deployment_config"] == {"num_replicas": 2}
    assert cpu["placement_group_config"]["bundle_per_worker"] == {"CPU": 1, "replica_slot": 1}
    for config in (gpu, cpu):
        LLMConfig(**config)  # Ray Serve LLM's own validation
    assert yaml.safe_load(yaml.safe_dump(gpu)) == gpu  # plain data, as serveConfigV2 needs
