"""Checkpoint formats: v1 (OpenAI layout, QuickGELU), v2 (open_clip, fp16 compressed) and the
project's own; each loaded through the product scores exactly as open_clip does directly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from open_clip.tokenizer import SimpleTokenizer
from PIL import Image

from hps.architectures import get_architecture
from hps.checkpoints import CheckpointError, detect_format, save_checkpoint, sha256_of_file
from hps.factory import load_model
from hps.preprocess import normalize, to_uint8_tensor
from hps.scoring import build_scorer

PROMPTS = ["a red fox in the snow", "a lighthouse at night"]


def images() -> list[Image.Image]:
    torch.manual_seed(3)
    return [Image.fromarray((torch.rand(48 + 8 * i, 64, 3) * 255).byte().numpy()) for i in range(4)]


def open_clip_model(arch_name: str, *, quick_gelu: bool, seed: int = 11) -> CLIP:
    """The model built directly with open_clip (not through the product), random weights."""
    cfg = get_architecture(arch_name).model_cfg
    torch.manual_seed(seed)
    model = CLIP(
        cfg["embed_dim"],
        CLIPVisionCfg(**cfg["vision_cfg"]),
        CLIPTextCfg(**cfg["text_cfg"]),
        quick_gelu=quick_gelu,
    )
    with torch.no_grad():  # make every tensor matter (the default init zeroes some biases)
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    return model.eval()


def direct_scores(model: CLIP, arch_name: str) -> list[float]:
    """100 * cos computed with open_clip's own encoders."""
    architecture = get_architecture(arch_name)
    pixels = torch.stack([to_uint8_tensor(im, architecture.image_size, "pad") for im in images()])
    tokens = SimpleTokenizer()([PROMPTS[i % 2] for i in range(4)])
    with torch.no_grad():
        image_features = model.encode_image(normalize(pixels, torch.float32), normalize=True)
        text_features = model.encode_text(tokens, normalize=True)
    return (100 * (image_features * text_features).sum(-1)).tolist()


def product_scores(arch: str | None, checkpoint: Path) -> list[float]:
    scorer = build_scorer(arch, checkpoint, device="cpu", dtype="float32", preprocess="pad")
    return scorer.score([PROMPTS[i % 2] for i in range(4)], images())


def test_v1_checkpoint_scores_like_open_clip_with_quickgelu(tmp_path: Path) -> None:
    reference = open_clip_model("tiny", quick_gelu=True)
    path = tmp_path / "hpc.pth"
    torch.save({"state_dict": reference.state_dict()}, path)
    assert detect_format(path) == "clip-state-dict"
    assert product_scores("tiny", path) == pytest.approx(direct_scores(reference, "tiny"), abs=1e-4)
    # The same weights under GELU give different scores: the activation matters.
    gelu = product_scores("tiny-gelu", path)
    assert (
        max(abs(a - b) for a, b in zip(gelu, direct_scores(reference, "tiny"), strict=True)) > 0.05
    )


def test_v2_fp16_compressed_checkpoint_scores_like_open_clip(tmp_path: Path) -> None:
    reference = open_clip_model("tiny-gelu", quick_gelu=False)
    compressed = {k: v.half() for k, v in reference.state_dict().items()}
    path = tmp_path / "HPS_v2_compressed.pt"
    torch.save({"state_dict": compressed}, path)
    reference.load_state_dict({k: v.float() for k, v in compressed.items()})  # same rounding
    expected = direct_scores(reference, "tiny-gelu")
    assert product_scores("tiny-gelu", path) == pytest.approx(expected, abs=1e-4)
    loaded = load_model("tiny-gelu", path)
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())


def test_ddp_prefix_is_accepted_and_ambiguous_shapes_need_an_arch(tmp_path: Path) -> None:
    reference = open_clip_model("tiny", quick_gelu=True)
    path = tmp_path / "ddp.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, path)
    assert product_scores("tiny", path) == pytest.approx(direct_scores(reference, "tiny"), abs=1e-4)
    with pytest.raises(CheckpointError, match=r"fits several architectures \(tiny, tiny-gelu\)"):
        load_model(None, path)


def test_own_format_round_trip_keeps_scores_and_metadata(tmp_path: Path) -> None:
    reference = open_clip_model("tiny", quick_gelu=True)
    path = save_checkpoint(
        tmp_path / "model.safetensors",
        reference,
        {
            "architecture": "tiny",
            "preprocess": "crop",
            "score_scale": 100.0,
            "metrics": {"top1": 0.5},
        },
    )
    assert detect_format(path) == "hps-safetensors"
    loaded = load_model(None, path)  # the architecture comes from the metadata
    assert loaded.architecture.name == "tiny"
    assert loaded.metadata["preprocess"] == "crop" and loaded.metadata["metrics"] == {"top1": 0.5}
    for key, value in reference.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value)
    with pytest.raises(CheckpointError, match="is for architecture 'tiny', not 'tiny-gelu'"):
        load_model("tiny-gelu", path)


def test_wrong_architecture_names_the_keys(tmp_path: Path) -> None:
    path = tmp_path / "tiny.pth"
    torch.save({"state_dict": open_clip_model("tiny", quick_gelu=True).state_dict()}, path)
    with pytest.raises(CheckpointError) as caught:
        load_model("small", path)
    message = str(caught.value)
    assert "does not fit the architecture" in message
    assert "96 missing keys: transformer.resblocks.2." in message
    assert (
        "61 shape mismatches (checkpoint vs architecture): ln_final.bias (64,) vs (128,)" in message
    )


def test_missing_and_unexpected_keys_are_named(tmp_path: Path) -> None:
    state = open_clip_model("tiny", quick_gelu=True).state_dict()
    del state["ln_final.weight"]
    state["extra.head.weight"] = torch.zeros(3)
    path = tmp_path / "broken.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(
        CheckpointError,
        match=r"1 missing keys: ln_final.weight; 1 unexpected keys: extra.head.weight",
    ):
        load_model("tiny", path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "too short to be a checkpoint"),
        (b"hello, this is not a model at all", "not a torch or safetensors checkpoint"),
        (b"PK\x03\x04" + b"\x00" * 200, "unreadable torch checkpoint"),
    ],
)
def test_corrupt_checkpoints_fail_clearly(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_model("tiny", path)


def test_truncated_checkpoint_and_sha256(tmp_path: Path) -> None:
    good = tmp_path / "good.pth"
    torch.save({"state_dict": open_clip_model("tiny", quick_gelu=True).state_dict()}, good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="unreadable torch checkpoint"):
        load_model("tiny", truncated)
    load_model("tiny", good, sha256=sha256_of_file(good))
    with pytest.raises(CheckpointError, match=r"sha256 is .*, expected 0000"):
        load_model("tiny", good, sha256="0" * 64)
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_model("tiny", tmp_path / "absent.pth")
