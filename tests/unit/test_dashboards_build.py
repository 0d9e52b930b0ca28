"""Dashboards and rules as code: generated files up to date, SDK schema, one source of metric names."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from loadgen import metric_names as client
from observability import deploy, rules, verify
from observability.dashboards import build, promql
from observability.dashboards import server_metric_names as server

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed")
VALUES = {
    "run": "r1",
    "model": ".*",
    "language": ".*",
    "__rate_interval": "4s",
    "__range": "60s",
    "__interval": "2s",
}


@pytest.fixture(scope="module")
def documents() -> dict[str, dict[str, Any]]:
    return build.build_all()


def test_committed_files_match_the_code() -> None:
    assert deploy.stale(deploy.generated_dashboards(), build.DASHBOARDS_DIR) == []
    assert deploy.stale(deploy.generated(), deploy.DEPLOY_DIR) == []
    assert build.load_committed() == build.build_all()


def test_dashboards_validate_against_the_sdk_schema(documents: dict[str, dict[str, Any]]) -> None:
    assert set(documents) == {"m3bench-load-test", "m3bench-model-comparison", "m3bench-serving-internals"}
    for document in documents.values():
        assert build.validate(document) == []


def test_validation_catches_unknown_keys_and_foreign_queries(documents: dict[str, dict[str, Any]]) -> None:
    broken = copy.deepcopy(documents["m3bench-load-test"])
    panel = broken["panels"][1]
    panel["targets"][0]["exprr"] = panel["targets"][0].pop("expr")
    panel["gridPoss"] = {}
    problems = build.validate(broken)
    assert any("exprr" in p for p in problems)
    assert any("gridPoss" in p for p in problems)
    foreign = copy.deepcopy(documents["m3bench-load-test"])
    foreign["panels"][1]["datasource"] = {"type": "loki", "uid": "x"}
    for target in foreign["panels"][1]["targets"]:
        target["datasource"] = {"type": "loki", "uid": "x"}
    assert any("not a Prometheus query" in p for p in build.validate(foreign))


def test_panels_have_ids_datasource_and_variables(documents: dict[str, dict[str, Any]]) -> None:
    for document in documents.values():
        ids = [p["id"] for p in document["panels"]]
        assert len(ids) == len(set(ids))
        names = [v["name"] for v in document["templating"]["list"]]
        assert names == ["datasource", "run", "model", "language"]
    for query in verify.panel_queries(documents):
        assert "$" in query.expr or "m3bench" not in query.expr, query.where  # client series are filtered
        promql.expand(query.expr, VALUES)  # every variable a panel uses is one the dashboards define


def _known_names() -> set[str]:
    known = set(rules.recorded_names()) | {"process_cpu_seconds_total", client.JOB_NAME}
    for spec in client.ALL:
        suffixes = ("_bucket", "_sum", "_count") if spec.kind == "histogram" else ("_total",)
        known |= {spec.name + s for s in suffixes} if spec.kind != "gauge" else {spec.name}
    for metric in server.ALL:
        known |= {metric.name, metric.name + "_bucket", metric.name + "_sum", metric.name + "_count"}
    return known


NAME = re.compile(r"\b(?:m3bench|ray)_[a-z0-9_]+\b|\b[a-z_]+:[a-z0-9_]+:[a-z0-9_]+\b")


def test_every_metric_name_comes_from_the_name_modules(documents: dict[str, dict[str, Any]]) -> None:
    known = _known_names()
    expressions = [q.expr for q in verify.panel_queries(documents)]
    expressions += list(verify.variable_queries(documents).values())
    for group in (rules.recording_groups(rules.RuleSettings()), rules.alert_groups(rules.RuleSettings())):
        expressions += [rule["expr"] for g in group["groups"] for rule in g["rules"]]
    used = {name for expr in expressions for name in NAME.findall(expr)}
    assert used - known == set()
    # every client and server series the dashboards promise is used somewhere
    assert {f"{client.TTFT.name}_bucket", server.KV_CACHE_USAGE.name, server.MM_CACHE_HITS.name} <= used


def test_slo_thresholds_snap_to_bucket_bounds() -> None:
    assert promql.bucket_at_or_below(client.TTFT.buckets, 2.0) == 2.0
    assert promql.bucket_at_or_below(client.TTFT.buckets, 0.4) == 0.3
    with pytest.raises(ValueError, match="below the smallest"):
        promql.bucket_at_or_below(client.TTFT.buckets, 0.001)
    prometheus_client_utils = pytest.importorskip("prometheus_client.utils")
    for spec in client.ALL:
        for bound in spec.buckets:
            assert promql.le_value(bound) == prometheus_client_utils.floatToGoString(bound)


def test_expand_substitutes_grafana_variables_but_not_regex_groups() -> None:
    expr = 'label_replace(x{run_id=~"$run",m=~"${model}"}[$__rate_interval], "a", "$1", "b", "(.*)")'
    assert promql.expand(expr, VALUES) == 'label_replace(x{run_id=~"r1",m=~".*"}[4s], "a", "$1", "b", "(.*)")'
    with pytest.raises(KeyError):
        promql.expand('x{a=~"$unknown"}', VALUES)


@needs_promtool
@pytest.mark.parametrize("window", ["10s", "1m"])
def test_rule_files_pass_promtool(tmp_path: Path, window: str) -> None:
    paths = rules.write_rule_files(tmp_path, rules.RuleSettings(window=window))
    result = subprocess.run(
        [str(PROMTOOL), "check", "rules", *map(str, paths)], check=False, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_deploy_config_passes_promtool() -> None:
    config = deploy.DEPLOY_DIR / "prometheus.yml"
    result = subprocess.run(
        [str(PROMTOOL), "check", "config", str(config)], check=False, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 2 rule files found" in result.stdout + result.stderr


@needs_promtool
def test_rules_compute_what_they_claim(tmp_path: Path) -> None:
    """promtool's rule unit tests on synthetic series: accuracy, error ratio, goodput, quantiles."""
    rules.write_rule_files(tmp_path, rules.RuleSettings(window="1m"))
    (tmp_path / "rules_test.yml").write_text(RULES_TEST.replace("{RECORDING}", rules.RECORDING_FILE))
    result = subprocess.run(
        [str(PROMTOOL), "test", "rules", "rules_test.yml"],
        check=False,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr


_M = 'run_id="r",model="m",language="en",stage="s",phase="measure",instance="a"'
_Q = 'run_id="r",model="q",language="en",stage="s",phase="measure",instance="a"'
# Per 15 s: 9 ok + 1 timeout; 8 of the 9 ok within TTFT 2 s, all within TPOT 0.2 s; 3 pass, 1 fail,
# 5 ungraded. Model q: TTFT histogram with 4 of 10 below 0.1 s and 8 below 0.5 s.
RULES_TEST = f"""
rule_files: [{{RECORDING}}]
evaluation_interval: 15s
tests:
  - interval: 15s
    input_series:
      - {{series: 'm3bench_requests_total{{{_M},status="ok"}}', values: '0+9x20'}}
      - {{series: 'm3bench_requests_total{{{_M},status="timeout"}}', values: '0+1x20'}}
      - {{series: 'm3bench_ttft_seconds_count{{{_M}}}', values: '0+9x20'}}
      - {{series: 'm3bench_ttft_seconds_bucket{{{_M},le="2.0"}}', values: '0+8x20'}}
      - {{series: 'm3bench_tpot_seconds_count{{{_M}}}', values: '0+9x20'}}
      - {{series: 'm3bench_tpot_seconds_bucket{{{_M},le="0.2"}}', values: '0+9x20'}}
      - {{series: 'm3bench_graded_total{{{_M},verdict="pass"}}', values: '0+3x20'}}
      - {{series: 'm3bench_graded_total{{{_M},verdict="fail"}}', values: '0+1x20'}}
      - {{series: 'm3bench_graded_total{{{_M},verdict="ungraded"}}', values: '0+5x20'}}
      - {{series: 'm3bench_ttft_seconds_bucket{{{_Q},le="0.1"}}', values: '0+4x20'}}
      - {{series: 'm3bench_ttft_seconds_bucket{{{_Q},le="0.5"}}', values: '0+8x20'}}
      - {{series: 'm3bench_ttft_seconds_bucket{{{_Q},le="+Inf"}}', values: '0+10x20'}}
    promql_expr_test:
      - expr: run_model_language:m3bench_accuracy:ratio
        eval_time: 4m
        exp_samples:
          - labels: 'run_model_language:m3bench_accuracy:ratio{{run_id="r",model="m",language="en"}}'
            value: 0.75
      - expr: run_model:m3bench_requests_errors:ratio{{model="m"}}
        eval_time: 4m
        exp_samples:
          - {{labels: 'run_model:m3bench_requests_errors:ratio{{run_id="r",model="m"}}', value: 0.1}}
      - expr: run_model:m3bench_goodput:rate{{model="m"}}
        eval_time: 4m
        exp_samples:
          - {{labels: 'run_model:m3bench_goodput:rate{{run_id="r",model="m"}}', value: 0.5333333333333333}}
      - expr: run_model:m3bench_goodput:ratio{{model="m"}}
        eval_time: 4m
        exp_samples:
          - {{labels: 'run_model:m3bench_goodput:ratio{{run_id="r",model="m"}}', value: 0.888888888888889}}
      - expr: run_model:m3bench_ttft_seconds:p50{{model="q"}}
        eval_time: 4m
        exp_samples:
          - labels: 'run_model:m3bench_ttft_seconds:p50{{run_id="r",model="q"}}'
            value: 0.19999999999999998
"""
