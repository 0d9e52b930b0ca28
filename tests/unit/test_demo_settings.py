"""`m3bench demo` without services: settings, the catalog, the accuracy runs' profile and index facts."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from loadgen.profile import Profile
from loadgen.schedule import build_plans
from m3bench.demo.run import _accuracy_profile, demo_catalog, model_facts
from m3bench.demo.settings import PRESETS, DemoSettings, embedded_spec
from tests.support.records import bare_record


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

    assert TRAINED_PROBLEMS == TRAIN_PROBLEMS
    assert 1 <= DemoSettings().accuracy_problems_per_language <= TRAINED_PROBLEMS
    with pytest.raises(ValidationError, match="accuracy_problems_per_language"):
        DemoSettings(accuracy_problems_per_language=TRAINED_PROBLEMS + 1)  # never a task it was not taught


def test_probe_places_levels_around_the_knee() -> None:
    from m3bench.demo.levels import Probe, choose_levels, knee, scaled

    # 1 stream: 0.8 req/s; 16 streams: 4 req/s -> the knee is near 5 streams.
    streams = knee(Probe(1, 0.8, 8), Probe(16, 4.0, 40))
    assert streams == pytest.approx(5.0)
    assert choose_levels(streams, 16, 96) == [1, 5, 10, 32]  # the top level queues past the batch of 16
    # Throughput still following at 16 streams: the knee is at least 16, the levels reach 4x.
    assert choose_levels(knee(Probe(1, 1.0, 5), Probe(16, 15.0, 70)), 16, 96) == [1, 15, 30, 60]
    assert choose_levels(None, 16, 40) == [1, 4, 16, 32, 40]  # a failed probe: a ladder, capped
    assert knee(Probe(1, None, 0), Probe(16, 3.0, 9)) is None
    assert knee(Probe(1, 0.25, 3), Probe(16, 0.05, 2)) is None  # the high level saw no steady state
    assert scaled([1, 5, 10, 32], 2, 96) == [2, 10, 20, 64]


def test_the_top_level_fits_its_measure_window() -> None:
    """2026-12-05 16:25 demo: tiny-llava-awq's probe (0.27 req/s at 1, 0.94 at 8 streams) gave [1, 3, 7, 16];
    at 16 streams a request lasted about 16 / 0.94 = 17 s, longer than the 12 s window, so the 2-replica
    sweep's 32-stream level had no throughput and held the sweep 19 s past its window."""
    from m3bench.demo.levels import Probe, choose_levels, knee, window_cap

    low, high = Probe(1, 0.27, 3), Probe(8, 0.94, 9)
    streams = knee(low, high)
    assert choose_levels(streams, 8, 96) == [1, 3, 7, 16]  # uncapped
    cap = window_cap(high, 12.0)
    assert cap == 8  # 0.75 * 12 s * 0.94 req/s = 8.5 streams: requests of about 9 s
    assert choose_levels(streams, 8, 96, cap) == [1, 3, 6, 8]  # the third level halfway to the top
    assert choose_levels(5.0, 16, 96, 40) == [1, 5, 10, 32]  # a cap above the top changes nothing
    assert window_cap(Probe(8, None, 0), 12.0) is None
    assert choose_levels(6.0, 8, 96, 3) == [1, 6]  # never below the knee


def test_sweeps_run_the_generator_at_the_chosen_priority(tmp_path: Path) -> None:
    from m3bench.demo.run import _probe_profile, _profile

    settings = DemoSettings()
    assert settings.generator_priority == "realtime"
    profile = Profile.model_validate(_profile(settings, tmp_path / "sd.json", 1, [1, 3, 9]))
    assert profile.generator.priority == "realtime"
    assert [plan.target for plan in build_plans(profile)] == [1, 3, 9]
    probe = Profile.model_validate(_probe_profile(settings, tmp_path / "sd.json", 1))
    assert [plan.target for plan in build_plans(probe)] == [1, settings.probe_concurrency]
    assert probe.grading.enabled is False
    low = Profile.model_validate(_profile(DemoSettings(generator_priority="default"), tmp_path / "s", 1))
    assert low.generator.priority == "default"
    # Spread output lengths and staggered starts: fixed-length closed-loop streams stay in lockstep.
    assert (profile.request.max_tokens_min, profile.request.max_tokens) == (32, 64)
    assert profile.sweep is not None
    assert profile.sweep.ramp_s == settings.warmup_s
    assert probe.sweep is not None
    assert probe.sweep.ramp_s <= probe.sweep.warmup_s
    with pytest.raises(ValidationError, match="ramp_s"):
        DemoSettings(warmup_s=1.0, ramp_s=2.0)
    with pytest.raises(ValidationError, match="max_tokens_min"):
        DemoSettings(max_tokens=16, max_tokens_min=32)


def test_probe_rate_counts_completions_inside_the_measured_window(tmp_path: Path) -> None:
    """Fixed-length replies batched whole end in rounds; the probe counts the tokens that arrived in its
    window (one chunk per reply here, at its first token)."""
    import json

    from loadgen.records import RecordWriter
    from m3bench.demo.levels import probe_rates

    s = 1_000_000_000
    start = 1_700_000_000 * s  # stage 0 starts here (wall), stage 1 100 s later
    rows = [
        {"event": "stage_start", "index": i, "name": f"c{c}", "start_wall_ns": start + i * 100 * s}
        for i, c in enumerate((1, 16))
    ]
    (tmp_path / "generator.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    writer = RecordWriter(tmp_path / "records.jsonl")
    ends = {0: [1.5, 3.0, 4.5, 6.0, 7.5, 9.0, 10.5, 12.0], 1: [4.0] * 16 + [9.0] * 16 + [14.0] * 16}
    for index, times in ends.items():
        for j, end_s in enumerate(times):
            sent = int((end_s - 1.0) * s) + index * 100 * s
            writer.write(
                bare_record(
                    request_id=f"{index}-{j}",
                    stage=f"c{(1, 16)[index]}",
                    stage_index=index,
                    mode="closed",
                    target=(1, 16)[index],
                    sent_ns=sent,
                    first_token_ns=sent + s // 10,
                    end_ns=sent + s,
                    chunk_offsets_ns=[s // 10],
                    anchor_wall_ns=start,
                    output_tokens=48,
                )
            )
    writer.close()
    low, high = probe_rates(tmp_path, warmup_s=2.0, measure_s=8.0)  # window [2, 10] s of each stage
    assert (low.concurrency, low.ok, low.throughput) == (1, 6, 6 / 8)  # tokens at 2.1 .. 9.6 s
    assert (high.concurrency, high.ok, high.throughput) == (16, 32, 4.0)  # two rounds of 16
