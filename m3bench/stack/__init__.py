"""Orchestration of the local stack's services (Prometheus today; Ray, Serve and Locust live elsewhere)."""

from m3bench.stack.prometheus import (
    PrometheusClient,
    PrometheusConfig,
    PrometheusError,
    PrometheusServer,
    RunWindow,
)

__all__ = ["PrometheusClient", "PrometheusConfig", "PrometheusError", "PrometheusServer", "RunWindow"]
