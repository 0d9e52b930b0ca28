"""Malformed GRACE checkpoints are refused with one clear line naming the tensor or file, and leave
nothing behind: no destination, no temporary directory beside it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from serving.convert import ConversionError, convert_grace
from serving.int4 import dequantize, pack_awq, pack_gptq, quantize_rtn, unpack_awq
from tests.support.grace_fixture import GraceDims, write_grace_checkpoint

REPO = Path(__file__).resolve().parents[2]
Q_PROJ = "model.layers.1.self_attn.q_proj"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_grace_checkpoint(tmp_path_factory.mktemp("pristine"), GraceDims()).src


@pytest.fixture
def src(pristine: Path, tmp_path: Path) -> Path:
    # mm_vision_tower names the pristine fixture's CLIP directory, which stays where it is
    copy = tmp_path / "grace"
    shutil.copytree(pristine, copy)
    return copy


def edit_tensors(src: Path, change: Callable[[dict[str, torch.Tensor]], None]) -> None:
    """Apply ``change`` to the checkpoint's tensors and rewrite the shards and index."""
    index_path = src / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    tensors: dict[str, torch.Tensor] = {}
    for shard in sorted(src.glob("*.safetensors")):
        tensors.update(load_file(shard))
        shard.unlink()
    change(tensors)
    save_file(tensors, str(src / "model-00001-of-00001.safetensors"))
    index["weight_map"] = dict.fromkeys(tensors, "model-00001-of-00001.safetensors")
    index_path.write_text(json.dumps(index))


def edit_json(path: Path, change: Callable[[dict[str, object]], None]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def repacked(tensors: dict[str, torch.Tensor], prefix: str, group_size: int, gptq: bool = False) -> None:
    """Replace one linear's packed tensors by the same weight packed another way."""
    parts = [tensors.pop(f"{prefix}.{s}") for s in ("qweight", "qzeros", "scales")]
    weight = dequantize(unpack_awq(*parts))
    q = quantize_rtn(weight, group_size, symmetric=True)
    packed = pack_gptq(q) if gptq else pack_awq(q)
    tensors.update({f"{prefix}.{k}": v for k, v in packed.items() if k != "g_idx"})


def drop(key: str) -> Callable[[dict[str, torch.Tensor]], None]:
    def change(t: dict[str, torch.Tensor]) -> None:
        del t[key]

    return change


def set_tensor(
    key: str, value: Callable[[torch.Tensor], torch.Tensor]
) -> Callable[[dict[str, torch.Tensor]], None]:
    def change(t: dict[str, torch.Tensor]) -> None:
        t[key] = value(t[key])

    return change


CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "missing packed tensor": (
        lambda s: edit_tensors(s, drop("model.layers.1.mlp.down_proj.scales")),
        r"^model\.layers\.1\.mlp\.down_proj\.scales: missing from the checkpoint$",
    ),
    "missing dense tensor": (
        lambda s: edit_tensors(s, drop("model.mm_projector.2.bias")),
        r"^model\.mm_projector\.2\.bias: missing from the checkpoint \(1 tensors missing\)$",
    ),
    "tensors packed with another group size": (
        lambda s: edit_tensors(s, lambda t: repacked(t, Q_PROJ, 64)),
        rf"^{Q_PROJ}\.qzeros: shape \[4, 32\], expected \[2, 32\] .* \(that is group size 64, not 128 from "
        r"awq_quantized_modules\.json\)$",
    ),
    "json declares another group size": (
        lambda s: edit_json(s / "awq_quantized_modules.json", lambda d: d.update(group_size=64)),
        r"^config\.json awq_packing\.group_size is 128 but awq_quantized_modules\.json says 64$",
    ),
    "gptq packing": (
        lambda s: edit_tensors(s, lambda t: repacked(t, Q_PROJ, 128, gptq=True)),
        rf"^{Q_PROJ}\.qweight: shape \[32, 256\], expected \[256, 32\] .*looks GPTQ-packed",
    ),
    "qweight stored as int64": (
        lambda s: edit_tensors(s, set_tensor(f"{Q_PROJ}.qweight", lambda v: v.to(torch.int64))),
        rf"^{Q_PROJ}\.qweight: dtype int64, AWQ GEMM stores int32$",
    ),
    "dense weight for a quantized linear": (
        lambda s: edit_tensors(s, lambda t: t.update({f"{Q_PROJ}.weight": torch.zeros(256, 256)})),
        rf"^{Q_PROJ}\.weight: {Q_PROJ} is listed as AWQ-quantized",
    ),
    "unexpected tensor": (
        lambda s: edit_tensors(s, lambda t: t.update({"model.image_newline": torch.zeros(256)})),
        r"^model\.image_newline: unexpected tensor",
    ),
    "module list misses a linear": (
        lambda s: edit_json(s / "awq_quantized_modules.json", lambda d: d["modules"].remove(Q_PROJ)),  # type: ignore[attr-defined]
        rf"^awq_quantized_modules\.json does not list {Q_PROJ};",
    ),
    "wrong projector type": (
        lambda s: edit_json(s / "config.json", lambda d: d.update(mm_projector_type="linear")),
        r"^config\.json: mm_projector_type 'linear' is not supported",
    ),
    # found only while copying, after some output was written: still nothing left behind
    "NaN scales": (
        lambda s: edit_tensors(
            s, set_tensor("lm_head.weight", lambda v: v.index_fill(0, torch.tensor([3]), float("nan")))
        ),
        r"^lm_head\.weight: holds NaN or infinite values$",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_source_is_refused_and_leaves_nothing(src: Path, tmp_path: Path, case: str) -> None:
    corrupt, message = CASES[case]
    corrupt(src)
    out_parent = tmp_path / "models"
    out_parent.mkdir()
    with pytest.raises(ConversionError, match=message) as info:
        convert_grace(src, out_parent / "grace-llava", max_shard_bytes=400_000)
    assert "\n" not in str(info.value)
    assert list(out_parent.iterdir()) == []


def test_cli_prints_one_line_and_exits_2(src: Path, tmp_path: Path) -> None:
    edit_tensors(src, drop("model.layers.0.self_attn.k_proj.qzeros"))
    dst = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from m3bench.cli import main; main()",
            "convert",
            "grace",
            str(src),
            str(dst),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        timeout=300,
        check=False,
    )
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: Invalid value: model.layers.0.self_attn.k_proj.qzeros: missing from the checkpoint"
    ]
    assert "Traceback" not in proc.stderr
    assert not dst.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
