"""`m3bench demo` without services: settings, the catalog, the accuracy runs' profile and index facts."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from loadgen.profile import Profile
from loadgen.schedule import build_plans
from m3bench.demo.run import _accuracy_profile, demo_catalog, model_facts
from m3bench.demo.settings import PRESETS, DemoSettings, embedded_spec


def test_accuracy_profile_asks_every_task_once_at_natural_length(tmp_path: Path) -> None:
    settings = DemoSettings.model_validate(PRESETS["quick"])
    profile = Profile.model_validate(_accuracy_profile(settings, tmp_path / "sd.json", 3, 4, 8))
    (plan,) = build_plans(profile)
    assert (plan.target, plan.warmup_s, plan.measure_requests) == (4, 0.0, 8)
    assert plan.measure_s == settings.accuracy_budget_s  # bounds a model that never stops
    assert profile.sampling.by == "cycle"
    assert profile.sampling.languages == ["en", "zh", "ar", "hi"]
    assert profile.request.max_tokens is None  # each task's own gen.max_tokens
    assert profile.request.extra_body == {}  # no ignore_eos
    assert profile.request.temperature == 0.0


def test_model_facts_come_from_the_embedded_spec() -> None:
    assert model_facts("tiny-llava-bf16") == {
        "quantization": "none",
        "group_size": None,
        "family": "tiny-llava",
    }
    facts = model_facts("tiny-qwen2vl-gptq")
    assert facts["quantization"] == "gptq"
    assert facts["group_size"] == embedded_spec("tiny-qwen2vl-gptq")[1].group_size
    with pytest.raises(KeyError):
        embedded_spec("tiny-llava-int3")


def test_catalog_and_settings_validation() -> None:
    settings = DemoSettings()
    catalog = demo_catalog(settings)
    ids = [entry["id"] for entry in catalog["models"]]
    assert ids == ["tiny-llava-awq", "tiny-llava-awq-x2", "tiny-qwen2vl-awq", "tiny-llava-bf16"]
    assert {entry["id"]: entry["quantization"] for entry in catalog["models"]}["tiny-llava-bf16"] == "none"
    assert settings.saturation_model in settings.models
    with pytest.raises(ValidationError, match="saturation_model"):
        DemoSettings(models=["tiny-llava-bf16"], scale_model=None)
    with pytest.raises(ValidationError, match="accuracy set"):
        DemoSettings(problems_per_language=2, accuracy_problems_per_language=3)


def test_accuracy_phase_asks_what_the_models_were_trained_on() -> None:
    from m3bench.demo.settings import TRAINED_PROBLEMS
    from serving.embedded.train import TRAIN_PROBLEMS

    assert TRAINED_PROBLEMS == TRAIN_PROBLEMS == DemoSettings().accuracy_problems_per_language
