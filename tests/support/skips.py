"""Skips that CI accepts: only a test that measured what disturbed it may skip (docs/TEAM.md, "Skips").

``deploy/test.sh`` runs pytest with ``--strict-skips``: every skip is listed at the end of the run with
its reason, and any skip that did not come through :func:`skip_disturbed` fails the run (a missing tool
or package in CI is a set-up bug, not a pass).
"""

from __future__ import annotations

from typing import NoReturn

import pytest

DISTURBED = "disturbed (measured): "


def skip_disturbed(measured: str) -> NoReturn:
    """Skip a timing test whose every attempt the machine disturbed; ``measured`` names the figures."""
    pytest.skip(DISTURBED + measured)
