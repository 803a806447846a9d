"""Training on choice sets: learns a planted rule, resumes exactly, masks mixed set sizes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hps.evaluation import evaluate
from hps.scoring import build_scorer
from hps.training.loss import pad_set_logits, preference_loss
from hps.training.manifests import load_manifest
from hps.training.trainer import TrainConfig, train
from tests.hps.datasets import write_export_manifest, write_planted_sets

FAST = {"lr": 1e-3, "batch_size": 8, "device": "cpu", "warmup_ratio": 0.1}


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("planted")
    write_export_manifest(
        folder / "train.jsonl", write_planted_sets(folder / "img", 160, seed=1, prefix="t")
    )
    write_export_manifest(
        folder / "test.jsonl", write_planted_sets(folder / "img", 80, seed=2, prefix="v")
    )
    mixed = write_planted_sets(folder / "img", 48, seed=3, set_sizes=(2, 4, 3), prefix="m")
    write_export_manifest(folder / "mixed.jsonl", mixed)
    return folder


def test_training_beats_the_untuned_start_on_held_out_prompts(
    planted: Path, tmp_path: Path
) -> None:
    train_sets = load_manifest(planted / "train.jsonl")
    test_sets = load_manifest(planted / "test.jsonl")
    assert not {s.prompt for s in train_sets} & {s.prompt for s in test_sets}
    result = train(
        "tiny", None, train_sets, tmp_path, TrainConfig(epochs=3, **FAST), progress=False
    )
    trained = evaluate(
        build_scorer(None, result.checkpoint, device="cpu", dtype="float32"), test_sets
    )
    torch.manual_seed(0)  # the untuned start: the same seeded random init
    untuned = evaluate(build_scorer("tiny", device="cpu", dtype="float32"), test_sets)
    assert trained.top1_accuracy >= untuned.top1_accuracy + 0.20, (trained, untuned)
    assert trained.top1_accuracy >= 0.6
    assert trained.pairwise_accuracy > untuned.pairwise_accuracy
    lines = [json.loads(line) for line in result.metrics_file.read_text().splitlines()]
    assert [row["step"] for row in lines] == list(range(1, result.steps + 1))
    assert lines[-1]["loss"] < lines[0]["loss"]
    assert result.curve_file is not None and result.curve_file.read_bytes()[:4] == b"\x89PNG"


def test_resume_reproduces_the_uninterrupted_run(planted: Path, tmp_path: Path) -> None:
    sets = load_manifest(planted / "mixed.jsonl")
    config = TrainConfig(steps=9, **{**FAST, "batch_size": 5}, grad_accum=2)
    whole = train("tiny", None, sets, tmp_path / "whole", config, progress=False)
    first = train("tiny", None, sets, tmp_path / "split", config, progress=False, stop_after=4)
    assert first.stopped_early and first.steps == 4
    second = train("tiny", None, sets, tmp_path / "split", config, progress=False)
    assert second.steps == 9
    a, b = load_file(str(whole.checkpoint)), load_file(str(second.checkpoint))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert (
        whole.metrics_file.read_text().count("\n")
        == second.metrics_file.read_text().count("\n")
        == 9
    )
    losses = lambda p: [json.loads(x)["loss"] for x in p.read_text().splitlines()]  # noqa: E731
    assert losses(whole.metrics_file) == losses(second.metrics_file)


def test_mixed_set_sizes_are_masked() -> None:
    logits = torch.tensor([1.0, 2.0, 0.5, 3.0, 0.0, 1.0], requires_grad=True)  # sizes 2 and 4
    targets = torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    padded, mask = pad_set_logits(logits, [2, 4])
    assert mask.tolist() == [[True, True, False, False], [True, True, True, True]]
    assert torch.isinf(padded[0, 2:]).all()
    loss = preference_loss(logits, [2, 4], targets)
    alone = (
        torch.nn.functional.cross_entropy(logits[None, :2], torch.tensor([1]))
        + torch.nn.functional.cross_entropy(logits[None, 2:], torch.tensor([1]))
    ) / 2
    assert torch.allclose(loss, alone)
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    # A tie (soft label) is a cross-entropy against the uniform distribution over the pair.
    tie = preference_loss(torch.tensor([0.3, 0.3]), [2], torch.tensor([[0.5, 0.5]]))
    assert torch.allclose(tie, torch.log(torch.tensor(2.0)))


def test_only_the_last_blocks_train(planted: Path, tmp_path: Path) -> None:
    sets = load_manifest(planted / "mixed.jsonl")
    torch.manual_seed(0)
    start = build_scorer("tiny", device="cpu", dtype="float32").model.state_dict()
    config = TrainConfig(steps=2, vision_layers=1, text_layers=0, **FAST)
    result = train("tiny", None, sets, tmp_path, config, progress=False)
    end = load_file(str(result.checkpoint))
    changed = {key for key in end if not torch.equal(end[key], start[key])}
    assert "visual.transformer.resblocks.1.mlp.c_fc.weight" in changed
    assert "visual.transformer.resblocks.0.mlp.c_fc.weight" not in changed
    assert not any(key.startswith("transformer.resblocks.") for key in changed)
    assert "visual.conv1.weight" not in changed and "logit_scale" not in changed
