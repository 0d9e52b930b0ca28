"""Suite-wide settings: one model cache for every test (the embedded models are built once per
machine, ~20 s), and the ``slow`` marker for tests that start real services."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Tests share the cache a user's demo run would use, unless the caller chose one.
os.environ.setdefault("M3BENCH_CACHE", str(REPO / ".cache" / "m3bench"))
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


# --- Skip accounting (docs/TEAM.md, "Skips") -------------------------------------------------------
# A skipped test is not a pass: every skip is listed with its reason at the end of the run, and under
# --strict-skips (what deploy/test.sh, so CI, passes) a skip fails the run unless the test measured the
# disturbance that made it skip (tests/support/skips.py: skip_disturbed).
import pytest  # noqa: E402

from tests.support.skips import DISTURBED  # noqa: E402

_skips: list[tuple[str, str]] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--strict-skips",
        action="store_true",
        help="fail the run when a test skipped without naming a measured disturbance",
    )


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        _skips.append((report.nodeid, reason.removeprefix("Skipped: ")))


def _unexcused() -> list[tuple[str, str]]:
    return [(nodeid, reason) for nodeid, reason in _skips if not reason.startswith(DISTURBED)]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    if not _skips:
        return
    strict = config.getoption("--strict-skips")
    terminalreporter.section(f"skipped tests ({len(_skips)})")
    for nodeid, reason in _skips:
        excused = reason.startswith(DISTURBED)
        verdict = "allowed" if excused or not strict else "FAILS THE RUN"
        terminalreporter.write_line(f"SKIPPED [{verdict}] {nodeid}: {reason}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if session.config.getoption("--strict-skips") and _unexcused() and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
