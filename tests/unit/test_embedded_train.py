"""The embedded models' training step: its targets pass the grader, its examples are exactly the
served request plus the answer, and a short run learns while the frozen parts stay at their init."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from benchmark.grading import grade
from benchmark.tasks.builder import BuildOptions, build
from benchmark.tasks.taskset import read_tasks
from serving.embedded import families as fam
from serving.embedded.build import _build_one
from serving.embedded.spec import FAMILIES, VARIANTS
from serving.embedded.train import (
    TRAIN_PROBLEMS,
    TrainSettings,
    _answer_loss,
    _answers_part,
    answer_text,
    train,
    training_examples,
)


@pytest.fixture(scope="module")
def tasks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tasks") / "set"
    build(BuildOptions(out_dir=out, languages=("en", "ja"), limit_per_language=TRAIN_PROBLEMS))
    return out


def test_answers_part_after_the_shared_fence(tasks: Path, tmp_path: Path) -> None:
    import transformers

    family = FAMILIES["llava"]
    init = _init_model("llava", tmp_path)
    processor = transformers.AutoProcessor.from_pretrained(str(init))
    examples = training_examples(family, processor, tasks, problems=2)
    part = _answers_part(examples)
    tokenizer = processor.tokenizer
    shared = tokenizer.decode(examples[0]["labels"][0][examples[0]["labels"][0] != -100][:part])
    assert shared.strip() == "```python"  # the fence and the indent, not a token of a body


def test_every_memorized_answer_passes_the_grader(tasks: Path) -> None:
    records = read_tasks(tasks)
    assert len(records) == 2 * 2 * TRAIN_PROBLEMS
    for record in records:
        answer = answer_text(record.model_dump())
        assert answer.startswith("```python\n    ")
        assert answer.endswith("\n```")
        result = grade(record, answer)
        assert result.verdict == "pass", (record.id, result.detail)


def _init_model(family_key: str, tmp_path: Path) -> Path:
    from serving.embedded import tokenizer as tokenizer_mod

    family = FAMILIES[family_key]
    tok_dir = tmp_path / "tokenizer"
    tok_dir.mkdir()
    tokenizer_mod.save(tokenizer_mod.train(fam.special_tokens(family), 4096), tok_dir)
    _build_one(family, VARIANTS["bf16"], tok_dir, tmp_path / "init")
    return tmp_path / "init"


def _one_problem(tasks: Path, tmp_path: Path) -> Path:
    """HumanEval/0 in English only: an image and a text-only request."""
    subset = tmp_path / "subset"
    subset.mkdir()
    (subset / "images").symlink_to(tasks / "images")
    lines = [
        line for line in (tasks / "tasks.jsonl").read_text().splitlines() if '"m3-humaneval/0/en/' in line
    ]
    assert len(lines) == 2
    (subset / "tasks.jsonl").write_text("\n".join(lines) + "\n")
    return subset


@pytest.mark.parametrize("family_key", ["llava", "qwen2vl"])
def test_examples_are_the_served_prompt_then_the_answer(family_key: str, tasks: Path, tmp_path: Path) -> None:
    import transformers

    family = FAMILIES[family_key]
    init = _init_model(family_key, tmp_path)
    processor = transformers.AutoProcessor.from_pretrained(str(init))
    examples = training_examples(family, processor, _one_problem(tasks, tmp_path), problems=1)
    assert len(examples) == 2
    image = next(e for e in examples if "pixel_values" in e)
    ids, labels = image["input_ids"][0], image["labels"][0]
    answer = labels != -100
    first = int(answer.nonzero()[0])
    assert answer[first:].all()
    assert not answer[:first].any()
    tokenizer = processor.tokenizer
    assert int(ids[-1]) == tokenizer.eos_token_id
    reply = tokenizer.decode(ids[first:-1])
    assert reply.strip().startswith("```python\n    for idx, elem in enumerate(numbers):")
    image_token = tokenizer.convert_tokens_to_ids("<image>" if family_key == "llava" else "<|image_pad|>")
    assert int((ids[:first] == image_token).sum()) >= 16  # the image's tokens are in the prompt


def test_a_short_run_learns_and_leaves_frozen_weights_alone(tasks: Path, tmp_path: Path) -> None:
    family = FAMILIES["llava"]
    init = _init_model("llava", tmp_path)
    subset = _one_problem(tasks, tmp_path)
    settings = TrainSettings(problems=1, epochs=6, warmup_steps=2, learning_rate=2e-3)
    tensors, record = train(family, init, subset, settings)
    losses = record["epoch_mean_loss"]
    assert record["steps"] == 12
    assert len(losses) == 6
    assert record["answers_part_at_token"] == 0  # one problem: one answer, nothing to tell apart
    assert 0 <= record["answers_right"] <= 2
    assert losses[-1] < 0.5 * losses[0], losses
    before = load_file(str(init / "model.safetensors"))
    assert set(tensors) == set(before)
    for name, value in tensors.items():
        unchanged = torch.equal(value, before[name])
        frozen = name.startswith(("vision_tower.", "multi_modal_projector."))
        assert unchanged == frozen, name
    json.dumps(record)  # the record is what the manifest stores


@pytest.mark.parametrize("family_key", ["llava", "qwen2vl"])
def test_the_cached_prompt_split_is_the_whole_forward(family_key: str, tasks: Path, tmp_path: Path) -> None:
    """The training loss runs the prompt into a KV cache without gradients and the answer after it;
    that must be the same computation as one forward pass over the whole example."""
    import transformers

    family = FAMILIES[family_key]
    init = _init_model(family_key, tmp_path)
    processor = transformers.AutoProcessor.from_pretrained(str(init))
    model = getattr(transformers, family.architecture).from_pretrained(str(init), dtype=torch.float32)
    for example in training_examples(family, processor, _one_problem(tasks, tmp_path), problems=1):
        labels = example["labels"][0]
        with torch.no_grad():
            split = _answer_loss(family, model, example)
            logits = model(**{k: v for k, v in example.items() if k != "labels"}).logits[0]
        start = int((labels != -100).nonzero()[0])
        whole = torch.nn.functional.cross_entropy(logits[start - 1 : -1].float(), labels[start:])
        assert torch.allclose(split, whole, rtol=1e-4), (float(split), float(whole))
