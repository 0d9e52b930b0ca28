"""KubeRay RayService generation: the manifest of a catalog fits the RayService CRD schema (a trimmed
copy of KubeRay's), the schema check really refuses bad manifests, and the committed manifest is what
the generator writes today."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from serving.catalog import Catalog, load_catalog
from serving.kuberay import SCHEMA_FILE, KubeRayError, crd_schema, rayservice, render_manifest, validate

REPO = Path(__file__).resolve().parents[2]
H200 = REPO / "deploy/models/h200.yaml"


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    return rayservice(load_catalog(H200))


def test_schema_copy_names_its_source() -> None:
    data = yaml.safe_load(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert data["source"]["repository"] == "ray-project/kuberay"
    assert data["source"]["path"].endswith("ray.io_rayservices.yaml")
    assert len(data["source"]["commit"]) == 40
    spec = crd_schema()["properties"]["spec"]["properties"]
    assert {"serveConfigV2", "rayClusterConfig"} <= set(spec)


def test_h200_manifest_is_valid_and_complete(manifest: dict[str, Any]) -> None:
    validate(manifest)
    config = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    applications = config["applications"]
    # Direct streaming: one application per model, each under its own route prefix.
    ids = [m.id for m in load_catalog(H200).models]
    assert [(a["name"], a["route_prefix"]) for a in applications] == [(f"m3bench-{i}", f"/{i}") for i in ids]
    assert {a["import_path"] for a in applications} == {"ray.serve.llm:build_openai_app"}
    llm_configs = [c for a in applications for c in a["args"]["llm_configs"]]
    assert [c["model_loading_config"]["model_id"] for c in llm_configs] == ids
    grace = llm_configs[0]["model_loading_config"]
    assert grace["model_source"] == "/models/grace-llava-1.5-7b-w4g128-awq-vllm"
    assert all(c["experimental_configs"]["stream_batching_interval_ms"] == 0 for c in llm_configs)
    cluster = manifest["spec"]["rayClusterConfig"]
    (workers,) = cluster["workerGroupSpecs"]
    assert workers["replicas"] == 5  # one GPU per model replica
    container = workers["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"


def test_serving_mode_env_on_head_and_workers(manifest: dict[str, Any]) -> None:
    cluster = manifest["spec"]["rayClusterConfig"]
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    worker = cluster["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    for container in (head, worker):
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
        assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
        assert env["RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING"] == "1"
        assert int(env["RAY_SERVE_HAPROXY_MAXCONN"]) > 0
        assert env["M3BENCH_MODELS"] == "/models"
    ports = {p["name"]: p["containerPort"] for p in head["ports"]}
    assert ports["haproxy-metrics"] == 9101  # Prometheus scrapes HAProxy's exporter beside Ray's
    assert "Serving mode: haproxy+direct-streaming" in render_manifest(load_catalog(H200))


def test_proxy_mode_keeps_one_application() -> None:
    loaded = load_catalog(H200).model_copy(update={"ingress": "proxy", "direct_streaming": False})
    manifest = rayservice(loaded)
    validate(manifest)
    (application,) = yaml.safe_load(manifest["spec"]["serveConfigV2"])["applications"]
    assert (application["name"], application["route_prefix"]) == ("m3bench", "/")
    head = manifest["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in head["env"]}
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "0"
    assert "haproxy-metrics" not in {p["name"] for p in head["ports"]}


def test_committed_manifest_matches_generator() -> None:
    committed = (REPO / "deploy/kubernetes/rayservice-h200.yaml").read_text(encoding="utf-8")
    assert committed == render_manifest(load_catalog(H200))


def _broken(manifest: dict[str, Any], edit: str) -> dict[str, Any]:
    bad = copy.deepcopy(manifest)
    cluster = bad["spec"]["rayClusterConfig"]
    if edit == "no head":
        del cluster["headGroupSpec"]
    elif edit == "replicas type":
        cluster["workerGroupSpecs"][0]["replicas"] = "five"
    elif edit == "unknown container field":
        cluster["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["gpus"] = 1
    elif edit == "no group name":
        del cluster["workerGroupSpecs"][0]["groupName"]
    elif edit == "bad quantity":
        cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = "four"
    elif edit == "bad serve config":
        bad["spec"]["serveConfigV2"] = bad["spec"]["serveConfigV2"].replace(
            "num_replicas: 1", "num_replicas: -3", 1
        )
    return bad


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ("no head", "'headGroupSpec' is a required property"),
        ("replicas type", "workerGroupSpecs/0/replicas: 'five' is not of type 'integer'"),
        ("unknown container field", "Additional properties are not allowed ('gpus'"),
        ("no group name", "'groupName' is a required property"),
        ("bad quantity", "limits/cpu: 'four' does not match"),
        ("bad serve config", "serveConfigV2 application 'm3bench-grace-llava-1.5-7b-w4g128'"),
    ],
)
def test_schema_refuses_bad_manifests(manifest: dict[str, Any], edit: str, expected: str) -> None:
    with pytest.raises(KubeRayError, match=expected.replace("(", r"\(")) as info:
        validate(_broken(manifest, edit))
    assert "\n" not in str(info.value)


def test_local_sources_and_names_are_refused() -> None:
    cpu = load_catalog(REPO / "deploy/models/embedded-cpu.yaml")
    with pytest.raises(KubeRayError, match="exists only on this machine"):
        rayservice(cpu)
    with pytest.raises(KubeRayError, match="not a DNS-1123 label"):
        rayservice(load_catalog(H200), name="Bad_Name")


def test_tensor_parallel_and_autoscaling_shape_the_worker_group() -> None:
    catalog = Catalog.model_validate(
        {
            "name": "tp",
            "stream_batching_interval_ms": 0,
            "models": [
                {
                    "id": "big",
                    "source": "org/big",
                    "architecture": "LlavaForConditionalGeneration",
                    "quantization": "awq",
                    "accelerator": "H100",
                    "tensor_parallel_size": 4,
                    "autoscaling": {"min_replicas": 1, "max_replicas": 3},
                }
            ],
        }
    )
    manifest = rayservice(catalog)
    validate(manifest)
    cluster = manifest["spec"]["rayClusterConfig"]
    (group,) = cluster["workerGroupSpecs"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert (group["minReplicas"], group["replicas"], group["maxReplicas"]) == (1, 1, 3)
    assert group["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "4"
