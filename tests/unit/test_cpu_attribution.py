"""loadgen.cpu_attribution: process groups by command line, and a real sampled busy process."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loadgen.cpu_attribution import CpuSampler, Window, attribute, classify, read_samples, summarize_window


@pytest.mark.parametrize(
    ("cmdline", "group"),
    [
        ("VLLM::EngineCore", "vllm_engine"),
        ("VLLM::Worker", "vllm_engine"),
        ("ray::ServeReplica:m3bench:LLMServer:tiny-llava-awq", "llm_server"),
        ("ray::ServeReplica:m3bench:OpenAiIngress", "ingress"),
        ("ray::ProxyActor", "proxy"),
        ("/usr/sbin/haproxy -f /tmp/haproxy.cfg", "proxy"),
        ("ray::ServeController", "ray_daemons"),
        ("ray::IDLE", "ray_daemons"),
        ("/x/site-packages/ray/core/src/ray/gcs/gcs_server --log_dir=/tmp", "ray_daemons"),
        ("/x/site-packages/ray/core/src/ray/raylet/raylet --raylet_socket_name=a", "ray_daemons"),
        ("/v/bin/python -u /x/ray/dashboard/agent.py --node-ip-address=127.0.0.1", "ray_daemons"),
        ("/v/bin/python -u /x/ray/dashboard/dashboard.py --host=127.0.0.1", "ray_daemons"),
        ("/c/prometheus --config.file=p.yml", "prometheus"),
        ("/v/bin/python -m locust -f /w/loadgen/locustfile.py --m3bench-config run.json", "generator"),
        ("/v/bin/python -m loadgen.grader_process benchmark.grading:grade", "grader"),
        ("/v/bin/python -c pass", None),
        ("", None),
    ],
)
def test_classify(cmdline: str, group: str | None) -> None:
    assert classify(cmdline) == group


def _row(t_s: float, **groups: float) -> dict[str, object]:
    return {
        "t_wall_ns": int(t_s * 1e9),
        "dt_s": 1.0,
        "busy_s": 1.5,
        "idle_s": 0.4,
        "iowait_s": 0.0,
        "steal_s": 0.1,
        "procs_running": int(t_s) % 5,
        "procs_blocked": 0,
        "loadavg1": 2.0,
        "groups": groups,
        "unattributed_s": 0.0,
    }


def test_window_takes_the_rows_whose_interval_lies_inside() -> None:
    rows = [_row(t, vllm_engine=1.0, generator=0.05) for t in range(1, 11)]  # intervals (t-1, t]
    out = summarize_window(rows, Window("c1", int(2e9), int(6e9)))
    assert out["samples"] == 4  # midpoints 2.5, 3.5, 4.5, 5.5
    assert out["cpu_s"]["vllm_engine"] == 4.0
    assert out["cores"]["generator"] == pytest.approx(0.05)
    assert out["steal_fraction"] == pytest.approx(0.05)
    assert out["machine_busy_fraction"] == pytest.approx(0.75)
    assert out["procs_running"]["max"] == 4


def test_attribute_cuts_stages_at_warmup_and_measure(tmp_path: Path) -> None:
    rows = [_row(t, grader=0.5) for t in range(1, 21)]
    (tmp_path / "cpu.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"cut')
    starts = [
        {"event": "stage_start", "index": i, "name": f"c{i}", "start_wall_ns": int(s * 1e9)}
        for i, s in enumerate((0, 10))
    ]
    (tmp_path / "generator.jsonl").write_text("".join(json.dumps(r) + "\n" for r in starts))
    out = attribute(tmp_path, {"c0": (2.0, 5.0), "c1": (1.0, 60.0)})
    first, second = out["stages"]
    assert (first["samples"], second["samples"]) == (5, 9)  # c1 runs to the end of the samples
    assert json.loads((tmp_path / "cpu.json").read_text())["stages"][0]["cpu_s"]["grader"] == 2.5


def test_sampler_attributes_a_real_busy_process(tmp_path: Path) -> None:
    """A real busy-looping child whose command line names it a grader; its CPU lands in that group."""
    path = tmp_path / "cpu.jsonl"
    code = "import time\nt = time.time()\nwhile time.time() - t < 3: pass"
    with CpuSampler(path, interval_s=0.5):
        child = subprocess.Popen([sys.executable, "-c", code, "loadgen.grader_process"])
        time.sleep(2.5)
        child.kill()
        child.wait()
    rows = read_samples(path)
    assert len(rows) >= 4
    grader = sum(r["groups"].get("grader", 0.0) for r in rows)
    other = sum(r["groups"].get("other", 0.0) for r in rows)
    assert grader >= 0.3, (grader, other)  # >= 12 % of one core over 2.5 s even on a busy machine
    assert all(r["procs_running"] >= 1 for r in rows)  # the sampler itself is running when it reads
