"""m3bench.demo.cpuslice: a real busy process named like a vLLM engine, capped by a CPU cgroup quota."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from m3bench.demo.cpuslice import EngineSlices, engine_groups


def test_engine_is_capped_and_the_group_removed() -> None:
    code = "import time\nt = time.time()\nwhile time.time() - t < 20: pass"
    child = subprocess.Popen([sys.executable, "-c", code, "VLLM::EngineCore"])
    slices = EngineSlices(f"m3bench-test-{child.pid}", 0.2)
    try:
        deadline = time.monotonic() + 10
        while (
            "EngineCore" not in " ".join(psutil.Process(child.pid).cmdline()) and time.monotonic() < deadline
        ):
            time.sleep(0.01)  # between fork and exec the child still shows the parent's command line
        assert engine_groups({child.pid}) == [[child.pid]]
        assert engine_groups({child.pid + 10**7}) == []
        why = slices.apply([[child.pid]])
        if why is not None:  # not root and no delegated cgroup: the demo runs uncapped and says why
            assert "cgroup" in why
            assert slices.groups == []
            return
        process = psutil.Process(child.pid)
        before = sum(process.cpu_times()[:2])
        time.sleep(2.0)
        used = sum(process.cpu_times()[:2]) - before
        assert used <= 2.0 * 0.2 * 1.25, used  # a busy loop held to 0.2 core (+25 %: period edges)
    finally:
        slices.remove()
        child.kill()
        child.wait()
    assert slices.groups == []
    assert slices.root is None
