"""A checkpoint with an expected sha256 is loaded from the bytes that were hashed.

The old path hashed the file (streamed) and then read it again to deserialise it: a writer of
``MODELS_DIR`` who replaced the file between the two reads got unverified weights loaded. The
race is made deterministic here by standing in for ``hashlib`` inside ``hps.checkpoints``: the
moment a digest is taken, the file is atomically replaced by another valid checkpoint."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

import hps.checkpoints as checkpoints
from hps.architectures import build_model, get_architecture
from hps.checkpoints import (
    CheckpointError,
    ChecksumMismatch,
    detect_format,
    load_checkpoint,
    load_hf_checkpoint,
    read_verified,
    save_checkpoint,
    sha256_of_file,
    verify_sha256,
    write_sidecar,
)
from hps.factory import load_model

HF_ARCH = "pickscore-tiny"
State = dict[str, torch.Tensor]


def tiny_model(seed: int, arch: str = "tiny") -> torch.nn.Module:
    """A random-weight model of ``arch`` (different seeds, different weights)."""
    torch.manual_seed(seed)
    model = build_model(get_architecture(arch))
    with torch.no_grad():  # make every tensor differ between seeds (some init at zero)
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    return model


def contiguous_state(model: torch.nn.Module) -> State:
    return {key: value.detach().contiguous() for key, value in model.state_dict().items()}


def write_project(path: Path, seed: int) -> None:
    save_checkpoint(path, tiny_model(seed), {"architecture": "tiny", "metrics": {"seed": seed}})


def write_open_clip(path: Path, seed: int) -> None:
    from safetensors.torch import save_file

    save_file(contiguous_state(tiny_model(seed)), str(path))


def write_torch_zip(path: Path, seed: int) -> None:
    torch.save({"state_dict": tiny_model(seed).state_dict()}, path)


def write_torch_legacy(path: Path, seed: int) -> None:
    # A bare state dict in the pre-zip pickle format (HPS v1's hpc.pth era).
    torch.save(tiny_model(seed).state_dict(), path, _use_new_zipfile_serialization=False)


def write_hf_folder(folder: Path, seed: int) -> None:
    """config.json + model.safetensors as transformers saves a PickScore-architecture CLIP."""
    tiny_model(seed, HF_ARCH).save_pretrained(folder, safe_serialization=True)


@dataclass(frozen=True)
class Case:
    """One checkpoint format: how to write it, the architecture to pass, which file is hashed
    (the file itself, or a Hugging Face folder's weights)."""

    name: str
    write: Callable[[Path, int], None]
    arch: str | None
    file_name: str
    hf: bool = False

    def make(self, root: Path, seed: int) -> tuple[Path, Path]:
        """(what to pass to load_model, the file whose sha256 is expected)."""
        if self.hf:
            folder = root / f"{self.name}-{seed}"
            self.write(folder, seed)
            return folder, folder / "model.safetensors"
        path = root / f"{seed}-{self.file_name}"
        self.write(path, seed)
        return path, path

    def load(self, path: Path, data: bytes | None = None) -> tuple[State, dict[str, Any]]:
        loader = load_hf_checkpoint if self.hf else load_checkpoint
        return loader(path) if data is None else loader(path, data=data)


CASES = [
    Case("project-safetensors", write_project, None, "model.safetensors"),
    Case("open_clip-safetensors", write_open_clip, "tiny", "open_clip.safetensors"),
    Case("torch-zip", write_torch_zip, "tiny", "hps.pt"),
    Case("torch-legacy-pickle", write_torch_legacy, "tiny", "hpc.pth"),
    Case("hf-pickscore-tiny", write_hf_folder, HF_ARCH, "", hf=True),
]


class SwapAfterHashing:
    """Stands in for the ``hashlib`` module of ``hps.checkpoints``: when a digest is read, the
    real digest is returned and ``target`` is replaced (``os.replace``, as an attacker with
    write access to the folder would) by ``replacement``'s bytes. Once only."""

    def __init__(self, target: Path, replacement: bytes) -> None:
        self.target = target
        self.replacement = replacement
        self.swaps = 0

    def sha256(self, *args: bytes) -> _Digest:
        return _Digest(hashlib.sha256(*args), self)

    def swap(self) -> None:
        if self.swaps:
            return
        staged = self.target.with_name(self.target.name + ".attacker")
        staged.write_bytes(self.replacement)
        os.replace(staged, self.target)
        self.swaps += 1


class _Digest:
    def __init__(self, inner: Any, hook: SwapAfterHashing) -> None:
        self.inner = inner
        self.hook = hook

    def update(self, chunk: bytes) -> None:
        self.inner.update(chunk)

    def hexdigest(self) -> str:
        digest: str = self.inner.hexdigest()
        self.hook.swap()
        return digest


def assert_same_state(actual: State, expected: State) -> None:
    assert set(actual) == set(expected)
    for key, value in expected.items():
        assert actual[key].dtype == value.dtype, key
        assert torch.equal(actual[key], value), key


def assert_differs(a: State, b: State) -> None:
    assert any(not torch.equal(a[key], b[key]) for key in a)


def model_state(loaded_model: torch.nn.Module, keys: State) -> State:
    state = loaded_model.state_dict()
    return {key: state[key] for key in keys}


@dataclass(frozen=True)
class Race:
    """A checkpoint whose file will be swapped for another valid one once it is hashed."""

    path: Path  # what load_model is given
    hashed: Path  # the file whose sha256 is expected
    digest: str  # its sha256 (the original file's)
    original: State
    replacement: State
    hook: SwapAfterHashing


@pytest.fixture
def race(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[Case], Race]:
    """Build the verified checkpoint and a different valid one of the same kind, and arm the
    swap."""

    def arm(case: Case) -> Race:
        path, hashed = case.make(tmp_path, seed=1)
        _, other = case.make(tmp_path / "attacker", seed=2)
        original, _ = case.load(path)
        replacement, _ = case.load(other)
        assert_differs(original, replacement)  # the swap is visible in the weights
        digest = sha256_of_file(hashed)  # before the hook is armed
        hook = SwapAfterHashing(hashed, other.read_bytes())
        monkeypatch.setattr(checkpoints, "hashlib", hook)
        return Race(path, hashed, digest, original, replacement, hook)

    (tmp_path / "attacker").mkdir()
    return arm


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_the_old_hash_then_read_loads_the_swapped_file(
    case: Case, race: Callable[[Case], Race]
) -> None:
    """The hook reproduces the race: checking the file and then reading it (the old two
    steps) passes the check and returns the attacker's weights."""
    armed = race(case)
    verify_sha256(armed.hashed, armed.digest)  # passes: the file was the original when hashed
    assert armed.hook.swaps == 1
    state, _ = case.load(armed.path)
    assert_same_state(state, armed.replacement)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
@pytest.mark.parametrize("expected_from", ["argument", "sidecar"])
def test_a_file_swapped_after_hashing_is_not_loaded(
    case: Case, expected_from: str, race: Callable[[Case], Race]
) -> None:
    armed = race(case)
    if expected_from == "sidecar":
        write_sidecar(armed.hashed, armed.digest)
    sha256 = armed.digest if expected_from == "argument" else None
    loaded = load_model(case.arch, armed.path, sha256=sha256)
    assert armed.hook.swaps == 1  # the file was replaced right after its hash was taken
    assert_same_state(model_state(loaded.model, armed.original), armed.original)
    assert sha256_of_file(armed.hashed) != armed.digest  # what is on disk now is the other file


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_verified_and_streamed_loads_are_identical(case: Case, tmp_path: Path) -> None:
    path, hashed = case.make(tmp_path, seed=3)
    digest = sha256_of_file(hashed)
    data = read_verified(hashed, digest.upper())  # the expected digest is normalised
    assert detect_format(hashed, data) == detect_format(hashed)

    streamed_state, streamed_metadata = case.load(path)
    verified_state, verified_metadata = case.load(hashed, data)
    assert_same_state(verified_state, streamed_state)
    assert verified_metadata == streamed_metadata

    streamed = load_model(case.arch, path)
    verified = load_model(case.arch, path, sha256=digest)
    assert verified.architecture == streamed.architecture
    assert verified.metadata == streamed.metadata
    assert verified.checkpoint == streamed.checkpoint == hashed
    assert_same_state(verified.model.state_dict(), streamed.model.state_dict())
    write_sidecar(hashed, digest)
    by_sidecar = load_model(case.arch, path)
    assert by_sidecar.metadata == streamed.metadata
    assert_same_state(by_sidecar.model.state_dict(), streamed.model.state_dict())


def test_the_formats_keep_their_metadata(tmp_path: Path) -> None:
    """What the identical-loads test compares is not empty: each format's own metadata."""
    formats = {}
    for case in CASES:
        _, hashed = case.make(tmp_path, seed=4)
        _, metadata = case.load(hashed, read_verified(hashed, sha256_of_file(hashed)))
        formats[case.name] = metadata
    assert formats["project-safetensors"]["architecture"] == "tiny"
    assert formats["project-safetensors"]["metrics"] == {"seed": 4}
    assert formats["project-safetensors"]["format"] == "hps-safetensors"
    assert formats["open_clip-safetensors"] == {"format": "open_clip-safetensors"}
    assert formats["torch-zip"] == formats["torch-legacy-pickle"] == {"format": "clip-state-dict"}
    assert formats["hf-pickscore-tiny"] == {"format": "hf-safetensors"}


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_a_mismatch_raises_checksum_mismatch_as_before(case: Case, tmp_path: Path) -> None:
    path, hashed = case.make(tmp_path, seed=5)
    actual = sha256_of_file(hashed)
    wrong = "0" * 64
    with pytest.raises(ChecksumMismatch) as streamed:
        verify_sha256(hashed, wrong)
    with pytest.raises(ChecksumMismatch) as caught:
        load_model(case.arch, path, sha256=wrong)
    assert str(caught.value) == f"{hashed}: sha256 is {actual}, expected {wrong}"
    assert str(caught.value) == str(streamed.value)
    assert (caught.value.source, caught.value.actual, caught.value.expected) == (
        hashed,
        actual,
        wrong,
    )
    write_sidecar(hashed, "1" * 64)  # a sidecar that no longer fits the file
    with pytest.raises(ChecksumMismatch, match=rf"sha256 is {actual}, expected 1111"):
        load_model(case.arch, path)


def test_errors_of_a_verified_load_are_those_of_a_streamed_one(tmp_path: Path) -> None:
    absent = tmp_path / "absent.pth"
    with pytest.raises(CheckpointError, match="no such checkpoint file") as caught:
        load_model("tiny", absent, sha256="0" * 64)
    assert not isinstance(caught.value, ChecksumMismatch)
    assert str(caught.value) == f"{absent}: no such checkpoint file"

    short = tmp_path / "short.pt"
    short.write_bytes(b"\x80\x02")
    with pytest.raises(CheckpointError, match=r"too short to be a checkpoint \(2 bytes\)"):
        load_model("tiny", short, sha256=sha256_of_file(short))

    pickle = tmp_path / "hps.pt"
    write_torch_zip(pickle, seed=6)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(pickle.read_bytes()[: pickle.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="unreadable torch checkpoint"):
        load_model("tiny", truncated, sha256=sha256_of_file(truncated))

    weights = tmp_path / "model.safetensors"
    write_project(weights, seed=6)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(weights.read_bytes()[:-100])
    for arch in (None, HF_ARCH):
        with pytest.raises(CheckpointError, match="unreadable safetensors checkpoint"):
            load_model(arch, cut, sha256=sha256_of_file(cut))
    with pytest.raises(CheckpointError, match="from safetensors only"):
        load_model(HF_ARCH, pickle, sha256=sha256_of_file(pickle))
