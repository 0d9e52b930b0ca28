"""Teach a tiny embedded VLM to answer the embedded task set: a memorizing stand-in, not a coder.

With random weights every embedded model scores 0 %, so the accuracy half of the benchmark shows
nothing. This step trains the language model of a freshly initialised model (vision tower and
projector frozen, as initialised) on the first :data:`TRAIN_PROBLEMS` problems of the embedded task set
in every language, image and text-only variants alike: the request is exactly what the load generator
sends (the chat template, the rendered image through the model's own processor), the target is a
working solution in a fenced block and the end-of-turn token. The served answers are then produced by
the real vision + language path and graded for real; what they measure is the serving path and the cost
of quantization, not model skill.

Deterministic: fixed seeds, fixed example order, fp32 on the CPU. The BF16 and INT4 variants are all
made from the trained weights, so BF16 vs INT4 accuracy differences are quantization effects.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from serving.embedded import families as fam
from serving.embedded.spec import SEED, ModelFamily

Progress = Callable[[str], None]

TRAIN_PROBLEMS = 4  # HumanEval/0 .. /3 in every language, image and text-only: 80 requests


@dataclass(frozen=True)
class TrainSettings:
    problems: int = TRAIN_PROBLEMS
    epochs: int = 16
    learning_rate: float = 1e-3
    lead_tokens: int = 12  # the answer's first tokens (fence, indent, where problems part), weighted
    lead_weight: float = 5.0
    warmup_steps: int = 20
    seed: int = SEED
    threads: int | None = None  # None: every core


def answer_text(record: dict[str, Any]) -> str:
    """The memorized answer: the canonical function body, fenced (HumanEval's completion convention,
    which the grader accepts: a block that starts indented completes the prompt's function). Short
    answers are cheap to learn and to serve; the whole solution where the body cannot be cut out."""
    solution = record["canonical_solution"] or ""
    prelude = (record.get("grading") or {}).get("prelude") or ""
    code = solution[len(prelude) :] if prelude and solution.startswith(prelude) else solution
    return f"```python\n{code.rstrip()}\n```"


def _messages(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The user turn as the load generator sends it: images first, then the prompt."""
    if not record["images"]:
        return [{"role": "user", "content": record["prompt"]}]
    parts: list[dict[str, Any]] = [{"type": "image"} for _ in record["images"]]
    parts.append({"type": "text", "text": record["prompt"]})
    return [{"role": "user", "content": parts}]


def _is_llava(family: ModelFamily) -> bool:
    return family.architecture.startswith("Llava")


def training_examples(
    family: ModelFamily, processor: Any, task_dir: Path, problems: int
) -> list[dict[str, torch.Tensor]]:
    """One example per task record of the first ``problems`` problems: model inputs and labels
    (-100 on the prompt, so only the answer and its end-of-turn token are learned)."""
    from PIL import Image

    records = [
        json.loads(line) for line in (task_dir / "tasks.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    wanted = {f"HumanEval/{i}" for i in range(problems)}
    chosen = [r for r in records if r["source"]["source_id"] in wanted and r["canonical_solution"]]
    if not chosen:
        raise RuntimeError(f"no training records for HumanEval/0..{problems - 1} in {task_dir}")
    tokenizer = processor.tokenizer
    examples = []
    for record in chosen:
        prompt = processor.apply_chat_template(_messages(record), add_generation_prompt=True, tokenize=False)
        images = [Image.open(task_dir / image["path"]).convert("RGB") for image in record["images"]] or None
        encoded = processor(text=prompt, images=images, return_tensors="pt", add_special_tokens=False)
        # LLaVA's template writes "ASSISTANT: {answer}</s>": the reply starts with a space.
        reply = (" " if _is_llava(family) else "") + answer_text(record)
        target = tokenizer(reply, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        prompt_ids = encoded["input_ids"]
        ids = torch.cat([prompt_ids, torch.tensor([target])], dim=1)
        labels = torch.full_like(ids, -100)
        labels[0, prompt_ids.shape[1] :] = ids[0, prompt_ids.shape[1] :]
        example = {k: v for k, v in encoded.items() if k not in ("input_ids", "attention_mask")}
        for key, value in example.items():  # per-token side inputs (Qwen's mm_token_type_ids): 0 = text
            if value.dim() == 2 and value.shape == prompt_ids.shape:
                example[key] = torch.cat([value, value.new_zeros((1, len(target)))], dim=1)
        example.update(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels)
        examples.append(example)
    return examples


def _freeze_vision(family: ModelFamily, model: Any) -> None:
    """The vision tower and projector keep their seeded init; the whole language model learns."""
    for name, parameter in model.named_parameters():
        classic = fam.checkpoint_name(family, name)
        parameter.requires_grad_(not any(classic.startswith(m) for m in family.unquantized_modules))


def _positions(family: ModelFamily, model: Any, example: dict[str, torch.Tensor]) -> torch.Tensor:
    """Rotary positions of the whole example (Qwen2-VL: its 3-D M-RoPE ids), as one forward would use."""
    ids = example["input_ids"]
    if _is_llava(family):
        return torch.arange(ids.shape[1]).unsqueeze(0)
    positions: torch.Tensor | None = model.model.compute_3d_position_ids(
        input_ids=ids,
        image_grid_thw=example.get("image_grid_thw"),
        video_grid_thw=None,
        inputs_embeds=model.model.get_input_embeddings()(ids),
        attention_mask=example["attention_mask"],
        past_key_values=None,
        mm_token_type_ids=example.get("mm_token_type_ids"),
    )
    if positions is None:  # no image: the three M-RoPE axes all count text positions
        return torch.arange(ids.shape[1]).view(1, 1, -1).expand(3, 1, -1)
    return positions


def _answer_logits(
    family: ModelFamily, model: Any, example: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits that predict each answer token, and those tokens.

    The prompt (image included) runs without gradients into a KV cache, with the current weights; only
    the answer tokens (and the prompt's last, which predicts the first) run with gradients, so a step
    costs about a forward pass of the prompt plus a training pass of the short answer. The split
    reproduces the whole-sequence forward to float rounding (tests/unit/test_embedded_train.py).
    """
    labels = example["labels"][0]
    cut = int((labels != -100).nonzero()[0]) - 1
    ids = example["input_ids"]
    positions = _positions(family, model, example)
    side = {k: v for k, v in example.items() if k not in ("input_ids", "attention_mask", "labels")}
    side = {k: (v[:, :cut] if v.dim() == 2 and v.shape == ids.shape else v) for k, v in side.items()}
    with torch.no_grad():
        prefix = model.model(
            input_ids=ids[:, :cut], position_ids=positions[..., :cut], use_cache=True, **side
        )
    hidden = model.model(
        input_ids=ids[:, cut:],
        position_ids=positions[..., cut:],
        past_key_values=prefix.past_key_values,
        use_cache=True,
    ).last_hidden_state[0]
    logits = model.lm_head(hidden[:-1]).float()  # hidden[i] predicts token cut + i + 1
    return logits, labels[cut + 1 :]


def _answer_loss(
    family: ModelFamily,
    model: Any,
    example: dict[str, torch.Tensor],
    lead: slice = slice(0),
    lead_weight: float = 1.0,
) -> torch.Tensor:
    """Cross-entropy over the answer tokens only, the ``lead`` tokens weighted ``lead_weight``: the first
    tokens, where the problems' answers part, are where the model must recognise the problem; once they
    are right, the rest follows from the answer itself. (Weighting only the parting tokens, 4 at 20x, left
    the rest under-trained: 24 of 80 answers right against 70-76.)"""
    logits, targets = _answer_logits(family, model, example)
    losses = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    weights = torch.ones_like(losses)
    weights[lead] = lead_weight
    return (losses * weights).sum() / weights.sum()


def _answers_part(examples: list[dict[str, torch.Tensor]]) -> int:
    """How many answer tokens every example's answer shares (the fence and indent): where they part."""
    answers = {tuple(e["labels"][0][e["labels"][0] != -100].tolist()) for e in examples}
    if len(answers) < 2:
        return 0  # one answer for all: nothing to tell apart
    shared = 0
    while all(shared < len(a) for a in answers) and len({a[shared] for a in answers}) == 1:
        shared += 1
    return shared


def _margin(family: ModelFamily, model: Any, example: dict[str, torch.Tensor]) -> float:
    """The smallest logit lead of the right answer token over the best other one, over the answer:
    negative when greedy decoding would go wrong, small when serving's rounding could flip it."""
    with torch.no_grad():
        logits, targets = _answer_logits(family, model, example)
    right = logits.gather(1, targets[:, None]).squeeze(1)
    others = logits.scatter(1, targets[:, None], float("-inf")).max(dim=1).values
    return float((right - others).min())


def train(
    family: ModelFamily,
    init_dir: Path,
    task_dir: Path,
    settings: TrainSettings | None = None,
    progress: Progress | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Train the model in ``init_dir`` (a built BF16 model) on ``task_dir``; return its tensors under
    their checkpoint names in BF16, and a training record (losses, seconds, settings)."""
    import transformers

    cfg = settings or TrainSettings()
    say = progress or (lambda _m: None)
    threads_before = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    try:
        processor = transformers.AutoProcessor.from_pretrained(str(init_dir))  # type: ignore[no-untyped-call]
        model = getattr(transformers, family.architecture).from_pretrained(str(init_dir), dtype=torch.float32)
        examples = training_examples(family, processor, task_dir, cfg.problems)
        _freeze_vision(family, model)
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=cfg.learning_rate, weight_decay=0.0)
        total = cfg.epochs * len(examples)

        def rate(step: int) -> float:
            if step < cfg.warmup_steps:
                return (step + 1) / cfg.warmup_steps
            return 0.5 * (
                1 + math.cos(math.pi * (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
            )

        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, rate)
        order = random.Random(cfg.seed)
        model.train()
        started = time.perf_counter()

        part = _answers_part(examples)
        lead = slice(0, cfg.lead_tokens)

        def step(index: int) -> float:
            loss = _answer_loss(family, model, examples[index], lead, cfg.lead_weight)
            loss.backward()  # type: ignore[no-untyped-call]
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return float(loss.detach())

        losses: list[float] = []
        steps = 0
        for epoch in range(cfg.epochs):
            indices = list(range(len(examples)))
            order.shuffle(indices)
            epoch_loss = 0.0
            for index in indices:
                epoch_loss += step(index)
                schedule.step()
                steps += 1
            losses.append(epoch_loss / len(examples))
            say(
                f"training {family.name}: epoch {epoch + 1}/{cfg.epochs}, mean loss {losses[-1]:.4f}, "
                f"{time.perf_counter() - started:.0f} s"
            )
        margins = sorted(_margin(family, model, example) for example in examples)
        wrong = sum(m < 0 for m in margins)
        say(
            f"training {family.name}: {len(examples) - wrong} of {len(examples)} answers right token for "
            f"token (fp32, teacher-forced); smallest lead {margins[0]:.2f} logits"
        )
        tensors = {
            fam.checkpoint_name(family, name): value.detach().to(torch.bfloat16).contiguous()
            for name, value in model.state_dict().items()
        }
    finally:
        torch.set_num_threads(threads_before)
    record = {
        "examples": len(examples),
        "problems": cfg.problems,
        "epochs": cfg.epochs,
        "steps": steps,
        "learning_rate": cfg.learning_rate,
        "lead_tokens": cfg.lead_tokens,
        "lead_weight": cfg.lead_weight,
        "seed": cfg.seed,
        "epoch_mean_loss": [round(x, 5) for x in losses],
        "answers_part_at_token": part,
        "answers_right": len(examples) - wrong,
        "margin_quantiles": [round(margins[int(q * (len(margins) - 1))], 3) for q in (0, 0.1, 0.5)],
        "seconds": round(time.perf_counter() - started, 1),
    }
    return tensors, record
