"""Bring the serving side up and down: a local Ray cluster (or an existing one), the catalog's Serve
applications, readiness, and the state ``status``/``down`` read."""

from serving.stack.cluster import ClusterError, LocalRayCluster, NodeSpec
from serving.stack.ports import DEFAULT_HTTP_PORT, DEFAULT_PORT_BASE, PortInUseError, PortPlan
from serving.stack.stack import ServeError, ServeStack, StackConfig, check_endpoint, stack_alive, stop_stack
from serving.stack.state import StackState, StateError, default_state_dir

__all__ = [
    "DEFAULT_HTTP_PORT",
    "DEFAULT_PORT_BASE",
    "ClusterError",
    "LocalRayCluster",
    "NodeSpec",
    "PortInUseError",
    "PortPlan",
    "ServeError",
    "ServeStack",
    "StackConfig",
    "StackState",
    "StateError",
    "check_endpoint",
    "default_state_dir",
    "stack_alive",
    "stop_stack",
]
