"""``convert_grace`` on a tiny checkpoint written in GRACE's layout: every packed weight survives bit
for bit, every other tensor is copied, the config and processor say what LLaVA-1.5 does, and the
tokens of a chat equal the ones LLaVA's own ``tokenizer_image_token`` makes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sentencepiece as spm
import torch
from PIL import Image
from safetensors import safe_open
from transformers import AutoProcessor

from serving.convert import ConversionError, convert_grace
from serving.convert.grace_hf import VICUNA_V1_SYSTEM
from serving.embedded.weights import init_tensor
from serving.int4 import dequantize, quantize_rtn, unpack_awq
from tests.support.grace_fixture import SEED, GraceDims, write_grace_checkpoint

DIMS = GraceDims()
AWQ_REVERSE_ORDER = [0, 4, 1, 5, 2, 6, 3, 7]


def load_all(directory: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for shard in sorted(directory.glob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as f:
            keys = f.keys()
            for key in keys:
                out[key] = f.get_tensor(key)
    return out


def autoawq_dequantize(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """AutoAWQ's ``dequantize_gemm`` (as GRACE vendors it), written out independently of
    serving.int4: unpack 8 nibbles per int32, undo the [0, 2, 4, 6, 1, 3, 5, 7] order, (q - z) * s.
    Returns ``W[N, K]`` in float32."""
    shifts = torch.arange(0, 32, 4)

    def unpack(packed: torch.Tensor) -> torch.Tensor:
        nibbles = (packed[:, :, None].to(torch.int64) >> shifts) & 0xF
        flat = nibbles.reshape(packed.shape[0], -1)
        order = torch.arange(flat.shape[1]).view(-1, 8)[:, AWQ_REVERSE_ORDER].reshape(-1)
        return flat[:, order]

    group = qweight.shape[0] // qzeros.shape[0]
    iw, iz = unpack(qweight), unpack(qzeros).repeat_interleave(group, dim=0)
    s = scales.to(torch.float32).repeat_interleave(group, dim=0)
    return ((iw - iz).to(torch.float32) * s).t().contiguous()


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("grace")
    fx = write_grace_checkpoint(root, DIMS)
    dst = root / "out"
    convert_grace(fx.src, dst)
    return fx.src, fx.clip, dst


def test_packed_weights_dequantize_bit_for_bit(converted: tuple[Path, Path, Path]) -> None:
    src, _, dst = converted
    source, out = load_all(src), load_all(dst)
    prefixes = sorted(k.removesuffix(".qweight") for k in source if k.endswith(".qweight"))
    assert len(prefixes) == 7 * DIMS.layers
    for prefix in prefixes:
        target = "language_model." + prefix
        tensors = [out[f"{target}.{s}"] for s in ("qweight", "qzeros", "scales")]
        served = dequantize(unpack_awq(*tensors), torch.float32)
        reference = autoawq_dequantize(*(source[f"{prefix}.{s}"] for s in ("qweight", "qzeros", "scales")))
        assert torch.equal(served, reference), prefix
        # ... and equal to the symmetric codes the fixture quantized from its float weights
        w = init_tensor(SEED, f"{prefix}.weight", tuple(served.shape), torch.float32)
        assert torch.equal(served, dequantize(quantize_rtn(w, DIMS.group_size, symmetric=True))), prefix


def test_every_other_tensor_is_copied(converted: tuple[Path, Path, Path]) -> None:
    src, _, dst = converted
    source, out = load_all(src), load_all(dst)
    renames = {
        "model.vision_tower.vision_tower.vision_model.": "vision_tower.vision_model.",
        "model.mm_projector.0.": "multi_modal_projector.linear_1.",
        "model.mm_projector.2.": "multi_modal_projector.linear_2.",
        "model.": "language_model.model.",
        "lm_head.": "language_model.lm_head.",
    }
    assert len(out) == len(source)
    for key, value in source.items():
        old, new = next((o, n) for o, n in renames.items() if key.startswith(o))
        served = out[new + key.removeprefix(old)]
        if key in ("model.embed_tokens.weight", "lm_head.weight"):
            assert torch.equal(served[: DIMS.vocab_size], value)
            extra = served[DIMS.vocab_size :]
            assert extra.shape[0] == 1  # the <image> row
            assert torch.equal(extra, torch.zeros_like(extra) if key.startswith("model.") else value[:1])
        else:
            assert served.dtype == value.dtype, key
            assert torch.equal(served, value), key


def test_config_says_what_llava_15_does(converted: tuple[Path, Path, Path]) -> None:
    src, _, dst = converted
    cfg = json.loads((dst / "config.json").read_text())
    assert cfg["architectures"] == ["LlavaForConditionalGeneration"]
    assert cfg["quantization_config"] == {
        "quant_method": "awq",
        "bits": 4,
        "group_size": DIMS.group_size,
        "zero_point": True,
        "version": "gemm",
        "modules_to_not_convert": ["vision_tower", "multi_modal_projector"],
    }
    assert cfg["vision_feature_layer"] == -2
    assert cfg["vision_feature_select_strategy"] == "default"
    assert cfg["projector_hidden_act"] == "gelu"
    assert cfg["image_token_index"] == DIMS.vocab_size == cfg["text_config"]["vocab_size"] - 1
    assert cfg["image_seq_length"] == (DIMS.image_size // DIMS.patch_size) ** 2
    assert cfg["text_config"]["hidden_size"] == DIMS.hidden
    assert cfg["text_config"]["rope_parameters"]["rope_theta"] == 10000.0
    assert cfg["vision_config"]["hidden_size"] == DIMS.vision_hidden
    assert cfg["vision_config"]["hidden_act"] == "quick_gelu"
    assert cfg["dtype"] == "float16"
    assert (dst / "generation_config.json").read_bytes() == (src / "generation_config.json").read_bytes()
    # transformers 4 (vLLM 0.22 on the H200) reads these: the rope base, the image processor, the template
    assert cfg["text_config"]["rope_theta"] == 10000.0
    assert cfg["torch_dtype"] == "float16"
    image = json.loads((dst / "preprocessor_config.json").read_text())
    assert image["image_processor_type"] == "LlavaImageProcessor"
    assert image["do_pad"] is True
    assert "chat_template" in json.loads((dst / "chat_template.json").read_text())
    tok = json.loads((dst / "tokenizer_config.json").read_text())
    assert not isinstance(tok.get("extra_special_tokens", {}), list)
    assert tok["add_bos_token"] is True
    manifest = json.loads((dst / "m3bench-model.json").read_text())
    assert manifest["symmetric_zero_points"] is True
    assert manifest["quantized_linears"] == 14


@pytest.mark.parametrize("with_image", [True, False])
def test_chat_tokens_equal_llava_tokenizer_image_token(
    converted: tuple[Path, Path, Path], with_image: bool
) -> None:
    src, _, dst = converted
    processor = AutoProcessor.from_pretrained(str(dst))
    question = "What does  this code print?\nAnswer briefly."
    content = [{"type": "image"}] if with_image else []
    messages = [{"role": "user", "content": [*content, {"type": "text", "text": question}]}]
    rendered = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = processor.tokenizer(rendered, add_special_tokens=False).input_ids
    # LLaVA: conv_vicuna_v1 prompt, then mm_utils.tokenizer_image_token with the slow tokenizer
    sp = spm.SentencePieceProcessor(model_file=str(src / "tokenizer.model"))
    prompt = f"{VICUNA_V1_SYSTEM} USER: {'<image>' + chr(10) if with_image else ''}{question} ASSISTANT:"
    first, *rest = prompt.split("<image>")
    expected = [sp.bos_id(), *sp.encode(first)]
    for chunk in rest:
        expected += [DIMS.vocab_size, *sp.encode(chunk)]
    assert ids == expected


def test_image_processor_pads_to_square_like_llava(converted: tuple[Path, Path, Path]) -> None:
    processor = AutoProcessor.from_pretrained(str(converted[2]))
    wide = Image.new("RGB", (200, 100), (255, 0, 0))
    pixels = processor.image_processor(wide, return_tensors="pt")["pixel_values"][0]
    assert tuple(pixels.shape) == (3, DIMS.image_size, DIMS.image_size)
    # expand2square fills with the CLIP mean colour, which normalizes to ~0; the red band stays red
    assert pixels[:, :5].abs().max() < 0.02
    assert pixels[0, DIMS.image_size // 2].mean() > 1.5


def test_vision_tower_from_a_local_clip_checkpoint(tmp_path: Path) -> None:
    fx = write_grace_checkpoint(
        tmp_path, DIMS, vision_in_checkpoint=False, vision_tower_name="openai/clip-vit-large-patch14-336"
    )
    with pytest.raises(ConversionError, match="mm_hidden_size 128 != hidden_size 1024"):
        convert_grace(fx.src, tmp_path / "a")  # the built-in ViT-L/14-336 config does not fit
    config = json.loads((fx.src / "config.json").read_text())
    config["mm_vision_tower"] = "/nonexistent/clip"
    (fx.src / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConversionError, match="pass --vision-tower PATH"):
        convert_grace(fx.src, tmp_path / "b")
    report = convert_grace(fx.src, tmp_path / "c", vision_tower=fx.clip)
    assert report.vision_weights == str(fx.clip)
    clip, out = load_all(fx.clip), load_all(tmp_path / "c")
    for key, value in clip.items():
        assert torch.equal(out["vision_tower." + key], value), key
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_tower_missing_everywhere_is_refused(tmp_path: Path) -> None:
    fx = write_grace_checkpoint(tmp_path, DIMS, vision_in_checkpoint=False)
    (fx.clip / "model.safetensors").unlink()
    with pytest.raises(ConversionError, match="holds no vision tower weights"):
        convert_grace(fx.src, tmp_path / "out")


def test_sharded_output_and_force(converted: tuple[Path, Path, Path], tmp_path: Path) -> None:
    src, _, dst = converted
    out = tmp_path / "sharded"
    report = convert_grace(src, out, max_shard_bytes=600_000)
    assert report.output_shards > 2
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {p.name for p in out.glob("*.safetensors")}
    single = load_all(dst)
    assert {k: v.shape for k, v in load_all(out).items()} == {k: v.shape for k, v in single.items()}
    with pytest.raises(ConversionError, match="already exists"):
        convert_grace(src, out)
    report = convert_grace(src, out, force=True)
    assert report.output_shards == 1
    assert not (out / "model.safetensors.index.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sharded"]
