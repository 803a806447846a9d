"""`hps train --out run` then `--checkpoint run`: the folder stands for the model file in it
(hps eval, hps score, hps train --checkpoint, hps registry add); a folder without one is a
one-line error saying which file was expected."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from config import get_settings
from hps.checkpoints import load_checkpoint, sha256_of_file
from hps.scoring import build_scorer
from tests.cli.test_science_commands import assert_one_line_error, hps
from tests.hps.datasets import write_export_manifest, write_hpd_v1_manifest, write_planted_sets

TRAIN_OPTIONS = ("--lr", "1e-3", "--batch-size", "4", "--seed", "0", "--device", "cpu")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real `hps train --out run` (tiny, a few planted sets); returns the folder."""
    folder = tmp_path_factory.mktemp("folders")
    write_hpd_v1_manifest(
        folder / "train.json", write_planted_sets(folder / "img", 12, seed=4, prefix="t")
    )
    write_export_manifest(
        folder / "test.jsonl", write_planted_sets(folder / "img", 8, seed=5, prefix="v")
    )
    trained = hps(
        "train",
        *("--arch", "tiny", "--data", str(folder / "train.json"), "--out", "run"),
        *("--steps", "2", *TRAIN_OPTIONS),
        cwd=folder,
    )
    assert trained.returncode == 0, trained.stderr
    assert json.loads(trained.stdout)["checkpoint"] == str(Path("run") / "model.safetensors")
    return folder / "run"


def test_eval_and_score_take_the_training_folder(run: Path) -> None:
    folder = run.parent
    evaluated = hps(
        "eval",
        *("--checkpoint", "run", "--data", "test.jsonl", "--device", "cpu", "--dtype", "float32"),
        cwd=folder,
    )
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(evaluated.stdout)
    assert result["model"] == "run" and result["baseline"]["name"] == "random init"
    assert result["sets"] == 8 and 0.0 <= result["top1_accuracy"] <= 1.0

    image = folder / "img" / "v00000_0.png"
    scored = hps(
        "score",
        *("--checkpoint", "run", "--prompt", "a cat", "--dtype", "float32", "--device", "cpu"),
        str(image),
        cwd=folder,
    )
    assert scored.returncode == 0, scored.stderr
    # The very model in run/model.safetensors: the same score as loading the file by name.
    scorer = build_scorer(None, run / "model.safetensors", device="cpu", dtype="float32")
    expected = scorer.score("a cat", [str(image)])[0]
    assert json.loads(scored.stdout)[0]["score"] == pytest.approx(expected, abs=1e-3)


def test_train_from_a_training_folder_records_the_model_file(run: Path) -> None:
    from cli.main import main

    folder = run.parent
    out = folder / "run2"
    code = main(
        [
            *("train", "--checkpoint", str(run), "--data", str(folder / "train.json")),
            *("--out", str(out), "--steps", "1", *TRAIN_OPTIONS),
        ]
    )
    assert code == 0
    _, metadata = load_checkpoint(out)
    assert metadata["base"] == {
        "kind": "checkpoint",
        "path": str((run / "model.safetensors").resolve()),
        "sha256": sha256_of_file(run / "model.safetensors"),
    }


def test_a_folder_without_a_checkpoint_is_a_clear_error(run: Path) -> None:
    folder = run.parent
    (folder / "empty").mkdir(exist_ok=True)
    expected = f"{folder / 'empty'}: no checkpoint in this folder; expected model.safetensors"
    assert_one_line_error(
        hps("eval", "--checkpoint", "empty", "--data", "test.jsonl", cwd=folder),
        "no checkpoint in this folder; expected model.safetensors",
    )
    assert_one_line_error(
        hps("score", "--checkpoint", str(folder / "empty"), "--prompt", "x", "a.png", cwd=folder),
        expected,
    )


@pytest.fixture
def models_dir(sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HPS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    monkeypatch.delenv("MODELS_DIR", raising=False)
    get_settings.cache_clear()
    (tmp_path / "models").mkdir(exist_ok=True)
    yield tmp_path / "models"
    get_settings.cache_clear()


def test_registry_add_takes_the_training_folder(
    run: Path, models_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cli.main import main

    copy = models_dir / "hps-run"
    copy.mkdir()
    (copy / "model.safetensors").write_bytes((run / "model.safetensors").read_bytes())
    options = ["registry", "add", "--name", "r", "--arch", "tiny", "--checkpoint"]
    assert main([*options, str(copy)]) == 0
    view = json.loads(capsys.readouterr().out)
    assert view["checkpoint_key"] == "hps-run/model.safetensors"
    assert view["checkpoint_sha256"] == sha256_of_file(run / "model.safetensors")
    (models_dir / "empty").mkdir()
    assert main([*options, str(models_dir / "empty")]) == 2
    assert "no checkpoint in this folder; expected model.safetensors" in capsys.readouterr().err
