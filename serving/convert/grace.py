"""``convert_grace``: rewrite GRACE's AWQ-packed LLaVA-1.5 release into a checkpoint vLLM serves.

Two passes. The first reads only config files and safetensors headers and checks every tensor's name,
dtype and shape against the config and ``awq_quantized_modules.json`` (and that none is missing), so a
malformed source fails in seconds. The second streams tensors, one at a time, under their llava-hf
names into output shards of at most ``max_shard_bytes`` and checks their values (finite scales and
weights), so memory stays near the largest tensor whatever the shard sizes. The packed AWQ tensors
are copied bit for bit: GRACE stores AutoAWQ's ``WQLinear_GEMM`` layout, which is the layout vLLM's
``awq`` method loads. Everything is written into a temporary directory beside ``dst`` and renamed
into place at the end.
"""

from __future__ import annotations

import json
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from serving.convert import grace_hf as hf
from serving.convert.grace_layout import (
    AWQ_SUFFIXES,
    CLIP_PREFIX,
    CLIP_TOWER_KEYS,
    FLOAT_DTYPES,
    IGNORED_SUFFIXES,
    AwqMeta,
    ConversionError,
    TextSpec,
    check_awq_tensor,
    read_awq_meta,
    read_headers,
    source_name,
    target_name,
)
from serving.convert.safetensors_io import OutTensor, TensorInfo, read_tensor, write_file
from serving.int4.checkpoint import CheckpointError, read_config

Progress = Callable[[str], None]
DEFAULT_MAX_SHARD_BYTES = 2 * 1024**3
MANIFEST = "m3bench-model.json"
_COPIED_FILES = ("generation_config.json",)


@dataclass
class ConversionReport:
    src: str
    dst: str
    vision_tower: str
    vision_weights: str  # "checkpoint" or the CLIP directory they came from
    group_size: int
    quantized_linears: int
    tensors: int
    ignored: list[str]
    symmetric_zero_points: bool  # every packed zero point is 8 (GRACE's symmetric LSQ mapping)
    vocab_size: tuple[int, int]  # (source, served): grown to hold <image> as a real token id
    image_token_id: int
    output_shards: int
    output_bytes: int
    seconds: float = 0.0
    peak_rss_bytes: int = 0


@dataclass(frozen=True)
class VocabGrowth:
    """Rows appended to the embedding and the LM head so that ``<image>`` (LLaVA's -200, outside the
    vocabulary) becomes a real id: vLLM 0.29 crashes its engine computing prompt logprobs of a prompt
    holding an out-of-vocabulary token. New embedding rows are zeros (image positions are overwritten
    by image features); new head rows copy the ``<unk>`` row, the token a trained LLaMA ranks lowest,
    so the head's softmax over real tokens moves by a factor 1 / (1 + p(<unk>))."""

    rows: int
    unk_id: int


_GROWN = ("language_model.model.embed_tokens.weight", "language_model.lm_head.weight")


@dataclass(frozen=True)
class _Planned:
    info: TensorInfo
    target: str
    grow: VocabGrowth | None = None


def _plan(
    headers: dict[str, TensorInfo],
    clip: dict[str, TensorInfo],
    text: TextSpec,
    meta: AwqMeta,
    expected: dict[str, tuple[int, ...]],
    *,
    growth: VocabGrowth,
) -> tuple[list[_Planned], list[str], bool]:
    """Check every source tensor and give it its target name; returns (plan, ignored, tower from CLIP)."""
    linears = text.linears()
    plan: list[_Planned] = []
    ignored: list[str] = []
    for key, info in headers.items():
        if key.endswith(IGNORED_SUFFIXES):
            ignored.append(key)
            continue
        prefix, _, suffix = key.rpartition(".")
        if prefix in linears:
            if suffix not in AWQ_SUFFIXES:
                raise ConversionError(
                    f"{key}: {prefix} is listed as AWQ-quantized, so only "
                    f"{'/'.join(AWQ_SUFFIXES)} are expected, not .{suffix}"
                )
            check_awq_tensor(info, *linears[prefix], meta)
            plan.append(_Planned(info, target_name(key) or key))
            continue
        target = target_name(key)
        if target is None or target not in expected:
            raise ConversionError(
                f"{key}: unexpected tensor (no counterpart in LlavaForConditionalGeneration)"
            )
        if target in _GROWN and growth.rows:
            rows, *rest = expected[target]
            plan.append(_check_dense(info, target, (rows - growth.rows, *rest), growth))
        else:
            plan.append(_check_dense(info, target, expected[target]))
    from_clip = not any(p.target.startswith(CLIP_PREFIX[1]) for p in plan)
    if from_clip and not clip:
        raise ConversionError(
            "the checkpoint holds no vision tower weights (model.vision_tower.vision_tower.vision_model.*); "
            f"pass --vision-tower PATH to a local {hf.OPENAI_CLIP_336} with .safetensors weights"
        )
    if from_clip:
        for key, info in clip.items():
            if key.startswith(CLIP_TOWER_KEYS) and not key.endswith(IGNORED_SUFFIXES):
                target = CLIP_PREFIX[1] + key.removeprefix(CLIP_PREFIX[0])
                if target not in expected:
                    raise ConversionError(f"{info.file.parent}: {key} has no counterpart in the vision tower")
                plan.append(_check_dense(info, target, expected[target]))
    produced = {p.target for p in plan}
    for name in linears:
        for suffix in AWQ_SUFFIXES:
            if f"{name}.{suffix}" not in headers:
                raise ConversionError(f"{name}.{suffix}: missing from the checkpoint")
    missing = [t for t in expected if t not in produced and not _is_quantized_weight(t, linears)]
    if missing:
        first = source_name(missing[0], from_clip)
        raise ConversionError(f"{first}: missing from the checkpoint ({len(missing)} tensors missing)")
    return plan, ignored, from_clip


def _is_quantized_weight(target: str, linears: dict[str, tuple[int, int]]) -> bool:
    source = "model." + target.removeprefix("language_model.model.")
    return source.endswith(".weight") and source.removesuffix(".weight") in linears


def _check_dense(
    info: TensorInfo, target: str, shape: tuple[int, ...], grow: VocabGrowth | None = None
) -> _Planned:
    if info.shape != shape:
        raise ConversionError(f"{info.key}: shape {list(info.shape)}, the config needs {list(shape)}")
    if info.dtype not in FLOAT_DTYPES:
        raise ConversionError(f"{info.key}: dtype {info.dtype} is not a float type")
    return _Planned(info, target, grow)


def _grown(t: torch.Tensor, target: str, grow: VocabGrowth) -> torch.Tensor:
    if target.endswith("embed_tokens.weight"):
        extra = torch.zeros(grow.rows, t.shape[1], dtype=t.dtype)
    else:
        extra = t[grow.unk_id : grow.unk_id + 1].expand(grow.rows, -1)
    return torch.cat([t, extra])


def _clip_headers(vision: hf.VisionSource) -> dict[str, TensorInfo]:
    if vision.weights_dir is None:
        return {}
    files = sorted(vision.weights_dir.glob("*.safetensors"))
    return read_headers(files) if files else {}


def _shard_groups(plan: list[_Planned], max_bytes: int) -> list[list[_Planned]]:
    groups: list[list[_Planned]] = [[]]
    size = 0
    for p in plan:
        if groups[-1] and size + p.info.nbytes > max_bytes:
            groups.append([])
            size = 0
        groups[-1].append(p)
        size += p.info.nbytes
    return groups


def _load_checked(p: _Planned, stats: dict[str, int]) -> torch.Tensor:
    try:
        t = read_tensor(p.info)
    except CheckpointError as e:
        raise ConversionError(str(e)) from e
    if p.info.dtype in FLOAT_DTYPES and not bool(torch.isfinite(t).all()):
        raise ConversionError(f"{p.info.key}: holds NaN or infinite values")
    if p.info.key.endswith(".qzeros"):
        stats["asymmetric"] += int((t != -2004318072).sum())  # 0x88888888: eight zero points of 8
    return _grown(t, p.target, p.grow) if p.grow is not None else t


def _out_tensor(p: _Planned, stats: dict[str, int]) -> OutTensor:
    shape = p.info.shape if p.grow is None else (p.info.shape[0] + p.grow.rows, *p.info.shape[1:])
    return OutTensor(p.target, p.info.dtype, shape, lambda: _load_checked(p, stats))


def _write_shards(plan: list[_Planned], tmp: Path, max_bytes: int, say: Progress) -> tuple[int, int, bool]:
    """Stream the planned tensors into shards of at most ``max_bytes``; returns (shards, bytes,
    every zero point is 8)."""
    groups = _shard_groups(plan, max_bytes)
    names = (
        ["model.safetensors"]
        if len(groups) == 1
        else [f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors" for i in range(len(groups))]
    )
    weight_map: dict[str, str] = {}
    stats = {"asymmetric": 0}
    total = 0
    for name, group in zip(names, groups, strict=True):
        size = write_file(tmp / name, [_out_tensor(p, stats) for p in group])
        weight_map.update(dict.fromkeys((p.target for p in group), name))
        total += size
        say(f"wrote {name} ({len(group)} tensors, {size / 1e9:.2f} GB)")
    if len(groups) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return len(groups), total, stats["asymmetric"] == 0


def convert_grace(
    src: Path,
    dst: Path,
    *,
    vision_tower: Path | None = None,
    force: bool = False,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    progress: Progress | None = None,
) -> ConversionReport:
    """Convert the GRACE checkpoint in ``src`` into ``dst``; raises :class:`ConversionError`."""
    say = progress or (lambda _msg: None)
    t0 = time.perf_counter()
    if dst.exists() and not force:
        raise ConversionError(f"{dst} already exists (pass --force to replace it)")
    config = read_config(src)
    text = TextSpec.from_config(config)
    vision = hf.resolve_vision(config, vision_tower)
    hf.check_llava_config(config, vision)
    meta = read_awq_meta(src, config, text)
    shards = sorted(src.glob("*.safetensors"))
    if not shards:
        raise ConversionError(f"{src}: no .safetensors shards")
    headers = read_headers(shards)
    say(
        f"read {len(headers)} tensor headers from {len(shards)} shard(s); {len(meta.modules)} AWQ linears, "
        f"group {meta.group_size}"
    )
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.tmp-", dir=dst.parent))
    try:
        ids = hf.save_processor(src, tmp, config, vision)
        vocab = max(text.vocab_size, ids.image + 1)
        growth = VocabGrowth(rows=vocab - text.vocab_size, unk_id=ids.unk)
        cfg = hf.target_config(config, text, vision, ids.image, vocab)
        expected = hf.expected_shapes(cfg)
        plan, ignored, from_clip = _plan(headers, _clip_headers(vision), text, meta, expected, growth=growth)
        say(f"checked {len(plan)} tensors against the config; copying")
        out_config = hf.config_json(cfg, meta)
        (tmp / "config.json").write_text(json.dumps(out_config, indent=2, sort_keys=True) + "\n")
        for name in _COPIED_FILES:
            if (src / name).is_file():
                shutil.copy2(src / name, tmp / name)
        n_shards, n_bytes, symmetric = _write_shards(plan, tmp, max_shard_bytes, say)
        report = ConversionReport(
            src=str(src),
            dst=str(dst),
            vision_tower=vision.origin,
            vision_weights=str(vision.weights_dir) if from_clip else "checkpoint",
            group_size=meta.group_size,
            quantized_linears=len(meta.modules),
            tensors=len(plan),
            ignored=sorted(ignored),
            symmetric_zero_points=symmetric,
            vocab_size=(text.vocab_size, vocab),
            image_token_id=ids.image,
            output_shards=n_shards,
            output_bytes=n_bytes,
            seconds=time.perf_counter() - t0,
            peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        )
        manifest = {
            "name": dst.name,
            "quantization": "awq",
            "converted_from": "grace-llava-1.5",
            **asdict(report),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        tmp.chmod(0o755)
        _replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


def _replace(tmp: Path, dst: Path) -> None:
    if not dst.exists():
        tmp.rename(dst)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old-", dir=dst.parent))
    dst.rename(old / dst.name)
    tmp.rename(dst)
    shutil.rmtree(old, ignore_errors=True)
