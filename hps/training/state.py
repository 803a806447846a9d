"""The training state: one ``train_state.safetensors`` file a run resumes from.

Every tensor (trainable weights, optimiser moments, torch RNG states) is a safetensors tensor;
everything else (step, epoch, scheduler, optimiser hyper-parameters, Python and NumPy RNG
states, config) is JSON in its header. Loading it never unpickles anything. A
``train_state.pt`` left by an older version (a torch pickle, which can run code when loaded)
is refused, never opened: see :class:`TrainingStateError`.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

STATE_FILE = "train_state.safetensors"
LEGACY_STATE_FILE = "train_state.pt"  # pickled by older versions: refused, never loaded
STATE_METADATA_KEY = "hps_train_state"
STATE_FORMAT_VERSION = 1


class TrainingStateError(ValueError):
    """The saved training state cannot be resumed from; the message says why and what to do."""


def rng_state() -> dict[str, Any]:
    """The state of every random generator training uses (Python, NumPy, torch, CUDA)."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _encode(value: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    """``value`` as JSON, its tensors moved into ``tensors`` under their path in the tree.

    Tagged objects keep what JSON would lose: tuples, dicts with non-string keys (the
    optimiser's parameter ids) and NumPy arrays (NumPy's RNG state)."""
    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach().to("cpu").contiguous()
        return {"__tensor__": path}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, f"{path}/{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, f"{path}/{i}", tensors) for i, v in enumerate(value)]
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: _encode(v, f"{path}/{k}", tensors) for k, v in value.items()}
        return {
            "__items__": [
                [_encode(k, f"{path}/key{i}", tensors), _encode(v, f"{path}/{k}", tensors)]
                for i, (k, v) in enumerate(value.items())
            ]
        }
    raise TypeError(f"cannot keep a {type(value).__name__} in the training state ({path})")


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of :func:`_encode`."""
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if "__ndarray__" in value:
        return np.asarray(value["__ndarray__"], dtype=np.dtype(value["dtype"]))
    if "__tuple__" in value:
        return tuple(_decode(v, tensors) for v in value["__tuple__"])
    if "__items__" in value:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in value["__items__"]}
    return {k: _decode(v, tensors) for k, v in value.items()}


def save_state(path: Path, payload: dict[str, Any]) -> None:
    """Write the training state (safetensors + JSON header), atomically."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    document = {"format_version": STATE_FORMAT_VERSION, "state": _encode(payload, "", tensors)}
    partial = path.with_name(path.name + ".partial")
    save_file(tensors, str(partial), metadata={STATE_METADATA_KEY: json.dumps(document)})
    partial.replace(path)


def load_state(path: Path) -> dict[str, Any]:
    """Read a state written by :func:`save_state` (nothing in it is executed)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            header = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        document = json.loads(header[STATE_METADATA_KEY])
        if document.get("format_version") != STATE_FORMAT_VERSION:
            raise ValueError(f"format version {document.get('format_version')!r}")
        state = _decode(document["state"], tensors)
    except Exception as exc:
        raise TrainingStateError(
            f"{path}: unreadable training state ({type(exc).__name__}: {exc}); "
            "delete it or pass --no-resume to start over"
        ) from None
    if not isinstance(state, dict):
        raise TrainingStateError(f"{path}: unreadable training state (not a mapping)")
    return state


def refuse_legacy_state(out: Path) -> None:
    """A pickled state from an older version is refused, never unpickled (it can run code)."""
    legacy = out / LEGACY_STATE_FILE
    if legacy.exists():
        raise TrainingStateError(
            f"{legacy}: a training state in the old pickle format, which is no longer loaded "
            "(unpickling a file can run any code in it); resuming from it is not possible: "
            "delete it (or pass --no-resume) to train from the start"
        )
