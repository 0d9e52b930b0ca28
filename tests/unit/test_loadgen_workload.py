"""Request bodies from task records, task draws, reconciling worker files."""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path

import pytest

from loadgen.calibration.tasks import write_calibration_tasks
from loadgen.merge import reconcile
from loadgen.profile import LoadgenError, RequestOptions, Sampling
from loadgen.workload import Workload


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_calibration_tasks(
        tmp_path_factory.mktemp("tasks"), per_language=3, languages=("en", "zh", "ar")
    )


def test_body_is_a_streaming_chat_request_with_the_image(task_dir: Path) -> None:
    workload = Workload(task_dir, ["a", "b"], Sampling(), RequestOptions(max_tokens=7, system_prompt="sys"))
    index = next(i for i, t in enumerate(workload.tasks) if t.natural_language == "zh")
    body = json.loads(workload.body(index, "b"))
    assert body["model"] == "b"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 7
    assert body["temperature"] == 0.0
    system, user = body["messages"]
    assert system == {"role": "system", "content": "sys"}
    image, text = user["content"]
    assert text == {"type": "text", "text": workload.tasks[index].prompt}
    prefix = "data:image/png;base64,"
    assert image["image_url"]["url"].startswith(prefix)
    png = base64.b64decode(image["image_url"]["url"][len(prefix) :])
    assert png.startswith(b"\x89PNG")


def test_draws_are_seeded_and_balanced_by_language(task_dir: Path) -> None:
    workload = Workload(task_dir, ["a", "b"], Sampling(model_weights={"a": 3, "b": 1}), RequestOptions())
    draws = [workload.draw(random.Random(5)) for _ in range(3)]
    assert draws[0] == draws[1] == draws[2]
    rng = random.Random(1)
    many = [workload.draw(rng) for _ in range(4000)]
    share_a = sum(model == "a" for model, _ in many) / len(many)
    assert share_a == pytest.approx(0.75, abs=0.03)
    languages = [workload.tasks[i].natural_language for _, i in many]
    for language in ("en", "zh", "ar"):
        assert languages.count(language) / len(many) == pytest.approx(1 / 3, abs=0.03)
    rng_a, rng_b = random.Random(2), random.Random(2)
    workload.draw(rng_a)
    for _ in range(3):
        rng_b.random()
    assert rng_a.random() == rng_b.random()  # exactly three draws, whatever is chosen


def test_cycle_asks_every_pair_once_per_lap_in_a_seeded_order(task_dir: Path) -> None:
    workload = Workload(task_dir, ["a", "b"], Sampling(by="cycle"), RequestOptions(), seed=7)
    pairs = {(model, index) for model in ("a", "b") for index in range(len(workload.tasks))}
    assert workload.lap == len(pairs) == 18
    rng = random.Random(3)
    first = [workload.draw(rng, slot) for slot in range(workload.lap)]
    assert set(first) == pairs  # each (model, task) exactly once
    assert [workload.draw(rng, slot) for slot in range(workload.lap, 2 * workload.lap)] == first
    assert [workload.draw(rng, slot) for slot in range(5, 5 + workload.lap)] != first
    assert {workload.draw(rng, slot) for slot in range(5, 5 + workload.lap)} == pairs  # any window
    # Workers of a closed loop interleave the slots (position + workers * k): together, one lap.
    shares = {p: range(p, workload.lap, 3) for p in range(3)}
    assert {workload.draw(rng, s) for slots in shares.values() for s in slots} == pairs
    assert first[0][1] == workload.draw(random.Random(99), 0)[1]  # the slot decides, not the RNG
    same = Workload(task_dir, ["a", "b"], Sampling(by="cycle"), RequestOptions(), seed=7)
    other = Workload(task_dir, ["a", "b"], Sampling(by="cycle"), RequestOptions(), seed=8)
    order = [workload.draw(rng, slot) for slot in range(workload.lap)]
    assert [same.draw(rng, slot) for slot in range(workload.lap)] == order
    assert [other.draw(rng, slot) for slot in range(workload.lap)] != order
    rng_a, rng_b = random.Random(2), random.Random(2)
    workload.draw(rng_a, 4)
    for _ in range(3):
        rng_b.random()
    assert rng_a.random() == rng_b.random()  # still exactly three draws (open loop stays in step)
    with pytest.raises(ValueError, match="model_weights do not apply"):
        Sampling(by="cycle", model_weights={"a": 1.0})


def test_filters_and_their_errors(task_dir: Path) -> None:
    only = Workload(task_dir, ["a"], Sampling(languages=["ar"]), RequestOptions())
    assert {t.natural_language for t in only.tasks} == {"ar"}
    with pytest.raises(LoadgenError, match="no task"):
        Workload(task_dir, ["a"], Sampling(languages=["xx"]), RequestOptions())
    with pytest.raises(LoadgenError, match="cannot send images"):
        Workload(task_dir, ["a"], Sampling(), RequestOptions(api="completions"))
    with pytest.raises(LoadgenError, match="does not exist"):
        Workload(task_dir / "nope", ["a"], Sampling(), RequestOptions())


def test_reconcile_adds_missing_records_with_grades_and_drops_duplicates(tmp_path: Path) -> None:
    def row(rid: str, grade: str = "ungraded") -> str:
        return json.dumps({"request_id": rid, "status": "ok", "grade": grade, "grade_detail": ""})

    (tmp_path / "records").mkdir()
    (tmp_path / "records.jsonl").write_text(row("a", "pass") + "\n" + row("a", "pass") + "\n")
    (tmp_path / "records" / "w0.jsonl").write_text(row("a") + "\n" + row("b") + "\n" + row("c") + "\n")
    (tmp_path / "records" / "w0.grades.jsonl").write_text(
        json.dumps({"request_id": "b", "grade": "fail", "grade_detail": "x", "grade_duration_s": 0.1}) + "\n"
    )
    assert reconcile(tmp_path) == 2
    rows = {
        r["request_id"]: r for r in map(json.loads, (tmp_path / "records.jsonl").read_text().splitlines())
    }
    assert len((tmp_path / "records.jsonl").read_text().splitlines()) == 3
    assert (rows["a"]["grade"], rows["b"]["grade"], rows["c"]["grade"]) == ("pass", "fail", "ungraded")
    assert rows["c"]["grade_detail"] == "live grading did not finish"


def test_spread_output_limits_are_drawn_per_request_and_spliced_into_the_body(task_dir: Path) -> None:
    options = RequestOptions(max_tokens=64, max_tokens_min=32, extra_body={"ignore_eos": True})
    workload = Workload(task_dir, ["a"], Sampling(), options)
    rng = random.Random(3)
    limits = []
    for _ in range(400):
        model, index = workload.draw(rng)
        body = json.loads(workload.body(index, model, workload.length(rng)))
        assert body["ignore_eos"] is True
        assert body["model"] == "a"
        limits.append(body["max_tokens"])
    assert min(limits) == 32
    assert max(limits) == 64
    assert 44 <= sum(limits) / len(limits) <= 52  # uniform: mean 48
    assert workload.length(random.Random(9)) == workload.length(random.Random(9))  # seeded
    fixed = Workload(task_dir, ["a"], Sampling(), RequestOptions(max_tokens=64))
    assert fixed.length(rng) is None  # no spread: the body keeps its own limit
    assert json.loads(fixed.body(0, "a", fixed.length(rng)))["max_tokens"] == 64
    with pytest.raises(ValueError, match="max_tokens_min"):
        RequestOptions(max_tokens=16, max_tokens_min=32)
    with pytest.raises(ValueError, match="max_tokens_min"):
        RequestOptions(max_tokens_min=8)
