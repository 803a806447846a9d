"""PickScore (``--arch pickscore``): a random-weight tiny CLIP in Hugging Face format scores the
same through ``hps score`` and :class:`hps.scoring.HpsScorer` as through ``transformers``
directly with PickScore's reference code; loading is safetensors-only and checked."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from cli.main import main
from hps.architectures import get_architecture, list_architectures
from hps.checkpoints import CheckpointError, ChecksumMismatch, sha256_of_file, write_sidecar
from hps.factory import load_model
from hps.hf_clip import EOS_TOKEN_ID, image_processor_class, offline_tokenizer
from hps.scoring import HpsScorer, build_scorer

ARCH = "pickscore-tiny"
SIZES = [(48, 32), (32, 35), (64, 64), (37, 51)]  # (width, height); (32, 35): odd crop margin
LONG_PROMPT = " ".join(f"word{i} and a red cube over a blue sphere" for i in range(20))
PROMPTS = ["a cat", "an astronaut riding a horse on the moon, oil painting", LONG_PROMPT]


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight tiny CLIPModel saved by transformers (config.json + model.safetensors),
    with a logit scale that is not the default one."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(**get_architecture(ARCH).model_cfg)).eval()
    with torch.no_grad():
        model.logit_scale.fill_(3.1)
    folder = tmp_path_factory.mktemp("pickscore") / "PickScore_tiny"
    model.save_pretrained(folder, safe_serialization=True)
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("pickscore-images")
    rng = np.random.default_rng(1)
    paths = []
    for index, (width, height) in enumerate(SIZES):
        gradient = np.linspace(0, 255, width * height * 3).reshape(height, width, 3)
        noise = rng.integers(0, 60, (height, width, 3))
        pixels = np.clip(gradient + noise, 0, 255).astype(np.uint8)
        path = folder / f"image{index}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def reference_scores(
    folder: Path, prompts: list[str], images: list[Path], backend: str = "pil"
) -> list[float]:
    """PickScore's reference scoring, with transformers only (per image, its prompt)."""
    from transformers import CLIPModel, CLIPProcessor

    size = get_architecture(ARCH).image_size
    processor = CLIPProcessor(
        image_processor=image_processor_class(backend)(
            size={"shortest_edge": size}, crop_size={"height": size, "width": size}
        ),
        tokenizer=offline_tokenizer(),
    )
    model = CLIPModel.from_pretrained(folder, local_files_only=True).eval()
    pil_images = [Image.open(path).convert("RGB") for path in images]
    inputs = processor(
        images=pil_images,
        padding=True,
        truncation=True,
        max_length=77,
        text=prompts,
        return_tensors="pt",
    )
    with torch.no_grad():
        img = features(model.get_image_features(pixel_values=inputs["pixel_values"]))
        img = img / img.norm(dim=-1, keepdim=True)
        txt = features(
            model.get_text_features(
                input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
            )
        )
        txt = txt / txt.norm(dim=-1, keepdim=True)
        scores = model.logit_scale.exp() * (txt @ img.T)
    return [float(scores[i, i]) for i in range(len(images))]


def features(output: Any) -> torch.Tensor:
    """transformers 4 returns the projected features, 5 an output holding them."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def prompts_for(images: list[Path]) -> list[str]:
    return [PROMPTS[i % len(PROMPTS)] for i in range(len(images))]


def test_long_prompt_is_truncated_by_the_tokenizer() -> None:
    ids = offline_tokenizer()([LONG_PROMPT], truncation=True, max_length=77)["input_ids"][0]
    assert len(ids) == 77 and ids[-1] == EOS_TOKEN_ID
    assert offline_tokenizer().convert_tokens_to_ids("<|endoftext|>") == EOS_TOKEN_ID


def test_scorer_matches_transformers_reference(hf_folder: Path, images: list[Path]) -> None:
    prompts = prompts_for(images)
    expected = reference_scores(hf_folder, prompts, images)
    with build_scorer(ARCH, hf_folder, device="cpu", dtype="float32") as scorer:
        assert scorer.score_scale == pytest.approx(float(np.exp(3.1)), rel=1e-6)
        got = scorer.score(prompts, images, batch_size=3)  # several batches
    assert got == pytest.approx(expected, abs=1e-4)
    assert max(expected) - min(expected) > 1e-3  # the check can tell images apart


def test_torchvision_backend_matches_its_processor(hf_folder: Path, images: list[Path]) -> None:
    loaded = load_model(ARCH, hf_folder / "model.safetensors")
    architecture = dataclasses.replace(loaded.architecture, image_backend="torchvision")
    scorer = HpsScorer(
        loaded.model,
        architecture,
        device="cpu",
        dtype="float32",
        score_scale=loaded.metadata["score_scale"],
        decoders=0,
    )
    prompts = prompts_for(images)
    expected = reference_scores(hf_folder, prompts, images, backend="torchvision")
    assert scorer.score(prompts, images) == pytest.approx(expected, abs=1e-4)


def test_hps_score_command_matches_reference(
    hf_folder: Path, images: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    prompt = PROMPTS[1]
    expected = reference_scores(hf_folder, [prompt] * len(images), images)
    for checkpoint in (hf_folder, hf_folder / "model.safetensors"):
        argv = ["score", "--arch", ARCH, "--checkpoint", str(checkpoint), "--prompt", prompt]
        assert main([*argv, "--dtype", "float32", "--device", "cpu", *map(str, images)]) == 0
        rows = json.loads(capsys.readouterr().out)
        assert [row["image"] for row in rows] == [str(path) for path in images]
        assert [row["score"] for row in rows] == pytest.approx(expected, abs=1e-4)


def test_pickscore_is_listed(capsys: pytest.CaptureFixture[str]) -> None:
    assert {"pickscore", ARCH} <= set(list_architectures())
    assert main(["models", "list"]) == 0
    listed = json.loads(capsys.readouterr().out)["architectures"]
    assert "PickScore" in listed["pickscore"]
    full = get_architecture("pickscore")
    assert (full.image_size, full.context_length, full.vision_layers) == (224, 77, 32)


def test_sha256_is_checked(hf_folder: Path, tmp_path: Path) -> None:
    weights = hf_folder / "model.safetensors"
    with pytest.raises(ChecksumMismatch):
        load_model(ARCH, weights, sha256="0" * 64)
    copy = tmp_path / "model.safetensors"
    copy.write_bytes(weights.read_bytes())
    write_sidecar(copy, sha256_of_file(weights))
    assert load_model(ARCH, copy).metadata["format"] == "hf-safetensors"
    write_sidecar(copy, "1" * 64)
    with pytest.raises(ChecksumMismatch):
        load_model(ARCH, copy)


def test_corrupt_file_is_a_clear_error(
    hf_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    truncated = tmp_path / "model.safetensors"
    truncated.write_bytes((hf_folder / "model.safetensors").read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="unreadable safetensors"):
        load_model(ARCH, truncated)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a model at all, certainly")
    argv = ["score", "--arch", ARCH, "--checkpoint", str(garbage), "--prompt", "x", "y.png"]
    assert main(argv) == 2
    assert "unrecognised header" in capsys.readouterr().err


def test_pickles_are_refused_unread(tmp_path: Path) -> None:
    pickled = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.zeros(1)}, pickled)
    with pytest.raises(CheckpointError, match="safetensors only"):
        load_model(ARCH, pickled)
    with pytest.raises(CheckpointError, match=r"pytorch_model\.bin, a pickle"):
        load_model(ARCH, tmp_path)


def test_wrong_model_is_refused(hf_folder: Path, tmp_path: Path) -> None:
    config = json.loads((hf_folder / "config.json").read_text())
    config["vision_config"]["num_hidden_layers"] = 3
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps(config))
    (other / "model.safetensors").write_bytes((hf_folder / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match=r"vision_config.num_hidden_layers 3 \(expected 2\)"):
        load_model(ARCH, other)
    (other / "config.json").unlink()  # no config: the tensors' shapes decide
    with pytest.raises(CheckpointError, match="does not fit the architecture"):
        load_model("pickscore", other)
    with pytest.raises(CheckpointError, match="pass --arch pickscore"):
        load_model(None, other)


def test_project_preprocess_override_is_refused(hf_folder: Path) -> None:
    with pytest.raises(ValueError, match="not available"):
        build_scorer(ARCH, hf_folder, device="cpu", preprocess="pad")
