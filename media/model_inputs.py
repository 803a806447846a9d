"""Model inputs: each stored image already shaped for a model resolution, decoded once.

Scoring and training spend most of their host time decoding 512 px PNGs and resizing them to
the model's 224 px. The intake decodes every image anyway, so it also stores, beside the blob,
the image as the model will see it before padding (:func:`make_model_input`):

- ``pad`` (the paper's geometry): the longest side resized to ``size`` (bicubic, aspect kept:
  :func:`rules.geometry.resize_longest`, the first half of the scorer's ``resize_pad``), not
  yet padded;
- ``crop`` (CLIP's): the final ``size`` x ``size`` centre crop of the image resized so that its
  shortest side is ``size`` (:func:`rules.geometry.resize_crop`). A longest-side image cannot
  give the crop exactly (it has too few pixels along the short side), so crop stores its own
  input.

Each input is a small lossless RGB PNG, keyed by the blob's sha256, the mode and the size
(:func:`media.store.input_key`). Fed to the scorer's own geometry (``hps.pixels.shape_pixels``
with the same mode and size) it is a fixed point - resizing to its own size is a copy, padding
or cropping a square of ``size`` is the identity - so the model sees the same pixels as from
the original, to the bit (tests/media/test_model_inputs.py).

Readers (:func:`read_model_input`, :func:`ensure_model_input`) check a stored input (PNG chunk
CRCs, geometry) and treat a damaged one as missing: they derive it again from the original
blob, store it (best effort), and use it. Nothing here imports ``hps``: the geometry is
:mod:`rules.geometry`, the very functions ``hps.pixels`` shapes the scorer's input with.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from PIL import Image

from media.store import BlobNotFound, ImageStore
from rules.geometry import resize_crop, resize_longest

log = logging.getLogger(__name__)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Inputs are small (224 px: ~100 kB): zlib level 1 decodes as fast as any and keeps them small.
INPUT_COMPRESS_LEVEL = 1
SPEC_PATTERN = re.compile(r"^(pad|crop):(\d{1,5})$")


class ModelInputSpec(NamedTuple):
    """Which model input: the geometry (pad | crop) and the model resolution in pixels."""

    mode: str
    size: int


DEFAULT_MODEL_INPUTS: tuple[ModelInputSpec, ...] = (ModelInputSpec("pad", 224),)


def parse_model_inputs(text: str) -> tuple[ModelInputSpec, ...]:
    """``"pad:224,crop:336"`` -> specs (empty text: none). Raises ValueError on bad parts."""
    specs: list[ModelInputSpec] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        match = SPEC_PATTERN.match(part)
        if match is None or not 0 < int(match.group(2)) <= 4096:
            raise ValueError(f"model input {part!r}: expected pad:SIZE or crop:SIZE (1..4096)")
        spec = ModelInputSpec(match.group(1), int(match.group(2)))
        if spec not in specs:
            specs.append(spec)
    return tuple(specs)


def shape_for(image: Image.Image, spec: ModelInputSpec) -> Image.Image:
    """The model input of an RGB image as a PIL image (see the module docstring)."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    if spec.mode == "pad":
        return resize_longest(image, spec.size)
    if spec.mode == "crop":
        return resize_crop(image, spec.size)
    raise ValueError(f"model input mode must be 'pad' or 'crop', not {spec.mode!r}")


def make_model_input(image: Image.Image, spec: ModelInputSpec) -> bytes:
    """The stored form of an image's model input: a lossless RGB PNG."""
    buffer = io.BytesIO()
    shape_for(image, spec).save(buffer, format="PNG", compress_level=INPUT_COMPRESS_LEVEL)
    return buffer.getvalue()


def is_valid_model_input(data: bytes, spec: ModelInputSpec) -> bool:
    """Whether ``data`` is an intact model input for ``spec``: a PNG whose chunks all pass
    their CRC, RGB, with the geometry of the mode (pad: longest side ``size``; crop: a square
    of ``size``). A stale or damaged input fails."""
    if not data.startswith(PNG_SIGNATURE):
        return False
    try:
        with Image.open(io.BytesIO(data)) as probe:
            mode, (width, height) = probe.mode, probe.size
            probe.verify()  # every chunk's CRC, IDAT included
    except Exception:  # Pillow raises many types for damaged data
        return False
    if mode != "RGB":
        return False
    if spec.mode == "crop":
        return width == height == spec.size
    return max(width, height) == spec.size and min(width, height) >= 1


def read_model_input(store: ImageStore, sha256: str, spec: ModelInputSpec) -> bytes | None:
    """The stored model input of a blob, or None when absent or damaged (the caller derives
    it again and :func:`write_model_inputs` replaces the damaged one)."""
    try:
        data = store.get_input(sha256, spec.mode, spec.size)
    except BlobNotFound:
        return None
    except Exception:  # a cache: a store error here must not fail the job
        log.warning("cannot read model input %s %s:%d", sha256, *spec, exc_info=True)
        return None
    if is_valid_model_input(data, spec):
        return data
    log.warning("model input %s %s:%d is damaged: it is derived again", sha256, *spec)
    return None


def write_model_inputs(
    store: ImageStore, sha256: str, image: Image.Image, specs: Iterable[ModelInputSpec]
) -> dict[ModelInputSpec, bytes]:
    """Derive and store the model inputs of an already decoded image; return them. A store
    error is logged, never raised: the inputs are a cache, the original blob is the truth."""
    made: dict[ModelInputSpec, bytes] = {}
    for spec in specs:
        data = make_model_input(image, spec)
        made[spec] = data
        try:
            store.put_input(sha256, spec.mode, spec.size, data)
        except Exception:
            log.warning("could not store model input %s %s:%d", sha256, *spec, exc_info=True)
    return made


def model_input_of(
    store: ImageStore, sha256: str, spec: ModelInputSpec, *, max_pixels: int = 64_000_000
) -> bytes | None:
    """A blob's model input: the stored one when intact, else derived from the original blob
    now and stored (best effort); None when the original cannot be decoded. Raises
    BlobNotFound when the original blob is gone and no intact input is stored."""
    stored = read_model_input(store, sha256, spec)
    if stored is not None:
        return stored
    original = store.get(sha256)
    try:
        image = _decode(original, max_pixels)
    except Exception:
        return None
    return write_model_inputs(store, sha256, image, [spec])[spec]


def ensure_model_input(store: ImageStore, sha256: str, spec: ModelInputSpec) -> bytes:
    """What to feed the model for a blob: :func:`model_input_of`, or the original bytes when
    it cannot be decoded (so that the model's own loader reports the error as before)."""
    data = model_input_of(store, sha256, spec)
    return store.get(sha256) if data is None else data


def ensure_model_inputs(
    store: ImageStore, sha256s: Sequence[str], spec: ModelInputSpec
) -> list[bytes]:
    """:func:`ensure_model_input` for each blob, in order."""
    return [ensure_model_input(store, sha, spec) for sha in sha256s]


def _decode(data: bytes, max_pixels: int) -> Image.Image:
    """Decode a stored (canonical, trusted) blob as RGB under a pixel cap."""
    with Image.open(io.BytesIO(data)) as image:
        if image.width * image.height > max_pixels:
            raise ValueError(f"{image.width}x{image.height} exceeds {max_pixels:,} pixels")
        image.load()
        return image.convert("RGB")
