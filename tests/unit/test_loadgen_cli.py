"""`m3bench load run` / `load search`: bad options end as one line and exit status 2, before any load."""

from __future__ import annotations

import sys

import pytest

WEIGHTS = "sampling: {model_weights: {x: 1}}"
PROFILES = {  # per command, a profile it accepts but for the model weights
    "run": "{mode: closed, stages: [{concurrency: 1, measure_s: 1}], " + WEIGHTS + "}",
    "search": "{mode: search, search: {targets: [{max_s: 1}], start_rate: 1}, " + WEIGHTS + "}",
}


def _load(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
    models: str,
    profile: str,
) -> tuple[int, str]:
    from m3bench.cli import main

    options = ["--endpoint", "http://127.0.0.1:9", "--tasks", "/nonexistent", "--models", models]
    monkeypatch.setattr(sys, "argv", ["m3bench", "load", command, *options, "--profile", profile])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return int(exit_info.value.code or 0), capsys.readouterr().err


@pytest.mark.parametrize("command", ["run", "search"])
def test_bad_run_settings_are_one_line(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _load(monkeypatch, capsys, command, " , ", PROFILES[command])
    assert (code, err) == (2, "error: --models names no model\n")
    code, err = _load(monkeypatch, capsys, command, "a", PROFILES[command])
    assert (code, err) == (2, "error: model_weights names models not in --models: x\n")


def test_search_refuses_a_profile_without_mode_search(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = _load(monkeypatch, capsys, "search", "a", "smoke")
    assert (code, err) == (2, "error: profile smoke has mode: closed; a search needs mode: search\n")
