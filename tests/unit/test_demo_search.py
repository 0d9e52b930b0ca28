"""`m3bench demo --search`: which served models may be searched, and the search profile it runs; the
sweeps' load seeds."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from loadgen.profile import Profile
from m3bench.demo.run import _search_profile, sweep_seeds
from m3bench.demo.settings import DemoSettings


def test_only_served_models_can_be_searched() -> None:
    settings = DemoSettings(search_models=["tiny-llava-awq", "tiny-llava-awq-x2"])
    assert settings.search_models == ["tiny-llava-awq", "tiny-llava-awq-x2"]
    with pytest.raises(ValidationError, match="not served"):
        DemoSettings(search_models=["tiny-llava-bf16-x2"])  # only the scale model runs at 2 replicas
    with pytest.raises(ValidationError, match="not served"):
        DemoSettings(scale_model=None, search_models=["tiny-llava-awq-x2"])


def test_search_profile_holds_the_ttft_slo_at_the_stated_percentile(tmp_path: Path) -> None:
    settings = DemoSettings(search_models=["tiny-llava-awq"], search_quantile=0.9, slo_ttft_p99_s=2.0)
    profile = Profile.model_validate(_search_profile(settings, tmp_path / "sd.json", 7, 0.6))
    assert profile.mode == "search"
    assert profile.search is not None
    (target,) = profile.search.targets
    assert (target.metric, target.quantile, target.max_s) == ("ttft", 0.9, 2.0)
    assert profile.search.start_rate == 0.6
    assert profile.search.min_rate == pytest.approx(0.6 / 16)
    assert profile.search.max_rate == pytest.approx(0.6 * 16)
    assert profile.search.resolution == settings.search_resolution
    assert profile.request.max_tokens == settings.max_tokens  # the sweeps' requests, fixed length
    assert profile.request.extra_body == {"ignore_eos": True}


def test_an_n_replica_sweep_draws_its_models_first_sequence() -> None:
    targets = [("a", "a", 1), ("b", "b", 1), ("c", "c", 1), ("a-x2", "a", 2)]
    assert sweep_seeds(targets) == [1, 2, 3, 1]
    assert sweep_seeds([("a", "a", 1), ("b", "b", 1)]) == [1, 2]  # without a scale model: each its own
