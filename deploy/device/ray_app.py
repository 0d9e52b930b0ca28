"""Fallback for the Ray path: one model on Ray Serve LLM with the catalog's engine settings, built
directly with ray.serve.llm (used only when `m3bench serve up` fails on the device; runs there).

    python3 deploy/device/ray_app.py MODEL_ID MODEL_DIR PORT
"""

from __future__ import annotations

import sys
from pathlib import Path

import ray
import yaml
from ray import serve
from ray.serve.llm import LLMConfig, build_openai_app


def main(model_id: str, model_dir: str, port: str) -> None:
    catalog = yaml.safe_load((Path(__file__).parent / "models" / "h200-dummy.yaml").read_text())
    entry = next(m for m in catalog["models"] if m["id"] == model_id)
    engine = dict(entry["engine"])
    engine.update(engine.pop("extra", {}))
    config = LLMConfig(
        model_loading_config={"model_id": model_id, "model_source": model_dir},
        accelerator_type=entry["accelerator"],
        engine_kwargs=engine,
        deployment_config={
            "num_replicas": 1,
            "max_ongoing_requests": entry.get("max_ongoing_requests", 1024),
        },
        experimental_configs={"stream_batching_interval_ms": catalog["stream_batching_interval_ms"]},
        log_engine_metrics=True,
    )
    ray.init(address="127.0.0.1:6379", logging_level="ERROR")
    serve.start(http_options={"host": "127.0.0.1", "port": int(port)})
    serve.run(build_openai_app({"llm_configs": [config]}), name="m3bench", route_prefix="/")
    print(f"ready: http://127.0.0.1:{port}/v1 serves {model_id}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
