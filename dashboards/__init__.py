"""Observability as code: Prometheus rules and Grafana dashboards built from m3bench's metric names.

``dashboards.rules`` (recording and alerting rules), ``dashboards.build`` (Grafana dashboards through
grafana-foundation-sdk; JSON committed under ``dashboards/json``), ``dashboards.verify`` (every panel
query against a real Prometheus), ``dashboards.render`` (static PNGs), ``dashboards.push`` (Grafana API).
"""
