"""Dashboards and rules proven against a real Prometheus holding real data (Grafana cannot run here).

The embedded stack (Ray Serve + vLLM on the tiny INT4 LLaVA) serves a short open-loop and a short
closed-loop load from the real load generator while a local Prometheus scrapes Ray's exporter and every
Locust process; a third short run against the calibration server adds a second model whose answers
pass grading (the tiny model's do not), so the comparison panels compare two models. Then every panel
query of every dashboard (template variables expanded as Grafana would) and every recording rule must
return data over the runs' time range, and the data must be sane: p99 >= p90 >= p50 at every instant,
ratios (accuracy, error, goodput, cache hits, KV usage) in [0, 1], no negative rates, and the client's
TTFT median not below the engine's for the same requests (within histogram resolution, see
dashboards/compare.py). Set M3BENCH_PANELS_OUT=docs/images/panels to also write the key panel renders.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from loadgen.calibration.launch import calibration_server
from loadgen.calibration.tasks import write_calibration_tasks
from loadgen.profile import Profile, RunConfig
from loadgen.run import run_load
from observability import render, rules, verify
from observability.dashboards import build, compare
from observability.dashboards import server_metric_names as server
from observability.prometheus import PrometheusConfig, PrometheusServer, free_port
from serving.stack import ServeStack, StackConfig
from tests.support.ports import free_port_plan

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
REPO = Path(__file__).resolve().parents[2]
MODEL = "tiny-llava-awq"
CALIBRATED = "calib-echo"  # the calibration server: programmed timing, answers that pass
RUNS = {
    "open": {"rate": 3, "warmup_s": 1, "measure_s": 6, "cooldown_s": 1},
    "closed": {"concurrency": 3, "warmup_s": 1, "measure_s": 6, "cooldown_s": 1},
}


def _chat(endpoint: str) -> None:
    """One request before the load, so the engine's series exist when the window starts."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    request = urllib.request.Request(
        f"{endpoint}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as reply:
        assert reply.status == 200


def _load(
    endpoint: str,
    tasks: Path,
    out: Path,
    prometheus: PrometheusServer,
    mode: str,
    run_id: str,
    model: str = MODEL,
) -> Any:
    profile = Profile.model_validate(
        {
            "mode": mode,
            "stages": [RUNS[mode]],
            "slo": {"ttft_s": 2.0},
            "request": {"timeout_s": 60},
            "generator": {"file_sd_path": str(prometheus.loadgen_sd_path(run_id))},
        }
    )
    config = RunConfig(
        endpoint=endpoint, tasks=tasks, models=[model], profile=profile, out_dir=out, run_id=run_id
    )
    return run_load(config)


def test_every_panel_and_rule_on_real_scraped_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Ray exports every 10 s by default; a short run needs its engine metrics every second
    monkeypatch.setenv("RAY_metrics_report_interval_ms", "1000")
    plan = free_port_plan(46000, 60000)
    base = plan.base
    ray_temp = Path(f"/tmp/m3obs-{base}")
    tasks = write_calibration_tasks(tmp_path / "tasks", per_language=2, languages=("en", "zh"), max_tokens=12)
    config = PrometheusConfig(ray_temp_dir=ray_temp, rule_window="10s")
    runs = {mode: f"obs-{mode}-{base}" for mode in RUNS}
    calibrated_run = f"obs-calib-{base}"
    with PrometheusServer(
        config, tmp_path / "prometheus", free_port(), results_dir=tmp_path, run_id="obs"
    ) as prom:
        stack_config = StackConfig(
            ports=plan,
            temp_dir=ray_temp,
            state_dir=tmp_path / "serve-state",
            ready_timeout_s=420,
        )
        with ServeStack(REPO / "deploy/models/embedded-cpu.yaml", only=[MODEL], config=stack_config) as stack:
            _chat(stack.endpoint)
            prom.client.wait_for(f"{server.TTFT.name}_count", timeout_s=60)
            start = time.time()
            for mode, run_id in runs.items():
                result = _load(stack.endpoint, tasks, tmp_path / "load", prom, mode, run_id)
                assert result.records > 0
                assert result.summary.by_status["ok"] == result.records
            with calibration_server("--ttft-ms", "40", "--itl-ms", "5", "--models", CALIBRATED) as calibrated:
                result = _load(
                    calibrated.url, tasks, tmp_path / "load", prom, "open", calibrated_run, CALIBRATED
                )
                assert result.summary.by_status["ok"] == result.records
            end = time.time()
            time.sleep(4)  # the engine's last export, its scrape, and one rule evaluation
            window = verify.Window(
                start,
                end + 3,
                {
                    "run": "|".join([*runs.values(), calibrated_run]),
                    "model": ".*",
                    "language": ".*",
                    "__rate_interval": "4s",
                },
                step=1.0,
            )
            documents = build.load_committed()
            outcomes = verify.check_panels(prom.client, documents, window) + verify.check_rules(
                prom.client, window
            )
            side_by_side = compare.ttft_side_by_side(
                prom.client, f'{{run_id=~"{window.variables["run"]}"}}', window
            )
            variables = {
                name: prom.client.label_values(name, "m3bench_requests_total", start, end + 3)
                for name in ("run_id", "model", "language")
            }
            problems = verify.failures(outcomes) + verify.quantile_order(prom.client, window)
            accuracy = {
                row["metric"]["model"]: float(row["value"][1])
                for row in prom.query(
                    f"max by (model) (last_over_time({rules.ACCURACY}[{window.range}]))", at=window.end
                )
            }
            out_dirs = [tmp_path / "panels"] + [
                Path(p) for p in [os.environ.get("M3BENCH_PANELS_OUT", "")] if p
            ]
            pngs = [
                path
                for out in out_dirs
                for path in render.render_dashboards(
                    prom.client,
                    documents,
                    window,
                    out,
                    subtitle=f"{MODEL} on vLLM CPU (open, then closed loop), then {CALIBRATED}",
                )
            ]
    assert problems == [], "\n".join(problems)
    assert len(outcomes) > 80  # every panel target and every rule ran
    assert {*runs.values(), calibrated_run} <= set(variables["run_id"])
    assert {MODEL, CALIBRATED} <= set(variables["model"])
    assert {"en", "zh"} <= set(variables["language"])
    assert [row.model for row in side_by_side] == [MODEL]  # the calibration server has no engine metrics
    assert accuracy[CALIBRATED] == 1.0
    assert 0.0 <= accuracy[MODEL] <= 1.0
    for row in side_by_side:
        assert row.consistent, row
        assert row.client_count >= sum(RUNS[m].get("measure_s", 0) for m in RUNS)  # both runs were scraped
    assert len(pngs) == 3 * len(out_dirs)
    assert all(p.stat().st_size > 10_000 for p in pngs)
    window_file = json.loads((tmp_path / "prometheus_window.json").read_text())
    assert window_file["start"] < start
    assert window_file["end"] > end
