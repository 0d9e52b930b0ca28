"""Observability: what Prometheus scrapes and records, and what Grafana shows, built from m3bench's
metric names.

``observability.prometheus`` (config, a run-scoped local server, the query client and run window),
``observability.rules`` (recording and alerting rules), ``observability.deploy`` (the generated files
under deploy/prometheus/), ``observability.dashboards`` (Grafana dashboards through
grafana-foundation-sdk; the JSON is generated into the top-level ``dashboards/`` folder),
``observability.verify`` (every panel query against a real Prometheus), ``observability.render``
(static PNGs), ``observability.push`` (Grafana API), ``observability.cli`` (``m3bench dashboards``).

It imports the load generator's metric names (``loadgen.metric_names``) and SLO type; nothing in
``m3bench`` and nothing in ``serving``.
"""
