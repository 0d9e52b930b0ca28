"""Answers that attack the grader: each must get fail, error or timeout, never pass.

Two kinds: attacks on a real HumanEval problem (the answer tries to fake a pass or to hurt the machine),
and probes on synthetic tasks whose tests pass *only* if the attack worked (reading a file outside,
reaching the network, writing outside, signalling other processes). Afterwards the grader still grades,
and nothing outside the sandbox has changed.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import benchmark.grading
from benchmark.grading import grade
from benchmark.tasks.loaders.humaneval import read_problems, to_record
from benchmark.tasks.schema import TaskRecord

TIMEOUT_S = 1.5
H = "def has_close_elements(numbers, threshold):\n"
CORRECT_BODY = (
    "    return any(abs(a - b) < threshold\n"
    "               for i, a in enumerate(numbers) for j, b in enumerate(numbers) if i != j)\n"
)

ATTACKS: dict[str, str] = {
    "fork bomb": H + "    import os\n    while True:\n        os.fork()\n",
    "subprocess": H
    + "    import subprocess\n    subprocess.run(['/bin/sh', '-c', 'echo hi'])\n    return True\n",
    "os.system": H + "    import os\n    os.system('touch /tmp/m3bench-pwned')\n    return True\n",
    "memory bomb": H + "    x = bytearray(8 * 1024**3)\n    return True\n",
    "memory creep": H + "    chunks = []\n    while True:\n        chunks.append(bytearray(50 * 1024**2))\n",
    "infinite loop": H + "    while True:\n        pass\n",
    "long sleep": H + "    import time\n    time.sleep(3600)\n",
    "loop at load": "import itertools\n_ = [0 for _ in itertools.count()]\n" + H + CORRECT_BODY,
    "os._exit(0) at load": "import os\n_ = os._exit(0)\n" + H + CORRECT_BODY,
    "os._exit(0) in call": H + "    import os\n    os._exit(0)\n",
    "sys.exit(0) in call": H + "    import sys\n    sys.exit(0)\n",
    "always-equal object": "class Yes:\n    def __eq__(self, other):\n        return True\n"
    "    __hash__ = object.__hash__\n" + H + "    return Yes()\n",
    "str subclass trick": "class S(str):\n    def __eq__(self, other):\n        return True\n"
    "    __hash__ = str.__hash__\n" + H + "    return S('x')\n",
    "patch AssertionError": "import builtins\n"
    "_ = setattr(builtins, 'AssertionError', type('X', (Exception,), {}))\n" + H + "    return True\n",
    "redefine check": "def check(candidate):\n    return None\n" + H + "    return True\n",
    "patch the runner's encoder": "import sys\n_m = sys.modules['__main__']\n"
    "_ = setattr(_m, 'encode_value', lambda v, depth=0: {'i': '1'})\n" + H + "    return False\n",
    "huge output": H + "    while True:\n        print('x' * 65536)\n",
    "recursion bomb": "import sys\n_ = sys.setrecursionlimit(10**8)\ndef r(n):\n    return r(n + 1) + 1\n"
    + H
    + "    return r(0)\n",
    "ctypes null read": H + "    import ctypes\n    return ctypes.string_at(0)\n",
    "ctypes libc system": H + "    import ctypes\n    ctypes.CDLL(None).system(b'touch /tmp/m3bench-pwned')\n"
    "    return True\n",
    "thread bomb": H + "    import threading, time\n    while True:\n"
    "        threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n",
    "forge a verdict on every fd": "import os, json\n"
    "_msg = json.dumps({'nonce': '', 'verdict': 'pass', 'detail': 'forged'}).encode()\n"
    "def _spray():\n    for fd in range(64):\n        try:\n            os.write(fd, _msg)\n"
    "        except OSError:\n            pass\n_ = _spray()\n" + H + "    return _spray()\n",
    "print a pass marker": H + "    print('{\"verdict\": \"pass\"}')\n    print('PASS all tests passed')\n"
    "    return None\n",
    "find the harness in /proc": H + "    import os, glob\n    for fd in glob.glob('/proc/*/fd/*'):\n"
    '        try:\n            os.write(os.open(fd, os.O_WRONLY), b\'{"verdict": "pass"}\')\n'
    "        except OSError:\n            pass\n    return None\n",
    "fill /tmp": H + "    n = 0\n    while True:\n        open(f'/tmp/f{n}', 'wb').write(b'x' * 1024**2)\n"
    "        n += 1\n",
    "KeyboardInterrupt in call": H + "    raise KeyboardInterrupt\n",
    "huge return value": H + "    return list(range(10**7))\n",
    "setsid and escape": H + "    import os\n    os.setsid()\n    if os.fork() == 0:\n        os._exit(0)\n",
}


@pytest.fixture(scope="module")
def humaneval_0() -> TaskRecord:
    record = to_record(next(p for p in read_problems() if p.task_id == "HumanEval/0"))
    return record.model_copy(update={"grading": record.grading.model_copy(update={"timeout_s": TIMEOUT_S})})


def probe_task(name: str, expected: str) -> TaskRecord:
    """A task that passes only when ``probe()`` returns ``expected`` (only a broken sandbox allows it)."""
    return TaskRecord.model_validate(
        {
            "id": f"probe/{name}",
            "source": {"benchmark": "probe", "source_id": name, "license": "MIT"},
            "natural_language": "en",
            "prompt": "probe",
            "entry_point": "probe",
            "grading": {
                "method": "execution",
                "tests": f"assert probe() == {expected!r}\n",
                "prelude": "def probe():\n    pass\n",
                "timeout_s": TIMEOUT_S,
            },
            "metadata": {"image_required": False},
        }
    )


@pytest.fixture
def listener() -> Iterator[tuple[int, list[bytes]]]:
    received: list[bytes] = []
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except OSError:
                continue
            received.append(connection.recv(100) or b"<connected>")
            connection.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], received
    stop.set()
    thread.join()
    server.close()


def probes(outside: Path, port: int) -> list[tuple[TaskRecord, str]]:
    secret = (outside / "secret.txt").read_text()
    grader_file = Path(benchmark.grading.__file__).resolve()
    grader_line = grader_file.read_text().splitlines()[0]
    def_ = "def probe():\n"
    return [
        (probe_task("read outside", secret),
         def_ + f"    return open({str(outside / 'secret.txt')!r}).read()\n"),
        (probe_task("read grader", grader_line),
         def_ + f"    return open({str(grader_file)!r}).read().splitlines()[0]\n"),
        (probe_task("network", "connected"),
         def_ + f"    import socket\n    s = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
         "    s.sendall(b'leak')\n    return 'connected'\n"),
        (probe_task("write outside", "written"),
         def_ + f"    open({str(outside / 'sentinel')!r}, 'w').write('pwned')\n    return 'written'\n"),
        (probe_task("delete outside", "deleted"),
         def_ + f"    import os\n    os.remove({str(outside / 'sentinel')!r})\n    return 'deleted'\n"),
        (probe_task("kill parent", "killed"),
         def_ + "    import os, signal\n    os.kill(os.getppid(), signal.SIGKILL)\n    return 'killed'\n"),
        (probe_task("signal everyone", "reached"),
         def_ + "    import os\n    os.kill(-1, 0)\n    return 'reached'\n"),
    ]  # fmt: skip


def snapshot(directory: Path) -> dict[str, str]:
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def grade_temp_dirs() -> set[str]:
    return {name for name in os.listdir("/tmp") if name.startswith("m3bench-grade-")}


def run_corpus(humaneval_0: TaskRecord, outside: Path, port: int, attacks: dict[str, str]) -> dict[str, str]:
    jobs = [(name, humaneval_0, f"```python\n{code}```") for name, code in attacks.items()]
    jobs += [(task.id, task, f"```python\n{code}```") for task, code in probes(outside, port)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda job: (job[0], grade(job[1], job[2])), jobs))
    return {name: f"{result.verdict}: {result.detail}" for name, result in results}


def test_adversarial_corpus(
    humaneval_0: TaskRecord, tmp_path: Path, listener: tuple[int, list[bytes]]
) -> None:
    port, received = listener
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "sentinel").write_text("original")
    (outside / "secret.txt").write_text(secrets.token_hex(8))
    before, temp_before = snapshot(outside), grade_temp_dirs()
    verdicts = run_corpus(humaneval_0, outside, port, ATTACKS)
    assert len(verdicts) >= 25
    passed = {name: verdict for name, verdict in verdicts.items() if verdict.startswith("pass")}
    assert not passed, passed
    assert not received, "an answer reached a socket outside the sandbox"
    assert snapshot(outside) == before
    assert not Path("/tmp/m3bench-pwned").exists()
    assert grade_temp_dirs() <= temp_before, "grading left temporary directories behind"
    assert verdicts["infinite loop"].startswith("timeout")
    assert verdicts["os._exit(0) in call"].startswith("error")
    # and the grader still grades
    correct = grade(humaneval_0, f"```python\n{H}{CORRECT_BODY}```")
    assert correct.verdict == "pass", correct.detail


def test_core_attacks_in_the_rlimit_fallback(
    humaneval_0: TaskRecord,
    tmp_path: Path,
    listener: tuple[int, list[bytes]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("M3BENCH_SANDBOX", "rlimit")
    port, received = listener
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o700)
    (outside / "sentinel").write_text("original")
    (outside / "secret.txt").write_text(secrets.token_hex(8))
    before = snapshot(outside)
    subset = [
        "fork bomb", "os.system", "os._exit(0) at load", "always-equal object", "patch AssertionError",
        "forge a verdict on every fd", "find the harness in /proc", "huge output", "memory bomb",
    ]  # fmt: skip
    verdicts = run_corpus(humaneval_0, outside, port, {name: ATTACKS[name] for name in subset})
    # world-readable files stay readable in this mode (documented): that probe is not expected to fail
    verdicts.pop("probe/read grader")
    passed = {name: verdict for name, verdict in verdicts.items() if verdict.startswith("pass")}
    assert not passed, passed
    assert not received
    assert snapshot(outside) == before
    assert grade(humaneval_0, f"```python\n{H}{CORRECT_BODY}```").verdict == "pass"
