"""Profiles: validated with one-line messages, extra keys refused, built-ins and inline YAML."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadgen.profile import PROFILES_DIR, ProfileError, RunConfig, load_profile


def test_every_builtin_profile_loads() -> None:
    names = sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))
    assert "smoke" in names
    for name in names:
        assert load_profile(name).resolved_stages()


def test_inline_yaml_and_overrides() -> None:
    profile = load_profile(
        "{mode: closed, stages: [{concurrency: 3, measure_s: 5}]}", {"generator.workers": 2, "seed": 9}
    )
    assert (profile.generator.workers, profile.seed, profile.stages[0].concurrency) == (2, 9, 3)


def test_file_profile(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("mode: open\nstages:\n  - rate: 2\n    measure_requests: 10\n", encoding="utf-8")
    assert load_profile(path).stages[0].rate == 2


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            "{mode: closed, stages: [{concurrency: 2, measure_s: 5}], bogus: 1}",
            "bogus: Extra inputs are not permitted",
        ),
        ("{mode: closed, stages: [{rate: 2, measure_s: 5}]}", "closed-loop stages set concurrency"),
        ("{mode: open, stages: [{rate: 2}]}", "bounded by measure_s, measure_requests or both"),
        ("{mode: open, stages: [{rate: 2, concurrency: 3, measure_s: 1}]}", "exactly one of concurrency"),
        ("{mode: open, stages: [{rate: 2, measure_s: 1, ramp_s: 3}]}", "must fit inside warmup_s"),
        ("{mode: sideways, stages: []}", "mode: Input should be 'closed', 'open' or 'search'"),
        ("{mode: open}", "either stages or a sweep"),
        ("mode: [unclosed", "not valid YAML"),
        ("no-such-profile", "neither a file, a built-in"),
        ("missing.yaml", "does not exist"),
    ],
)
def test_invalid_profiles_give_one_line(spec: str, expected: str) -> None:
    with pytest.raises(ProfileError) as caught:
        load_profile(spec)
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message


def test_model_weights_must_name_run_models() -> None:
    profile = load_profile(
        "{mode: closed, stages: [{concurrency: 1, measure_s: 1}], sampling: {model_weights: {x: 1}}}"
    )
    with pytest.raises(ValueError, match="not in --models: x"):
        RunConfig(endpoint="http://127.0.0.1:1", tasks=Path("t"), models=["a"], profile=profile)


def test_a_new_locust_worker_gets_the_longer_heartbeat_liveness() -> None:
    # In its own process: importing Locust monkey-patches the standard library with gevent.
    import subprocess
    import sys

    code = (
        "import loadgen.locustfile as lf\n"
        "from locust import runners\n"
        "node = runners.WorkerNode('w1', heartbeat_liveness=runners.HEARTBEAT_LIVENESS)\n"
        "import inspect\n"
        "src = inspect.getsource(runners.MasterRunner)\n"
        "print(node.heartbeat == lf.HEARTBEAT_LIVENESS_S, 'heartbeat_liveness=HEARTBEAT_LIVENESS' in src)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    # the master builds each WorkerNode with the module global at call time: what the patch relies on
    assert out.stdout.split() == ["True", "True"]
