"""A free block of ports for a test's own Ray cluster and Serve endpoint (``http = base + 150``, a port
no Ray process of the block uses), chosen at random so concurrent tests and a running demo never meet."""

from __future__ import annotations

import random

from serving.stack import PortInUseError, PortPlan

HTTP_OFFSET = 150


def free_port_plan(low: int, high: int, nodes: int = 1) -> PortPlan:
    """A :class:`PortPlan` with base in ``[low, high)`` whose every port is free now."""
    for _ in range(50):
        base = random.randrange(low, high, 1000)
        plan = PortPlan(base=base, http=base + HTTP_OFFSET)
        try:
            plan.check_free(nodes)
        except PortInUseError:
            continue
        return plan
    raise RuntimeError(f"no free block of ports between {low} and {high}")
