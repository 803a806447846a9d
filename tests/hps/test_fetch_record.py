"""One reading of a fetch record (``MODELS_DIR/catalogue/NAME.json``), shared by the two paths
that load a fetched catalogue entry offline: a base checkpoint (``hps train --base NAME``, the
train job's ``TRAIN_BASE``: :func:`hps.fetch.fetched_checkpoint`) and an SD pipeline
(``SD_PIPELINE=NAME``: :func:`hps.diffusion.pipelines.catalogue_pipeline`). Whatever is amiss,
both raise the one FetchRecordError, naming the entry, the file, the sha256s and the fix."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hps.diffusion.pipelines import catalogue_pipeline
from hps.fetch import FetchRecordError, fetched_checkpoint, record_path, verified_record

BASE, PIPELINE = "openai-vit-l-14", "sd-1.5"  # real catalogue names; records and files are ours
BASE_FILES = {"open_clip_model.safetensors": b"base weights"}
PIPELINE_FILES = {
    "unet/diffusion_pytorch_model.fp16.safetensors": b"unet",
    "vae/diffusion_pytorch_model.fp16.safetensors": b"vae",
    "text_encoder/model.fp16.safetensors": b"text",
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_record(models_dir: Path, name: str, files: dict[str, bytes], **fields: Any) -> Path:
    """What ``hps models fetch NAME`` leaves: the files in a snapshot folder (each a link to
    its blob, as in the Hugging Face cache) and the record; returns the folder."""
    folder = models_dir / "hf" / name / "snapshot"
    for file, data in files.items():
        blob = models_dir / "hf" / name / "blobs" / sha256(data)
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        (folder / file).parent.mkdir(parents=True, exist_ok=True)
        (folder / file).symlink_to(blob)
    document = {
        "name": name,
        "folder": str(folder.relative_to(models_dir)),
        "files": {f: {"sha256": sha256(d), "bytes": len(d)} for f, d in files.items()},
        **fields,
    }
    record_path(models_dir, name).parent.mkdir(parents=True, exist_ok=True)
    record_path(models_dir, name).write_text(json.dumps(document))
    return folder


Loader = Callable[[Path], Any]


def load_base(models_dir: Path) -> Any:
    return fetched_checkpoint(models_dir, BASE)


def load_pipeline_record(models_dir: Path) -> Any:
    return catalogue_pipeline(PIPELINE, models_dir)


# (name, its files, its record's fields, how it is loaded)
PATHS = {
    "checkpoint": (
        BASE,
        BASE_FILES,
        {"architecture": "vit-l-14", "checkpoint": "open_clip_model.safetensors"},
        load_base,
    ),
    "sd-pipeline": (
        PIPELINE,
        PIPELINE_FILES,
        {"pipeline_class": "StableDiffusionPipeline", "variant": "fp16", "kind": "pipeline"},
        load_pipeline_record,
    ),
}
paths = pytest.mark.parametrize("which", list(PATHS))


@pytest.fixture(autouse=True)
def builtin_catalogue(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HPS_CATALOGUE", raising=False)


def refused(load: Loader, models_dir: Path) -> str:
    with pytest.raises(FetchRecordError) as caught:
        load(models_dir)
    assert type(caught.value) is FetchRecordError  # the one error type, on both paths
    return str(caught.value)


def test_a_good_record_is_read_typed_and_verified(tmp_path: Path) -> None:
    folder = write_record(tmp_path, BASE, BASE_FILES, **PATHS["checkpoint"][2])
    path, digest, arch = fetched_checkpoint(tmp_path, BASE)
    assert (path, digest, arch) == (
        folder / "open_clip_model.safetensors",
        sha256(BASE_FILES["open_clip_model.safetensors"]),
        "vit-l-14",
    )
    folder = write_record(tmp_path, PIPELINE, PIPELINE_FILES, **PATHS["sd-pipeline"][2])
    record = catalogue_pipeline(PIPELINE, tmp_path)
    assert record is not None and record == verified_record(tmp_path, PIPELINE)
    assert (record.name, record.folder, record.variant, record.pipeline_class) == (
        PIPELINE,
        folder,
        "fp16",
        "StableDiffusionPipeline",
    )
    assert {f.name: (f.path, f.sha256, f.size) for f in record.files} == {
        name: (folder / name, sha256(data), len(data)) for name, data in PIPELINE_FILES.items()
    }
    assert catalogue_pipeline("not-a-catalogue-name", tmp_path) is None


@paths
def test_a_missing_record_says_to_fetch(tmp_path: Path, which: str) -> None:
    name, *_, load = PATHS[which]
    message = refused(load, tmp_path)
    assert f"{name} is not fetched yet (no {record_path(tmp_path, name)})" in message
    assert message.endswith(f"run hps models fetch {name}")


MALFORMED = {
    "not json": ("{'files':", "cannot read its fetch record"),
    "not an object": ("[]", "malformed (not a JSON object)"),
    "another entry's": ({"name": "sdxl"}, "malformed (it records 'sdxl')"),
    "no folder": ({"folder": None}, "malformed (no folder)"),
    "no files": ({"files": {}}, "malformed (no files)"),
    "no sha256": (
        {"files": {"model.safetensors": {"bytes": 3}}},
        "model.safetensors has no sha256",
    ),
    "outside its folder": (
        {"files": {"../../elsewhere.safetensors": {"sha256": "0" * 64}}},
        "'../../elsewhere.safetensors' is not inside its folder",
    ),
}


@paths
@pytest.mark.parametrize("how", list(MALFORMED))
def test_a_malformed_record_is_refused(tmp_path: Path, which: str, how: str) -> None:
    name, files, fields, load = PATHS[which]
    write_record(tmp_path, name, files, **fields)
    change, expected = MALFORMED[how]
    path = record_path(tmp_path, name)
    if isinstance(change, str):
        path.write_text(change)
    else:
        path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    message = refused(load, tmp_path)
    assert message.startswith(f"{name}: ") and expected in message, message
    assert str(path) in message and message.endswith(f"run hps models fetch {name}")


@paths
def test_a_missing_file_is_refused(tmp_path: Path, which: str) -> None:
    name, files, fields, load = PATHS[which]
    folder = write_record(tmp_path, name, files, **fields)
    file, data = list(files.items())[-1]
    (folder / file).resolve().unlink()  # the blob: the cache's link dangles
    message = refused(load, tmp_path)
    assert message == (
        f"{name}: {file} is missing ({folder / file}; expected sha256 {sha256(data)}): "
        f"run hps models fetch {name}"
    )


@paths
def test_an_unreadable_file_is_refused(tmp_path: Path, which: str) -> None:
    name, files, fields, load = PATHS[which]
    folder = write_record(tmp_path, name, files, **fields)
    file = list(files)[-1]
    (folder / file).unlink()
    (folder / file).mkdir()  # a folder where the file was
    message = refused(load, tmp_path)
    assert message.startswith(f"{name}: {file} cannot be read (") and str(folder / file) in message
    assert message.endswith(f"delete {folder / file} and run hps models fetch {name}")


@paths
def test_a_changed_file_is_refused(tmp_path: Path, which: str) -> None:
    name, files, fields, load = PATHS[which]
    folder = write_record(tmp_path, name, files, **fields)
    file, data = list(files.items())[-1]
    blob = (folder / file).resolve()
    blob.write_bytes(data + b"!")
    message = refused(load, tmp_path)
    assert message == (
        f"{name}: {file} changed since it was fetched ({folder / file}: sha256 is "
        f"{sha256(data + b'!')}, expected {sha256(data)}): delete {blob} and run hps models "
        f"fetch {name}"
    )


def test_a_base_needs_one_checkpoint_among_its_files(tmp_path: Path) -> None:
    write_record(tmp_path, BASE, {"a.safetensors": b"a", "b.safetensors": b"b"})
    message = refused(load_base, tmp_path)
    assert re.search(
        r"no single checkpoint file among \['a.safetensors', 'b.safetensors'\]", message
    )
    assert message.startswith(f"{BASE}: ") and message.endswith(f"run hps models fetch {BASE}")
