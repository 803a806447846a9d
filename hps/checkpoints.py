"""Checkpoint formats, detected from the file itself.

- ``clip-state-dict``: a torch pickle ``{'state_dict': <CLIP state dict>}`` (or a bare state
  dict). HPS v1's ``hpc.pth`` holds an OpenAI CLIP ViT-L/14 state dict; HPS v2 / v2.1 hold an
  open_clip ViT-H/14 state dict, in fp16 for the "compressed" files. The key layout is the same
  (open_clip mirrors OpenAI's names); the architecture decides the activation (QuickGELU for
  v1) and is checked against every tensor's shape.
- ``hps-safetensors``: the project's own format, one ``.safetensors`` file whose header
  metadata holds a JSON document (architecture, preprocessing, score scale, training data
  snapshot, metrics).
- ``hf-safetensors``: a Hugging Face ``transformers`` CLIP (PickScore v1): a folder with
  ``config.json`` and ``model.safetensors``, or that file. Read by :func:`load_hf_checkpoint`
  for the ``hf-clip`` architectures only; ``pytorch_model.bin`` (a pickle) is refused. The
  folder's ``config.json`` (:func:`read_hf_config`) must agree with the registered
  architecture (:func:`hps.architectures.hf.check_hf_config`).

A training output folder (what ``hps train --out DIR`` writes) stands for the checkpoint in
it: :func:`resolve_checkpoint` finds the file, and every loader calls it.

Integrity: :func:`load_model <hps.factory.load_model>` verifies a checkpoint's sha256 when one
is given, or else when a ``<file>.sha256`` sidecar lies beside it (``hps models fetch`` writes
one, in ``sha256sum`` format); a mismatch raises :class:`ChecksumMismatch`. A verified file is
read once (:func:`read_verified`) and deserialised from the bytes that were hashed (the
loaders' ``data=``), so a file swapped after the check is never loaded. Torch files are only
ever read with ``weights_only=True`` (tensors and plain containers, no code).

This module imports torch lazily: hashing and sidecars work without it.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

CheckpointFormat = Literal["clip-state-dict", "hps-safetensors", "hf-safetensors"]
METADATA_KEY = "hps"
FORMAT_VERSION = 1
# Buffers that OpenAI's JIT archives carry and that are not model weights.
IGNORED_KEYS = frozenset({"input_resolution", "context_length", "vocab_size"})
MAX_NAMES_SHOWN = 5
SIDECAR_SUFFIX = ".sha256"
# A LoRA is a folder (diffusers format); its sha256 is the sha256 of this file in it.
LORA_WEIGHTS_FILE = "pytorch_lora_weights.safetensors"
_HEX = frozenset("0123456789abcdef")
# The model file in a training output folder: ``hps train --out DIR`` writes
# DIR/model.safetensors (hps.training.trainer.MODEL_FILE; a test keeps the two the same).
CHECKPOINT_FILES = ("model.safetensors",)
# A folder of a run stopped before the end holds only this (hps.training.state.STATE_FILE).
TRAINING_STATE_FILE = "train_state.safetensors"
# Hugging Face folders: the config beside the weights, and the pickled weights never loaded.
HF_CONFIG_FILE = "config.json"
HF_PICKLE_FILE = "pytorch_model.bin"
# Buffers that older transformers saved and newer ones rebuild (not weights).
HF_IGNORED_SUFFIXES = ("embeddings.position_ids",)


class CheckpointError(ValueError):
    """The checkpoint cannot be used; the message says why (file, keys, shapes, hash)."""


class ChecksumMismatch(CheckpointError):
    """The file's sha256 is not the expected one (swapped, corrupted or tampered with)."""

    def __init__(self, source: Path | str, actual: str, expected: str) -> None:
        super().__init__(f"{source}: sha256 is {actual}, expected {expected}")
        self.source = source
        self.actual = actual
        self.expected = expected


def sha256_of_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def normalize_sha256(value: str) -> str:
    """``value`` as 64 lower-case hex digits; ValueError otherwise."""
    digest = value.strip().lower()
    if len(digest) != 64 or not set(digest) <= _HEX:
        raise ValueError(f"not a sha256 (64 hex digits): {value.strip()[:80]!r}")
    return digest


def verify_sha256(path: Path, expected: str) -> None:
    """Raise ChecksumMismatch (a CheckpointError) unless the file hashes to ``expected``.

    The file is streamed and nothing of it is kept: a caller that then reads the file again
    trusts a file that may have changed since. To load what was checked, use
    :func:`read_verified`."""
    try:
        actual = sha256_of_file(path)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint file") from None
    _check_digest(path, actual, expected)


def read_verified(path: Path, expected: str) -> bytes:
    """The whole content of ``path``, read once, after checking that it hashes to ``expected``
    (ChecksumMismatch otherwise; CheckpointError for a missing file, as
    :func:`verify_sha256`).

    Deserialise these bytes (``load_checkpoint(path, data=...)``,
    ``load_hf_checkpoint(path, data=...)``) rather than the file: they are what was hashed,
    whatever happens to the file afterwards. The cost is memory: the file's bytes are held
    while the tensors are built from them (peak about the file's size plus the tensors')."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint file") from None
    _check_digest(path, hashlib.sha256(data).hexdigest(), expected)
    return data


def _check_digest(path: Path, actual: str, expected: str) -> None:
    if actual != expected.strip().lower():
        raise ChecksumMismatch(path, actual, expected.strip().lower())


def weights_file(path: Path) -> Path:
    """The file whose sha256 identifies a model: ``path`` itself, or a LoRA folder's weights."""
    return path / LORA_WEIGHTS_FILE if path.is_dir() else path


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint file ``path`` names: ``path`` itself, or the model file in a training
    output folder. A folder without one raises CheckpointError saying what was expected."""
    path = Path(path)
    if not path.is_dir():
        return path
    for name in CHECKPOINT_FILES:
        if (path / name).is_file():
            return path / name
    expected = ", ".join(CHECKPOINT_FILES)
    message = f"{path}: no checkpoint in this folder; expected {expected}"
    if (path / TRAINING_STATE_FILE).is_file():
        message += " (it holds a training state only: the run has not finished; resume it)"
    elif (path / LORA_WEIGHTS_FILE).is_file():
        message += f" (it holds {LORA_WEIGHTS_FILE}: a LoRA for the generator, not an HPS model)"
    elif (path / HF_PICKLE_FILE).is_file():
        message += (
            f" (it holds {HF_PICKLE_FILE}, a pickle, which is never loaded: "
            "use the model.safetensors of the same revision)"
        )
    raise CheckpointError(message)


def sidecar_path(path: Path) -> Path:
    """Where the sha256 of ``path`` is recorded: ``<file>.sha256`` beside it."""
    return path.with_name(path.name + SIDECAR_SUFFIX)


def write_sidecar(path: Path, digest: str) -> Path:
    """Record ``digest`` beside ``path`` in ``sha256sum`` format (atomically)."""
    sidecar = sidecar_path(path)
    partial = sidecar.with_name(sidecar.name + ".partial")
    partial.write_text(f"{normalize_sha256(digest)}  {path.name}\n")
    partial.replace(sidecar)
    return sidecar


def read_sidecar(path: Path) -> str | None:
    """The sha256 recorded beside ``path``, or None without a sidecar."""
    sidecar = sidecar_path(path)
    try:
        text = sidecar.read_text(errors="replace")
    except FileNotFoundError:
        return None
    try:
        return normalize_sha256(text.split()[0] if text.split() else "")
    except ValueError:
        raise CheckpointError(f"{sidecar}: not a sha256 sidecar") from None


def detect_format(path: Path, data: bytes | None = None) -> CheckpointFormat:
    """Tell the format from the first bytes of the file (of ``data``, the file's content, when
    given; ``path`` then only names it in messages)."""
    if data is not None:
        head = data[:16]
    else:
        try:
            with path.open("rb") as handle:
                head = handle.read(16)
        except FileNotFoundError:
            raise CheckpointError(f"{path}: no such checkpoint file") from None
        except IsADirectoryError:
            raise CheckpointError(f"{path}: is a directory, not a checkpoint file") from None
    if len(head) < 10:
        raise CheckpointError(f"{path}: too short to be a checkpoint ({len(head)} bytes)")
    if head.startswith(b"PK\x03\x04"):
        return "clip-state-dict"  # torch.save zip archive
    # safetensors before the pickle opcode: the file starts with its header's length (little
    # endian), whose first byte is 0x80 for one header size in 256.
    (header_length,) = struct.unpack("<Q", head[:8])
    if head[8:9] == b"{" and 0 < header_length < 100_000_000:
        return "hps-safetensors"
    if head[:1] == b"\x80":
        return "clip-state-dict"  # a legacy torch pickle
    raise CheckpointError(f"{path}: not a torch or safetensors checkpoint (unrecognised header)")


def load_checkpoint(
    path: Path, *, data: bytes | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint of any supported format (a file, or a training output folder):
    (state dict, metadata).

    With ``data`` (the checkpoint file's content, from :func:`read_verified`) nothing is read
    from disk: ``path`` is the resolved file, named in messages only. Without it the file is
    streamed from disk."""
    path = resolve_checkpoint(path) if data is None else path
    fmt = detect_format(path, data)
    if fmt == "hps-safetensors":
        return _load_safetensors(path, data)
    return _load_torch(path, data), {"format": fmt}


def _load_torch(path: Path, data: bytes | None) -> dict[str, torch.Tensor]:
    import torch

    try:
        source = io.BytesIO(data) if data is not None else path
        raw = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: unreadable torch checkpoint ({exc})") from None
    if isinstance(raw, Mapping) and "state_dict" in raw:
        raw = raw["state_dict"]
    if not isinstance(raw, Mapping) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise CheckpointError(f"{path}: expected {{'state_dict': {{name: tensor}}}}")
    state = {}
    for key, value in raw.items():
        name = key.removeprefix("module.")  # saved from DistributedDataParallel
        if name not in IGNORED_KEYS:
            state[name] = value
    return state


HF_CLIP_PREFIXES = ("text_model.", "vision_model.")  # transformers' CLIPModel


def _read_safetensors(
    path: Path, data: bytes | None, skip: tuple[str, ...] = ()
) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(header metadata, tensors) of a safetensors file, from ``data`` when given, else from
    the file; tensors whose names end with one of ``skip`` are left out."""
    try:
        if data is None:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt", device="cpu") as handle:
                header = handle.metadata() or {}
                state = {
                    key: handle.get_tensor(key)
                    for key in handle.keys()  # noqa: SIM118
                    if not key.endswith(skip)
                }
        else:
            from safetensors.torch import load

            state = {key: value for key, value in load(data).items() if not key.endswith(skip)}
            header = _safetensors_metadata(data)
    except Exception as exc:
        raise CheckpointError(f"{path}: unreadable safetensors checkpoint ({exc})") from None
    return header, state


def _safetensors_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file's header (an 8-byte little-endian length,
    then that many bytes of JSON); called once the library has accepted the file."""
    (length,) = struct.unpack("<Q", data[:8])
    metadata = json.loads(data[8 : 8 + length]).get("__metadata__") or {}
    return dict(metadata)


def _load_safetensors(
    path: Path, data: bytes | None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    header, state = _read_safetensors(path, data)
    if METADATA_KEY not in header:
        if any(key.startswith(HF_CLIP_PREFIXES) for key in state):
            raise CheckpointError(
                f"{path}: safetensors file without HPS metadata (a Hugging Face CLIP such as "
                "PickScore? pass --arch pickscore)"
            )
        # An open_clip model's weights as open_clip publishes them (a pretrained base): the
        # architecture comes from --arch or the tensors' shapes.
        return {k: v for k, v in state.items() if k not in IGNORED_KEYS}, {
            "format": "open_clip-safetensors"
        }
    try:
        metadata = json.loads(header[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: HPS metadata is not valid JSON ({exc})") from None
    metadata["format"] = "hps-safetensors"
    return state, metadata


def save_checkpoint(path: Path, model: torch.nn.Module, metadata: dict[str, Any]) -> Path:
    """Write ``model``'s weights (under the model's own names: open_clip's, or for an
    ``hf-clip`` model ``transformers``') and ``metadata`` in the project's format
    (atomically)."""
    from safetensors.torch import save_file

    document = {"format_version": FORMAT_VERSION, **metadata}
    state = {
        key: value.detach().to("cpu").contiguous() for key, value in model.state_dict().items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    # "format": "pt" as transformers writes it: transformers 4 refuses a safetensors file
    # with metadata but without it, and a trained hf-clip model is a transformers CLIPModel.
    header = {METADATA_KEY: json.dumps(document, default=str), "format": "pt"}
    save_file(state, str(partial), metadata=header)
    partial.replace(path)
    return path


def check_state_dict(
    model: torch.nn.Module, state: Mapping[str, torch.Tensor], *, source: str
) -> None:
    """Raise CheckpointError naming missing keys, unexpected keys and shape mismatches."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        f"{key} {tuple(state[key].shape)} vs {tuple(expected[key].shape)}"
        for key in set(expected) & set(state)
        if tuple(state[key].shape) != tuple(expected[key].shape)
    )
    problems = []
    for label, names in (
        ("missing keys", missing),
        ("unexpected keys", unexpected),
        ("shape mismatches (checkpoint vs architecture)", mismatched),
    ):
        if names:
            shown = ", ".join(names[:MAX_NAMES_SHOWN])
            more = (
                f" and {len(names) - MAX_NAMES_SHOWN} more" if len(names) > MAX_NAMES_SHOWN else ""
            )
            problems.append(f"{len(names)} {label}: {shown}{more}")
    if problems:
        raise CheckpointError(f"{source}: does not fit the architecture: " + "; ".join(problems))


def load_hf_checkpoint(
    path: Path, *, data: bytes | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a Hugging Face ``transformers`` CLIP from safetensors (a file, or a folder with
    ``model.safetensors``): (state dict, metadata). Torch pickles are refused; the project's
    own safetensors (with HPS metadata) are read as well.

    ``data``, when given, is the content of the resolved weights file (from
    :func:`read_verified`), read instead of the file, as in :func:`load_checkpoint`."""
    path = resolve_checkpoint(path) if data is None else path
    if detect_format(path, data) != "hps-safetensors":
        raise CheckpointError(
            f"{path}: a Hugging Face CLIP is loaded from safetensors only "
            f"(model.safetensors), not from a torch pickle"
        )
    header, state = _read_safetensors(path, data, HF_IGNORED_SUFFIXES)
    if METADATA_KEY not in header:
        return state, {"format": "hf-safetensors"}
    try:
        metadata = json.loads(header[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: HPS metadata is not valid JSON ({exc})") from None
    return state, {**metadata, "format": "hps-safetensors"}


def read_hf_config(path: Path) -> dict[str, Any] | None:
    """The ``config.json`` beside a Hugging Face checkpoint file, or None without one."""
    config_path = path.parent / HF_CONFIG_FILE
    if not config_path.is_file():
        return None
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{config_path}: not a JSON config ({exc})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_path}: not a JSON object")
    return config
