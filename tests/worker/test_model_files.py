"""Registered model files are verified before a worker loads them: the registry keeps each
checkpoint's sha256 (``hps registry add`` checks it against ``--sha256`` or the fetch sidecar),
and a file swapped or corrupted since is refused with a short error, never loaded."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from config import get_settings
from db.models import ModelKind, ModelVersion
from db.registry import get_model_version, register_model_version
from hps.architectures import build_model, get_architecture
from hps.checkpoints import (
    LORA_WEIGHTS_FILE,
    save_checkpoint,
    sha256_of_file,
    write_sidecar,
)
from worker.lifecycle import expected_errors
from worker.model_cache import ModelCache, ModelFileChanged, ModelFileMissing, ModelRef


def tiny_checkpoint(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    return save_checkpoint(
        path,
        build_model(get_architecture("tiny")),
        {"architecture": "tiny", "preprocess": "pad", "base": {"kind": "random-init"}},
    )


def register(
    factory: sessionmaker[Session], key: str, sha256: str | None, kind: ModelKind = ModelKind.hps
) -> ModelRef:
    with factory() as session, session.begin():
        version = register_model_version(
            session,
            kind=kind,
            name=key,
            checkpoint_key=key,
            architecture="tiny",
            checkpoint_sha256=sha256,
        )
        return ModelRef.of(get_model_version(session, version.id))


def test_a_swapped_checkpoint_is_refused_before_it_is_loaded(
    factory: sessionmaker[Session], tmp_path: Path
) -> None:
    models = tmp_path / "models"
    path = tiny_checkpoint(models / "tiny.safetensors", seed=0)
    digest = sha256_of_file(path)
    ref = register(factory, "tiny.safetensors", digest.upper())
    assert ref.checkpoint_sha256 == digest  # stored normalised

    cache = ModelCache(models, "cpu")
    assert cache.scorer(ref) is cache.scorer(ref) and cache.loads == 1
    assert cache.verified_path(ref) == path

    tiny_checkpoint(path, seed=1)  # other valid weights under the registered name
    fresh = ModelCache(models, "cpu")  # e.g. after a worker restart
    with pytest.raises(ModelFileChanged) as caught:
        fresh.scorer(ref)
    message = str(caught.value)
    assert message.startswith(f"the checkpoint of model version {ref.id} is not the registered")
    assert str(models) not in message and len(message) < 200
    assert fresh.loads == 0
    with pytest.raises(ModelFileChanged):
        fresh.verified_path(ref)
    # The worker reports it like a missing file: a short reason the user is told.
    assert isinstance(caught.value, ModelFileMissing)
    assert isinstance(caught.value, expected_errors())

    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")  # corrupted in place
    with pytest.raises(ModelFileChanged):
        ModelCache(models, "cpu").scorer(ref)


def test_a_version_registered_without_a_sha256_still_loads(
    sqlite_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    models = tmp_path / "models"
    tiny_checkpoint(models / "old.safetensors", seed=2)
    ref = register(sqlite_factory, "old.safetensors", None)
    assert ref.checkpoint_sha256 is None
    ModelCache(models, "cpu").scorer(ref)
    with pytest.raises(ValueError, match="not a sha256"):
        register(sqlite_factory, "bad", "abc")


def test_a_lora_is_verified_before_it_is_switched_in(tmp_path: Path) -> None:
    from worker.pipeline_cache import verify_lora

    folder = tmp_path / "lora-1" / "lora"
    folder.mkdir(parents=True)
    (folder / LORA_WEIGHTS_FILE).write_bytes(b"registered weights")
    ref = ModelRef(
        3, "lora-1", "sd-lora-r4", "lora-1/lora", sha256_of_file(folder / LORA_WEIGHTS_FILE)
    )
    verify_lora(ref, folder)
    (folder / LORA_WEIGHTS_FILE).write_bytes(b"swapped weights")
    with pytest.raises(ModelFileChanged, match="model version 3 is not the registered file"):
        verify_lora(ref, folder)
    verify_lora(ModelRef(4, "old", "sd-lora-r4", "lora-1/lora"), folder)  # none registered


# --- `hps registry add` ---


@pytest.fixture
def cli_env(sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HPS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    monkeypatch.delenv("MODELS_DIR", raising=False)
    get_settings.cache_clear()
    (tmp_path / "models").mkdir(exist_ok=True)
    yield tmp_path / "models"
    get_settings.cache_clear()


def hps(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    from cli.main import main

    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def add(
    capsys: pytest.CaptureFixture[str], path: Path, *extra: str, name: str | None = None
) -> tuple[int, str, str]:
    options = ["--name", name or path.name, "--arch", "tiny", "--checkpoint", str(path)]
    return hps(capsys, "registry", "add", *options, *extra)


def test_registry_add_records_and_checks_the_sha256(
    cli_env: Path, sqlite_factory: sessionmaker[Session], capsys: pytest.CaptureFixture[str]
) -> None:
    plain = tiny_checkpoint(cli_env / "plain.safetensors", seed=0)
    code, out, err = add(capsys, plain)
    assert code == 0, err
    view = json.loads(out)
    assert view["checkpoint_sha256"] == sha256_of_file(plain)
    assert view["sha256_checked_against"].startswith("nothing")

    fetched = tiny_checkpoint(cli_env / "fetched.safetensors", seed=1)
    write_sidecar(fetched, sha256_of_file(fetched))  # as `hps models fetch` leaves it
    code, out, err = add(capsys, fetched)
    assert code == 0, err
    assert json.loads(out)["sha256_checked_against"] == "fetched.safetensors.sha256"

    code, out, err = add(capsys, plain, "--sha256", sha256_of_file(plain).upper(), name="pin")
    assert code == 0 and json.loads(out)["sha256_checked_against"] == "--sha256"

    # The file no longer is what was fetched (or pinned): nothing is registered.
    tiny_checkpoint(fetched, seed=2)
    code, out, err = add(capsys, fetched)
    assert code == 2 and "but fetched.safetensors.sha256 says" in err and "not registered" in err
    code, out, err = add(capsys, plain, "--sha256", "0" * 64)
    assert code == 2 and "but --sha256 says 0000" in err
    code, out, err = add(capsys, plain, "--sha256", "xyz")
    assert code == 2 and "not a sha256" in err
    with sqlite_factory() as session:
        assert len(session.scalars(select(ModelVersion)).all()) == 3

    code, out, err = hps(capsys, "registry", "list")
    assert code == 0
    assert {v["name"]: v["checkpoint_sha256"] for v in json.loads(out)}["plain.safetensors"] == (
        sha256_of_file(plain)
    )


def test_registry_add_of_a_lora_hashes_its_weights_file(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = cli_env / "lora-x" / "lora"
    folder.mkdir(parents=True)
    (folder / LORA_WEIGHTS_FILE).write_bytes(b"lora weights")
    code, out, err = add(capsys, folder, "--kind", "lora")
    assert code == 0, err
    view = json.loads(out)
    assert view["checkpoint_key"] == "lora-x/lora"
    assert view["checkpoint_sha256"] == sha256_of_file(folder / LORA_WEIGHTS_FILE)
    code, out, err = add(capsys, folder / LORA_WEIGHTS_FILE, "--kind", "lora")
    assert code == 2 and "no LoRA folder" in err


# --- the train job, in this process ---


def test_the_train_job_verifies_its_base_and_registers_what_it_wrote(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from config import load_settings
    from db.engine import run_transaction
    from db.jobs import create_job, start_job
    from db.registry import promote_model_version
    from jobqueue.contracts import TrainParams
    from tests.worker.test_jobs_e2e import GUILD, community
    from worker.lifecycle import JobContext, finish
    from worker.runtime import Runtime
    from worker.tasks.training import train_candidate, training_model_input

    monkeypatch.chdir(tmp_path)
    rt = Runtime(load_settings(database_url=sqlite_url, hps_data_dir=tmp_path, worker_device="cpu"))
    assert rt.settings.models_dir is not None
    base = tiny_checkpoint(rt.settings.models_dir / "base.safetensors", seed=4)
    ref = register(rt.factory, "base.safetensors", sha256_of_file(base))
    run_transaction(rt.factory, lambda session: promote_model_version(session, ref.id))
    community(rt.factory, rt.store, 60, seed=5)  # type: ignore[arg-type]

    def context() -> JobContext[TrainParams]:
        params = TrainParams(lr=1e-3, steps=2, batch_size=8)
        job_id = run_transaction(
            rt.factory,
            lambda session: start_job(session, create_job(session, "train", params.stored()).id).id,
        )
        # The community's server (tests.worker.test_jobs_e2e.GUILD): its admin's train job.
        return JobContext(job_id, "train", params, None, rt, guild_id=GUILD)

    # The stored model input is worked out once per job, for the snapshot and the trainer.
    worked_out: list[str | None] = []

    def counted(arch: str | None) -> tuple[str, int] | None:
        worked_out.append(arch)
        return training_model_input(arch)

    monkeypatch.setattr("worker.tasks.training.training_model_input", counted)
    job = context()
    outcome = finish(rt, job.job_id, train_candidate(job)).stored()  # as run_job finishes it
    assert worked_out == ["tiny"]
    with rt.factory() as session:
        version = get_model_version(session, outcome["model_version_id"])
        written = rt.settings.models_dir / version.checkpoint_key
        assert version.checkpoint_sha256 == sha256_of_file(written)

    tiny_checkpoint(base, seed=5)  # the active model's file swapped
    with pytest.raises(ModelFileChanged, match=f"model version {ref.id} is not the registered"):
        train_candidate(context())


def test_registry_add_for_a_guild_activates_it_there_only(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = tiny_checkpoint(cli_env / "global.safetensors", seed=0)
    code, out, err = add(capsys, base, "--activate")
    assert code == 0, err
    assert json.loads(out)["guild_id"] is None
    own = tiny_checkpoint(cli_env / "own.safetensors", seed=1)
    code, out, err = add(capsys, own, "--guild", "42", "--activate")
    assert code == 0, err
    assert json.loads(out)["guild_id"] == 42
    code, out, err = hps(capsys, "registry", "list")
    statuses = {(v["name"], v["guild_id"]): v["status"] for v in json.loads(out)}
    # Both stay active: one globally, one for guild 42 (the global one is not retired).
    assert statuses == {("global.safetensors", None): "active", ("own.safetensors", 42): "active"}
