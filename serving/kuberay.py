"""A KubeRay ``RayService`` for a catalog: the same ``LLMConfig`` per model as ``serve up`` deploys, in
``serveConfigV2`` (``ray.serve.llm:build_openai_app``), on a head pod and one GPU worker group per
accelerator type. Every manifest is validated against the RayService CRD schema (a trimmed copy in
``deploy/kubernetes/``) before it is written.

Model sources: hub ids stay as they are; ``${M3BENCH_MODELS}/...`` becomes ``/models/...`` on a
persistent volume claim mounted in every pod (the converted GRACE checkpoint lives there); embedded
models exist only where they were built and are refused.
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any

import yaml

from serving.app import ResolvedModel, llm_apps, llm_config_dict
from serving.catalog import Catalog, ModelEntry, ResolvedSource
from serving.mode import KUBERAY_MAXCONN, mode_env

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "deploy" / "kubernetes" / "rayservice-crd-schema.yaml"
DEFAULT_IMAGE = "rayproject/ray-llm:2.60.0-py311-cu128"
RAY_VERSION = "2.60.0"
MODELS_MOUNT = "/models"
MODELS_PVC = "m3bench-models"
SERVE_PORT = 8000
METRICS_PORT = 8080
HAPROXY_METRICS_PORT = 9101  # Ray's default, set explicitly: Prometheus scrapes it on the head
CPUS_PER_GPU = 8
MEMORY_PER_GPU_GI = 96
_DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class KubeRayError(ValueError):
    """A catalog that cannot become a RayService, or a manifest the CRD schema refuses (one line)."""


def _source(entry: ModelEntry) -> ResolvedSource:
    source = entry.source
    for prefix in ("${M3BENCH_MODELS}", "$M3BENCH_MODELS"):
        if source.startswith(prefix):
            return ResolvedSource("local", MODELS_MOUNT + source.removeprefix(prefix))
    if source.startswith(("embedded:", "/", ".", "~", "$")):
        raise KubeRayError(
            f"model {entry.id!r}: source {source!r} exists only on this machine; in Kubernetes use a hub id "
            "or a path under ${M3BENCH_MODELS} (the models volume)"
        )
    return ResolvedSource("hub", source)


def pod_env(catalog: Catalog) -> dict[str, str]:
    """The serving mode's variables, the same on the head and every worker (Ray reads them in the
    controller, HAProxy's manager, the process that builds the application and the replicas)."""
    env = mode_env(catalog, maxconn=KUBERAY_MAXCONN if catalog.ingress == "haproxy" else None)
    if catalog.ingress == "haproxy":
        env["RAY_SERVE_HAPROXY_METRICS_PORT"] = str(HAPROXY_METRICS_PORT)
    return {"M3BENCH_MODELS": MODELS_MOUNT, **env}


def _container(
    name: str, image: str, resources: dict[str, Any], ports: dict[str, int], env: dict[str, str]
) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "env": [{"name": key, "value": value} for key, value in env.items()],
        "ports": [{"containerPort": port, "name": port_name} for port_name, port in ports.items()],
        "resources": {"limits": dict(resources), "requests": dict(resources)},
        "volumeMounts": [{"name": "models", "mountPath": MODELS_MOUNT}],
    }


def _pod(container: dict[str, Any]) -> dict[str, Any]:
    volume = {"name": "models", "persistentVolumeClaim": {"claimName": MODELS_PVC}}
    return {"spec": {"containers": [container], "volumes": [volume]}}


def _worker_groups(catalog: Catalog, image: str) -> list[dict[str, Any]]:
    groups = []
    for accelerator in sorted({m.accelerator for m in catalog.models}):
        entries = [m for m in catalog.models if m.accelerator == accelerator]
        peak = [m.autoscaling.max_replicas if m.autoscaling else m.fixed_replicas for m in entries]
        if accelerator == "cpu":
            cpus = sum(p * (1 + m.tensor_parallel_size) for p, m in zip(peak, entries, strict=True)) + 1
            resources: dict[str, Any] = {"cpu": str(cpus), "memory": f"{4 * cpus}Gi"}
            pods = low = high = 1
        else:
            per_pod = max(m.tensor_parallel_size for m in entries)
            gpus = sum(p * m.tensor_parallel_size for p, m in zip(peak, entries, strict=True))
            start_gpus = sum(m.fixed_replicas * m.tensor_parallel_size for m in entries)
            least = [m.autoscaling.min_replicas if m.autoscaling else m.fixed_replicas for m in entries]
            low_gpus = sum(n * m.tensor_parallel_size for n, m in zip(least, entries, strict=True))
            pods, low, high = (
                math.ceil(start_gpus / per_pod),
                math.ceil(low_gpus / per_pod),
                math.ceil(gpus / per_pod),
            )
            resources = {
                "cpu": str(CPUS_PER_GPU * per_pod),
                "memory": f"{MEMORY_PER_GPU_GI * per_pod}Gi",
                "nvidia.com/gpu": str(per_pod),
            }
        groups.append(
            {
                "groupName": re.sub(r"[^a-z0-9-]", "-", accelerator.lower()) + "-workers",
                "replicas": pods,
                "minReplicas": low,
                "maxReplicas": max(high, pods),
                "rayStartParams": {"metrics-export-port": str(METRICS_PORT)},
                "template": _pod(
                    _container("ray-worker", image, resources, {"metrics": METRICS_PORT}, pod_env(catalog))
                ),
            }
        )
    return groups


def serve_config(catalog: Catalog) -> dict[str, Any]:
    """The Serve config (what ``serve deploy`` reads) of the catalog's OpenAI application."""
    configs = {m.id: llm_config_dict(catalog, ResolvedModel(m, _source(m))) for m in catalog.models}
    return {
        "http_options": {"host": "0.0.0.0", "port": SERVE_PORT},  # noqa: S104 - the pod network
        "applications": [
            {
                "name": app.name,
                "route_prefix": app.route_prefix,
                "import_path": "ray.serve.llm:build_openai_app",
                "args": {"llm_configs": [configs[i] for i in app.model_ids]},
            }
            for app in llm_apps(catalog)
        ],
    }


def rayservice(
    catalog: Catalog, *, name: str | None = None, namespace: str = "default", image: str = DEFAULT_IMAGE
) -> dict[str, Any]:
    name = name or f"m3bench-{catalog.name}"
    if not _DNS_1123.match(name) or len(name) > 63:
        raise KubeRayError(f"RayService name {name!r} is not a DNS-1123 label (lower case, digits, '-')")
    head_ports = {
        "gcs-server": 6379,
        "dashboard": 8265,
        "client": 10001,
        "serve": SERVE_PORT,
        "metrics": METRICS_PORT,
    }
    if catalog.ingress == "haproxy":
        head_ports["haproxy-metrics"] = HAPROXY_METRICS_PORT
    head = _container("ray-head", image, {"cpu": "4", "memory": "16Gi"}, head_ports, pod_env(catalog))
    config_text = yaml.safe_dump(serve_config(catalog), sort_keys=False)
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/part-of": "m3bench"},
        },
        "spec": {
            "serviceUnhealthySecondThreshold": 1800,  # 7B engines load for minutes
            "deploymentUnhealthySecondThreshold": 1800,
            "serveConfigV2": config_text,
            "rayClusterConfig": {
                "rayVersion": RAY_VERSION,
                "enableInTreeAutoscaling": any(m.autoscaling for m in catalog.models),
                "headGroupSpec": {
                    # num-cpus 0: no replica on the head; it runs GCS, the Serve controller and proxy.
                    "rayStartParams": {
                        "dashboard-host": "0.0.0.0",  # noqa: S104 - inside the pod network
                        "num-cpus": "0",
                        "metrics-export-port": str(METRICS_PORT),
                    },
                    "template": _pod(head),
                },
                "workerGroupSpecs": _worker_groups(catalog, image),
            },
        },
    }


def _closed(schema: Any) -> Any:
    """The schema with additionalProperties false wherever properties are listed and it is unset."""
    if isinstance(schema, dict):
        out = {k: _closed(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_closed(v) for v in schema]
    return schema


def crd_schema() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(SCHEMA_FILE.read_text(encoding="utf-8"))
    return _closed(copy.deepcopy(data["openAPIV3Schema"]))  # type: ignore[no-any-return]


def validate(manifest: dict[str, Any]) -> None:
    """Raise :class:`KubeRayError` unless the manifest fits the CRD schema and its Serve config parses
    as Ray Serve LLM arguments."""
    import jsonschema

    errors = sorted(
        jsonschema.Draft7Validator(crd_schema()).iter_errors(manifest), key=lambda e: list(e.path)
    )
    if errors:
        where = "/".join(str(p) for p in errors[0].path) or "(top)"
        raise KubeRayError(f"RayService does not fit the CRD schema at {where}: {errors[0].message}")
    if manifest.get("apiVersion") != "ray.io/v1" or manifest.get("kind") != "RayService":
        raise KubeRayError("not a ray.io/v1 RayService")
    from ray.serve.llm import LLMServingArgs

    config = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    for application in config["applications"]:
        try:
            LLMServingArgs.model_validate(application["args"])
        except ValueError as e:
            raise KubeRayError(
                f"serveConfigV2 application {application['name']!r}: {str(e).splitlines()[0]}"
            ) from None


class _LiteralDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_LiteralDumper.add_representer(str, _str)


def render_manifest(
    catalog: Catalog, *, name: str | None = None, namespace: str = "default", image: str = DEFAULT_IMAGE
) -> str:
    manifest = rayservice(catalog, name=name, namespace=namespace, image=image)
    validate(manifest)
    header = (
        f"# Generated by `m3bench serve kuberay` from catalog {catalog.name!r}; validated against the\n"
        f"# RayService CRD schema ({SCHEMA_FILE.parent.name}/{SCHEMA_FILE.name}). Models under\n"
        f"# ${{M3BENCH_MODELS}} come from the PersistentVolumeClaim {MODELS_PVC!r}, "
        f"mounted at {MODELS_MOUNT}.\n"
        f"# Serving mode: {catalog.serving_mode} (env on the head and every worker).\n"
    )
    return header + yaml.dump(manifest, Dumper=_LiteralDumper, sort_keys=False, width=120)
