"""``hps models fetch NAME``: catalogue entries from a Hugging Face Hub (the local TLS one of
tests/hf_server.py, trusted through the usual CA-bundle variables), cached, verified, recorded,
registered and activated; resumed after a cut connection; refused on a wrong sha256; pinned to
a revision; reused offline; an SD pipeline named by its catalogue name."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cli.main import main
from db.models import ModelKind, ModelVersion
from db.registry import get_active_model
from hps.architectures import build_model, get_architecture
from hps.catalogue import CATALOGUE, COMMIT_SHA
from hps.checkpoints import load_checkpoint
from hps.diffusion.pipelines import build_tiny_pipeline, open_pipeline
from hps.factory import load_model
from hps.fetch import FetchRecordError
from tests.hf_server import HubServer

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "hf_secret_test_token_0123456789"
HPS_REPO, PICK_REPO, SD_REPO, LIAR_REPO = (
    "test-org/hps-tiny",
    "test-org/pickscore-tiny",
    "test-org/sd-tiny",
    "test-org/liar",
)
HPS_FILE = "HPS_tiny.pt"
BIG_REPO, BIG_FILE = "test-org/big", "big.safetensors"
BASE_REPO, BASE_FILE = "test-org/clip-tiny-base", "open_clip_model.safetensors"
# More than huggingface_hub's 10 MiB read chunk: a cut halfway leaves whole chunks to resume from.
BIG_BYTES = 24 * 1024 * 1024


def torch_checkpoint(seed: int) -> bytes:
    """A tiny open_clip state dict saved like HPS v2's files: {'state_dict': ...}."""
    torch.manual_seed(seed)
    buffer = io.BytesIO()
    torch.save({"state_dict": build_model(get_architecture("tiny")).state_dict()}, buffer)
    return buffer.getvalue()


def open_clip_safetensors(seed: int) -> bytes:
    """A tiny open_clip CLIP's weights as open_clip publishes a base on the Hub (plain
    safetensors, no metadata of ours)."""
    from safetensors.torch import save

    torch.manual_seed(seed)
    state = build_model(get_architecture("tiny")).state_dict()
    return save({name: tensor.contiguous() for name, tensor in state.items()})


def folder_files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def pickscore_files(folder: Path) -> dict[str, bytes]:
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(1)
    model = CLIPModel(CLIPConfig(**get_architecture("pickscore-tiny").model_cfg)).eval()
    model.save_pretrained(folder, safe_serialization=True)
    return {name: (folder / name).read_bytes() for name in ("config.json", "model.safetensors")}


def catalogue(pinned_commit: str) -> list[dict[str, Any]]:
    """The tests' entries, in the format of $HPS_CATALOGUE."""
    hps = {
        "kind": "hps",
        "description": "tiny",
        "repo": HPS_REPO,
        "revision": "main",
        "files": [HPS_FILE],
        "architecture": "tiny",
        "checkpoint": HPS_FILE,
    }
    return [
        {**hps, "name": "hps-tiny"},
        {**hps, "name": "hps-tiny-pinned", "revision": pinned_commit},
        {**hps, "name": "hps-tiny-bad", "sha256": {HPS_FILE: "0" * 64}},
        {
            **hps,
            "name": "pickscore-tiny",
            "repo": PICK_REPO,
            "files": ["config.json", "model.safetensors"],
            "architecture": "pickscore-tiny",
            "checkpoint": "model.safetensors",
        },
        {
            "name": "liar",
            "kind": "base",
            "description": "announced with a wrong sha256",
            "repo": LIAR_REPO,
            "revision": "main",
            "files": ["weights.safetensors"],
        },
        {
            "name": "clip-tiny-base",
            "kind": "base",
            "description": "a pretrained CLIP to train from",
            "repo": BASE_REPO,
            "revision": "main",
            "files": [BASE_FILE],
            "architecture": "tiny",
            "checkpoint": BASE_FILE,
        },
        {
            "name": "big",
            "kind": "base",
            "description": "larger than a read chunk",
            "repo": BIG_REPO,
            "revision": "main",
            "files": [BIG_FILE],
        },
        {
            "name": "sd-tiny",
            "kind": "pipeline",
            "description": "tiny SD",
            "repo": SD_REPO,
            "revision": "main",
            "files": list(CATALOGUE["sd-1.5"].files),
            "pipeline_class": "StableDiffusionPipeline",
            "variant": "fp16",
        },
    ]


@pytest.fixture(scope="module")
def content(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What the hub serves: two revisions of a tiny HPS checkpoint, a tiny PickScore, a tiny
    SD pipeline in fp16-variant files, and a file the hub lies about."""
    folder = tmp_path_factory.mktemp("hub-content")
    pipe = build_tiny_pipeline(seed=3)
    pipe.save_pretrained(folder / "sd", variant="fp16", safe_serialization=True)
    return {
        "v1": torch_checkpoint(1),
        "v2": torch_checkpoint(2),
        "pick": pickscore_files(folder / "pick"),
        "sd": folder_files(folder / "sd"),
        "sd_unet": {k: v.clone() for k, v in pipe.unet.state_dict().items()},
        "big": os.urandom(BIG_BYTES),
        "base": open_clip_safetensors(5),
    }


def make_hub(folder: Path, content: dict[str, Any]) -> tuple[HubServer, str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    hub = HubServer(folder)
    old = hub.add_commit(HPS_REPO, {HPS_FILE: content["v1"]})
    hub.add_commit(HPS_REPO, {HPS_FILE: content["v2"], "README.md": b"# tiny\n"})
    hub.add_commit(PICK_REPO, content["pick"])
    hub.add_commit(SD_REPO, content["sd"])
    hub.add_commit(BIG_REPO, {BIG_FILE: content["big"]})
    hub.add_commit(BASE_REPO, {BASE_FILE: content["base"]})
    hub.add_commit(LIAR_REPO, {"weights.safetensors": b"\0" * 4096})
    hub.lie_about("weights.safetensors")
    catalogue_file = folder / "catalogue.json"
    catalogue_file.write_text(json.dumps(catalogue(old)))
    return hub.start(), old, catalogue_file


@pytest.fixture(scope="module")
def hub(
    tmp_path_factory: pytest.TempPathFactory, content: dict[str, Any]
) -> Iterator[tuple[HubServer, str, Path]]:
    server = make_hub(tmp_path_factory.mktemp("hub"), content)
    yield server
    server[0].stop()


class Fetcher:
    """``hps`` in a subprocess (huggingface_hub reads its variables at import), against the
    test database, a fresh models directory and the local hub."""

    def __init__(self, hub: HubServer, catalogue_file: Path, tmp: Path, pg_url: str) -> None:
        self.hub, self.tmp = hub, tmp
        self.models_dir = tmp / "models"
        self.env = {
            **os.environ,
            **hub.env(),
            "PYTHONPATH": str(ROOT),
            "DATABASE_URL": pg_url,
            "MODELS_DIR": str(self.models_dir),
            "HPS_CATALOGUE": str(catalogue_file),
            "HF_HOME": str(tmp / "hf-home"),  # no user token file, no user cache
            "HF_TOKEN": TOKEN,
        }
        self.env.pop("HF_HUB_OFFLINE", None)

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return self.hps("models", *args, **env)

    def hps(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "cli.main", *args],
            cwd=self.tmp,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert TOKEN not in result.stdout + result.stderr  # the token is never logged
        return result

    def fetch(self, *args: str, **env: str) -> dict[str, Any]:
        result = self.run("fetch", *args, **env)
        assert result.returncode == 0, result.stderr
        value: dict[str, Any] = json.loads(result.stdout)
        return value

    def cache_files(self) -> list[Path]:
        return [p for p in (self.models_dir / "hf").rglob("*") if p.is_file()]


@pytest.fixture
def fetcher(hub: tuple[HubServer, str, Path], tmp_path: Path, pg_url: str) -> Iterator[Fetcher]:
    hub[0].requests.clear()
    yield Fetcher(hub[0], hub[2], tmp_path, pg_url)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def versions(factory: sessionmaker[Session]) -> list[ModelVersion]:
    with factory() as session:
        return list(session.scalars(select(ModelVersion).order_by(ModelVersion.id)))


def test_fetch_registers_verifies_and_activates(
    fetcher: Fetcher, content: dict[str, Any], pg_factory: sessionmaker[Session]
) -> None:
    hub = fetcher.hub
    fetched = fetcher.fetch("hps-tiny", "--activate")
    facts = fetched["files"][HPS_FILE]
    assert facts == {
        "sha256": sha256(content["v2"]),
        "bytes": len(content["v2"]),
        "checked_against": "hub lfs sha256",
    }
    assert fetched["commit"] == hub.repos[HPS_REPO].refs["main"] and not fetched["pinned"]
    version = fetched["model_version"]
    assert (version["status"], version["guild_id"], version["architecture"]) == (
        "active",
        None,
        "tiny",
    )
    assert version["checkpoint_sha256"] == sha256(content["v2"])
    # The token went to the hub; the registered file is inside MODELS_DIR and loads, verified.
    assert all(auth == f"Bearer {TOKEN}" for *_, auth in hub.requests)
    path = fetcher.models_dir / version["checkpoint_key"]
    assert not Path(version["checkpoint_key"]).is_absolute() and path.is_file()
    assert path.with_name(HPS_FILE + ".sha256").read_text().split()[0] == facts["sha256"]
    load_model("tiny", path, sha256=version["checkpoint_sha256"])
    record = json.loads((fetcher.models_dir / "catalogue" / "hps-tiny.json").read_text())
    assert record["files"][HPS_FILE]["sha256"] == facts["sha256"]

    guild = fetcher.fetch("pickscore-tiny", "--activate", "--guild", "42")["model_version"]
    assert (guild["guild_id"], guild["status"], guild["name"]) == (42, "active", "pickscore-tiny")
    # A Hugging Face folder: config.json lies beside the registered model.safetensors link.
    load_model("pickscore-tiny", fetcher.models_dir / guild["checkpoint_key"])
    with pg_factory() as session:
        active_global = get_active_model(session, ModelKind.hps)
        active_guild = get_active_model(session, ModelKind.hps, 42)
        assert active_global is not None and active_global.id == version["id"]
        assert active_guild is not None and active_guild.id == guild["id"]

    # Fetching again: the cache answers (no file downloaded), the same version is reused.
    downloads = [r for r in hub.requests if r[0] == "GET" and "/resolve/" in r[1]]
    again = fetcher.fetch("hps-tiny", "--activate")
    assert again["model_version"]["id"] == version["id"]
    assert [r for r in hub.requests if r[0] == "GET" and "/resolve/" in r[1]] == downloads
    assert [v.name for v in versions(pg_factory)] == ["hps-tiny", "pickscore-tiny"]


def test_resume_after_a_cut_connection(fetcher: Fetcher, content: dict[str, Any]) -> None:
    fetcher.hub.cut_next(BIG_FILE)
    fetched = fetcher.fetch("big")
    assert fetched["files"][BIG_FILE]["sha256"] == sha256(content["big"])
    gets = [r for r in fetcher.hub.requests if r[0] == "GET" and r[1].endswith(BIG_FILE)]
    assert len(gets) == 2 and gets[0][2] is None, gets
    resume = gets[1][2] or ""
    assert resume.startswith("bytes="), gets
    assert 0 < int(resume.removeprefix("bytes=").split("-")[0]) <= BIG_BYTES // 2


@pytest.mark.parametrize(
    ("name", "repo"), [("hps-tiny-bad", HPS_REPO), ("liar", LIAR_REPO)], ids=["pinned", "hub"]
)
def test_digest_mismatch_is_refused(
    fetcher: Fetcher, pg_factory: sessionmaker[Session], name: str, repo: str
) -> None:
    result = fetcher.run("fetch", name, *(["--activate"] if name.startswith("hps") else []))
    assert result.returncode == 2, result.stderr
    assert "sha256 is" in result.stderr and "Traceback" not in result.stderr
    assert versions(pg_factory) == []
    assert not (fetcher.models_dir / "catalogue" / f"{name}.json").exists()
    left = [p for p in fetcher.cache_files() if "blobs" in p.parts or "snapshots" in p.parts]
    assert left == [], left  # no blob, no half-written file, no dangling link
    assert [p for p in (fetcher.models_dir / "hf").rglob("*") if p.is_symlink()] == []


def test_the_pinned_revision_is_fetched(
    fetcher: Fetcher, hub: tuple[HubServer, str, Path], content: dict[str, Any]
) -> None:
    server, old, _ = hub
    assert COMMIT_SHA.fullmatch(old) and old != server.repos[HPS_REPO].refs["main"]
    fetched = fetcher.fetch("hps-tiny-pinned")
    assert fetched["pinned"] and fetched["commit"] == old
    assert fetched["files"][HPS_FILE]["sha256"] == sha256(content["v1"])
    assert all("/main" not in path for _, path, *_ in server.requests)


def test_offline_reuse_of_the_cache(
    tmp_path: Path, content: dict[str, Any], pg_url: str, pg_factory: sessionmaker[Session]
) -> None:
    server, _, catalogue_file = make_hub(tmp_path / "hub", content)
    fetcher = Fetcher(server, catalogue_file, tmp_path, pg_url)
    try:
        first = fetcher.fetch("hps-tiny", "--activate")
    finally:
        server.stop()
    for env in ({"HF_HUB_OFFLINE": "1"}, {}):  # offline mode; and the hub simply unreachable
        again = fetcher.fetch("hps-tiny", "--activate", **env)
        assert again["files"] == first["files"] and again["commit"] == first["commit"]
        assert again["model_version"]["id"] == first["model_version"]["id"]
    missing = fetcher.run("fetch", "pickscore-tiny", HF_HUB_OFFLINE="1")
    assert missing.returncode == 2 and "error:" in missing.stderr


def test_a_catalogue_name_names_the_sd_pipeline(
    fetcher: Fetcher, content: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HPS_CATALOGUE", fetcher.env["HPS_CATALOGUE"])
    with pytest.raises(
        FetchRecordError, match=r"sd-tiny is not fetched yet .*run hps models fetch sd-tiny"
    ):
        open_pipeline("sd-tiny", "cpu", models_dir=fetcher.models_dir)
    refused = fetcher.run("fetch", "sd-tiny", "--activate")
    assert refused.returncode == 2 and "SD_PIPELINE=sd-tiny" in refused.stderr
    typo = fetcher.run("fetch-defaults", "sd-tiny", "no-such-model --activate")
    assert typo.returncode == 2 and "no-such-model" in typo.stderr
    assert fetcher.hub.requests == []  # every item is checked before anything downloads

    result = fetcher.run("fetch-defaults", HPS_FETCH_MODELS="sd-tiny")
    assert result.returncode == 0, result.stderr
    (fetched,) = json.loads(result.stdout)
    assert fetched["kind"] == "pipeline" and "model_version" not in fetched
    assert all(name.endswith(".fp16.safetensors") for name in fetched["files"])

    pipe = open_pipeline("sd-tiny", "cpu", models_dir=fetcher.models_dir)
    for key, value in content["sd_unet"].items():
        assert torch.equal(pipe.unet.state_dict()[key], value), key
    from worker.pipeline_cache import load_configured_pipeline

    monkeypatch.setenv("MODELS_DIR", str(fetcher.models_dir))  # the worker's SD_PIPELINE
    assert type(load_configured_pipeline("sd-tiny", "cpu")).__name__ == "StableDiffusionPipeline"

    unet = next(Path(fetched["folder"]).glob("unet/*.fp16.safetensors"))
    blob = unet.resolve()
    blob.write_bytes(unet.read_bytes()[:-1] + b"\1")
    with pytest.raises(FetchRecordError, match="changed since it was fetched") as changed:
        open_pipeline("sd-tiny", "cpu", models_dir=fetcher.models_dir)
    # What the message says to do mends it: delete the file, fetch again.
    fix = f"delete {blob} and run hps models fetch sd-tiny"
    assert str(changed.value).endswith(fix), changed.value
    blob.unlink()
    again = fetcher.run("fetch", "sd-tiny")
    assert again.returncode == 0, again.stderr
    mended = open_pipeline("sd-tiny", "cpu", models_dir=fetcher.models_dir).unet.state_dict()
    assert all(torch.equal(mended[k], v) for k, v in content["sd_unet"].items())


def test_the_catalogue_is_listed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "list"]) == 0
    listed = json.loads(capsys.readouterr().out)["catalogue"]
    assert {"hps-v1", "hps-v2", "hps-v2.1", "pickscore-v1", "sd-1.5", "sdxl"} <= set(listed)
    assert listed["hps-v2.1"]["source"] == "xswu/HPSv2@main (UNPINNED)"
    assert listed["pickscore-v1"]["architecture"] == "pickscore"
    assert listed["hps-v1"]["source"] == "not on the Hub"
    for name, entry in CATALOGUE.items():
        # Never an invented sha: an entry is pinned by a commit sha, or says it is not.
        assert entry.pinned or "unpinned" in entry.note or entry.repo is None, name
        assert all(not f.endswith(".bin") for f in entry.files), name  # no pickles fetched
    assert "unet/*.fp16.safetensors" in CATALOGUE["sd-1.5"].files


def test_an_entry_not_on_the_hub_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "fetch", "hps-v1"]) == 2
    assert "cannot be fetched from the Hub" in capsys.readouterr().err


def test_the_models_service_command_line_parses() -> None:
    from cli.main import build_parser

    args = build_parser().parse_args(["models", "fetch-defaults"])
    assert args.handler.__name__ == "cmd_models_fetch_defaults"


def test_training_starts_from_a_fetched_base_offline(
    fetcher: Fetcher, content: dict[str, Any], tmp_path: Path
) -> None:
    """``hps train --base NAME``: the fetched CLIP's weights (sha256 verified) are where the
    fine-tuning starts, with the hub gone and HF_HUB_OFFLINE=1; its arch is the default."""
    from hps.training.manifests import load_manifest
    from tests.hps.datasets import write_export_manifest, write_planted_sets

    manifest = write_export_manifest(
        tmp_path / "train.jsonl", write_planted_sets(tmp_path / "img", 6, seed=3)
    )
    assert load_manifest(manifest)
    refused = fetcher.hps("train", "--base", "clip-tiny-base", "--data", str(manifest),
                          "--out", str(tmp_path / "run0"), "--steps", "1")  # fmt: skip
    assert refused.returncode == 2 and "run hps models fetch clip-tiny-base" in refused.stderr
    fetched = fetcher.fetch("clip-tiny-base")
    assert "model_version" not in fetched  # a base is not a scorer: nothing registered
    offline = {"HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "https://127.0.0.1:9"}
    result = fetcher.hps("train", "--base", "clip-tiny-base", "--data", str(manifest),
                         "--out", str(tmp_path / "run"), "--steps", "2", "--batch-size", "2",
                         "--lr", "1e-3", "--device", "cpu", **offline)  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["steps"] == 2
    _, metadata = load_checkpoint(Path(report["checkpoint"]))
    assert metadata["architecture"] == "tiny"
    assert metadata["base"]["sha256"] == sha256(content["base"]), metadata["base"]
    assert metadata["trained_on"]["base"] == "clip-tiny-base"
    assert metadata["trained_on"]["base_sha256"] == sha256(content["base"])

    # A changed file is refused (the sha256 recorded at fetch time), in one line.
    record = json.loads((fetcher.models_dir / "catalogue" / "clip-tiny-base.json").read_text())
    weights = fetcher.models_dir / record["folder"] / BASE_FILE
    weights.unlink()  # the cache's link; the blob stays untouched
    weights.write_bytes(content["base"][:-1] + b"\0")
    changed = fetcher.hps("train", "--base", "clip-tiny-base", "--data", str(manifest),
                          "--out", str(tmp_path / "run2"), "--steps", "1", **offline)  # fmt: skip
    assert changed.returncode == 2 and "sha256" in changed.stderr.lower(), changed.stderr
    assert f"{BASE_FILE} changed since it was fetched" in changed.stderr, changed.stderr
    assert f"delete {weights} and run hps models fetch clip-tiny-base" in changed.stderr
