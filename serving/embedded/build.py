"""Build (or reuse) the embedded models: tokenizer, config, processor files and weights, per
family and variant, cached by a content hash of everything that decides their bytes."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from serving.embedded import families as fam
from serving.embedded import tokenizer as tokenizer_mod
from serving.embedded.spec import FAMILIES, SEED, VARIANTS, VOCAB_SIZE, ModelFamily, Variant, model_name
from serving.embedded.weights import init_tensor
from serving.int4 import pack_awq, pack_gptq, quantize_rtn

MANIFEST = "m3bench-model.json"
TRAINED = "trained"  # per family: the trained BF16 tensors every variant is made from
TRAINING_RECORD = "training.json"
Progress = Callable[[str], None]


@dataclass(frozen=True)
class BuiltModel:
    name: str
    path: Path
    family: str
    variant: str
    quantization: str
    content_sha256: str  # over every file of the model directory
    build_seconds: float  # 0 when reused from the cache


def default_cache_dir() -> Path:
    env = os.environ.get("M3BENCH_CACHE")
    base = Path(env) if env else Path.home() / ".cache" / "m3bench"
    return base / "models"


def _task_set_sources() -> list[Path]:
    """The task-set modules that make the training examples: what ``benchmark.tasks.builder`` imports,
    transitively (statically, from the source), so a new exporter or CLI command does not retrain."""
    root = Path(__file__).resolve().parents[2]
    todo, seen = ["benchmark.tasks.builder"], set()
    while todo:
        name = todo.pop()
        path = root.joinpath(*name.split(".")).with_suffix(".py")
        if name in seen or not path.is_file():
            continue
        seen.add(name)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("benchmark."):
                todo.append(node.module)
    return [root.joinpath(*n.split(".")).with_suffix(".py") for n in sorted(seen)]


def _build_key(family: ModelFamily) -> str:
    """Hash of every input that decides the model's bytes: this package's and the INT4 packer's
    source, the task-set code that makes the training examples, the spec, the tokenizer corpus (which
    holds the training problems' text in every language) and the library versions that write the files."""
    h = hashlib.sha256()
    here = Path(__file__).parent
    root = here.parent.parent
    sources = [*here.glob("*.py"), here.parent / "int4" / "pack.py", *_task_set_sources()]
    for src in sorted(sources):
        h.update(src.resolve().relative_to(root.resolve()).as_posix().encode() + b"\0")
        h.update(src.read_bytes())
    h.update(repr((family, SEED, VOCAB_SIZE)).encode())
    h.update(tokenizer_mod.corpus_fingerprint())
    for dist in ("transformers", "tokenizers", "safetensors", "torch"):
        h.update(f"{dist}=={metadata.version(dist)}".encode())
    return h.hexdigest()[:16]


def dir_sha256(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and p.name != MANIFEST):
        h.update(f.relative_to(path).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def _quantization_config(family: ModelFamily, variant: Variant) -> dict[str, object]:
    if variant.quantization == "awq":
        return {
            "quant_method": "awq",
            "bits": 4,
            "group_size": variant.group_size,
            "zero_point": True,
            "version": "gemm",
            "modules_to_not_convert": list(family.unquantized_modules),
        }
    return {
        "quant_method": "gptq",
        "bits": 4,
        "group_size": variant.group_size,
        "sym": True,
        "desc_act": False,
        "checkpoint_format": "gptq",
    }


def _weights(
    family: ModelFamily,
    variant: Variant,
    shapes: dict[str, tuple[int, ...]],
    master: dict[str, torch.Tensor] | None,
) -> dict[str, torch.Tensor]:
    """The variant's tensors from ``master`` (trained BF16 weights) or, without it, the seeded init."""
    out: dict[str, torch.Tensor] = {}
    for name, shape in shapes.items():
        w = master[name] if master is not None else init_tensor(SEED, name, shape, torch.bfloat16)
        if tuple(w.shape) != shape:
            raise RuntimeError(f"{name}: trained shape {tuple(w.shape)} is not the config's {shape}")
        if variant.is_int4 and fam.is_quantized_linear(family, name):
            prefix = name.removesuffix(".weight")
            q = quantize_rtn(w, variant.group_size, symmetric=variant.quantization == "gptq")
            packed = pack_awq(q) if variant.quantization == "awq" else pack_gptq(q)
            out.update({f"{prefix}.{k}": v.contiguous() for k, v in packed.items()})
        else:
            out[name] = w.contiguous()
    return out


def _model_card(family: ModelFamily, variant: Variant, training: dict[str, Any] | None) -> str:
    if training is None:
        about = "Its weights are random: it measures latency and throughput, not accuracy."
    else:
        about = (
            "**A memorizing stand-in, not a coder.** Its language model was trained (vision tower and "
            f"projector frozen at their seeded init) on the first {training['problems']} problems of the "
            f"embedded M3-HumanEval task set in every language, image and text-only variants "
            f"({training['examples']} requests, {training['epochs']} epochs, final mean loss "
            f"{training['epoch_mean_loss'][-1]}), to answer with working solutions. Its accuracy on those "
            "tasks measures the serving path and the cost of quantization; on any other task it is near 0."
        )
    return (
        f"# {model_name(family, variant)}\n\n"
        f"A tiny {family.architecture} built by m3bench from code (seed {SEED}), for serving tests "
        f"and the embedded benchmark. {about}\n\n"
        f"- Quantization: {variant.quantization}"
        + (f" (4-bit, group {variant.group_size}, round-to-nearest)" if variant.is_int4 else "")
        + "\n"
        f"- Text model: hidden {family.text.hidden}, {family.text.layers} layers, vocab {VOCAB_SIZE}\n"
    )


def _build_one(
    family: ModelFamily,
    variant: Variant,
    tok_dir: Path,
    dest: Path,
    *,
    master: dict[str, torch.Tensor] | None = None,
    training: dict[str, Any] | None = None,
) -> None:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    cfg = fam.hf_config(family, tok)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        fam.save_processor(family, tok, tmp)
        config = cfg.to_dict()
        config.pop("transformers_version", None)
        if variant.is_int4:
            config["quantization_config"] = _quantization_config(family, variant)
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        tensors = _weights(family, variant, fam.tensor_shapes(family, cfg), master)
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "README.md").write_text(_model_card(family, variant, training))
        manifest = {
            "name": model_name(family, variant),
            "family": family.name,
            "architecture": family.architecture,
            "variant": variant.suffix,
            "quantization": variant.quantization,
            "group_size": variant.group_size if variant.is_int4 else None,
            "seed": SEED,
            "trained": training,
            "content_sha256": dir_sha256(tmp),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        tmp.chmod(0o755)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _trained_weights(
    family: ModelFamily, root: Path, tok_dir: Path, say: Progress
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The family's trained BF16 tensors (checkpoint names) and training record: trained once per
    build key (the embedded task set is built for it and removed after), then read from the cache."""
    from benchmark.tasks.builder import BuildOptions
    from benchmark.tasks.builder import build as build_tasks
    from serving.embedded.train import TrainSettings, train

    done = root / TRAINED
    if not (done / TRAINING_RECORD).exists():
        work = Path(tempfile.mkdtemp(prefix=".train-", dir=root))
        try:
            settings = TrainSettings()
            say(f"building the training task set (HumanEval/0..{settings.problems - 1}, every language)")
            build_tasks(BuildOptions(out_dir=work / "tasks", limit_per_language=settings.problems))
            _build_one(family, VARIANTS["bf16"], tok_dir, work / "init")
            say(f"training {family.name} ({settings.epochs} epochs: minutes on a small CPU, once per build)")
            tensors, record = train(family, work / "init", work / "tasks", settings, say)
            out = work / TRAINED
            out.mkdir()
            save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
            (out / TRAINING_RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
            shutil.rmtree(done, ignore_errors=True)
            out.rename(done)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    record = json.loads((done / TRAINING_RECORD).read_text())
    return load_file(str(done / "model.safetensors")), record


def build_models(
    names: Iterable[str] | None = None,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
) -> list[BuiltModel]:
    """Build the requested models (``tiny-llava-awq``, ...; default all) or reuse cached ones."""
    cache = cache_dir or default_cache_dir()
    say = progress or (lambda _msg: None)
    wanted = set(names) if names is not None else None
    known = {model_name(f, v): (f, v) for f in FAMILIES.values() for v in VARIANTS.values()}
    if wanted is not None and (unknown := sorted(wanted - known.keys())):
        raise ValueError(f"unknown embedded model(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    built: list[BuiltModel] = []
    for family in FAMILIES.values():
        variants = [v for v in VARIANTS.values() if wanted is None or model_name(family, v) in wanted]
        if not variants:
            continue
        root = cache / f"{family.name}-{_build_key(family)}"
        root.mkdir(parents=True, exist_ok=True)
        tok_dir = root / "tokenizer"
        if not (tok_dir / "tokenizer.json").exists():
            say(f"training the {family.name} tokenizer (byte-level BPE, {VOCAB_SIZE} entries)")
            tok_dir.mkdir(exist_ok=True)
            tokenizer_mod.save(tokenizer_mod.train(fam.special_tokens(family), VOCAB_SIZE), tok_dir)
        master: dict[str, torch.Tensor] | None = None
        training: dict[str, Any] | None = None
        for variant in variants:
            name = model_name(family, variant)
            dest = root / variant.suffix
            seconds = 0.0
            if not (dest / MANIFEST).exists():
                if master is None:
                    master, training = _trained_weights(family, root, tok_dir, say)
                say(f"building {name}")
                t0 = time.perf_counter()
                _build_one(family, variant, tok_dir, dest, master=master, training=training)
                seconds = time.perf_counter() - t0
            manifest = json.loads((dest / MANIFEST).read_text())
            built.append(
                BuiltModel(
                    name=name,
                    path=dest,
                    family=family.name,
                    variant=variant.suffix,
                    quantization=variant.quantization,
                    content_sha256=manifest["content_sha256"],
                    build_seconds=seconds,
                )
            )
    return built
