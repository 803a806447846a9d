"""Model inputs stored beside each image (decode once, issue 16 item 6): the scorer's geometry
gives the very same pixels from the stored input as from the original, for pad and crop and
awkward sizes; local and S3 stores; intake writes them; damaged ones are derived again; the
scorer and the training snapshot read them."""

from __future__ import annotations

import io
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import boto3
import numpy as np
import pytest
import torch
from moto.server import ThreadedMotoServer
from PIL import Image

from hps.architectures import build_model, get_architecture
from hps.pixels import shape_pixels
from hps.scoring import HpsScorer
from media.intake import intake_and_store, intake_image
from media.model_inputs import (
    ModelInputSpec,
    ensure_model_input,
    is_valid_model_input,
    make_model_input,
    model_input_of,
    parse_model_inputs,
    read_model_input,
)
from media.store import (
    BlobNotFound,
    ImageStore,
    LocalImageStore,
    S3ImageStore,
    input_key,
)
from worker.snapshot import local_image_path

SIZES = [
    (512, 512),  # what generators emit
    (300, 1000),  # tall
    (1000, 301),  # wide, odd
    (1, 1),  # tiny
    (3, 700),  # a sliver: the short side rounds to 1 px
    (224, 224),  # already the model size
    (223, 225),  # one pixel off
    (5000, 3000),  # huge but allowed (15 Mpx)
]
SPECS = [ModelInputSpec("pad", 224), ModelInputSpec("crop", 224), ModelInputSpec("pad", 64)]


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    """Random pixels: the hardest case for a resampler (every output pixel differs)."""
    rng = np.random.default_rng(seed + width * 7 + height)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.mode}{s.size}")
@pytest.mark.parametrize("width,height", SIZES)
def test_stored_input_gives_the_scorer_identical_pixels(
    width: int, height: int, spec: ModelInputSpec
) -> None:
    original = png(noise(width, height))
    stored = make_model_input(noise(width, height), spec)
    assert is_valid_model_input(stored, spec)
    expected = shape_pixels(original, spec.size, spec.mode)  # type: ignore[arg-type]
    got = shape_pixels(stored, spec.size, spec.mode)  # type: ignore[arg-type]
    assert got.shape == (spec.size, spec.size, 3)
    assert np.array_equal(got, expected)
    with Image.open(io.BytesIO(stored)) as image:
        if spec.mode == "pad":
            assert max(image.size) == spec.size  # not padded: the padding is cheap
        else:
            assert image.size == (spec.size, spec.size)
    if width * height >= 512 * 512:
        assert len(stored) < len(original) / 3


def test_intake_and_scorer_share_one_geometry() -> None:
    """No restated copy: the stored input and the scorer's input come from rules.geometry,
    and the scorer's pad is the stored input padded (the same bytes)."""
    import hps.pixels
    import media.model_inputs
    import rules.geometry

    assert hps.pixels.resize_pad is rules.geometry.resize_pad
    assert hps.pixels.resize_crop is media.model_inputs.resize_crop is rules.geometry.resize_crop
    assert media.model_inputs.resize_longest is rules.geometry.resize_longest
    image = noise(1000, 301)
    with Image.open(io.BytesIO(make_model_input(image, ModelInputSpec("pad", 224)))) as stored:
        padded = rules.geometry.pad_square(stored.convert("RGB"), 224)
    assert padded.tobytes() == hps.pixels.resize_pad(image, 224).tobytes()


def test_a_pad_input_is_not_a_crop_input() -> None:
    stored = make_model_input(noise(300, 1000), ModelInputSpec("pad", 224))
    assert not is_valid_model_input(stored, ModelInputSpec("crop", 224))
    assert not is_valid_model_input(stored, ModelInputSpec("pad", 112))


def test_input_key_and_spec_parsing() -> None:
    sha = "ab" * 32
    assert input_key(sha, "pad", 224) == f"inputs/ab/ab/{sha}/pad-224.png"
    assert input_key(sha, "crop", 336) == f"inputs/ab/ab/{sha}/crop-336.png"
    for mode, size in [("pad", 0), ("stretch", 224)]:
        with pytest.raises(ValueError):
            input_key(sha, mode, size)
    with pytest.raises(ValueError):
        input_key("AB" * 32, "pad", 224)
    assert parse_model_inputs(" pad:224, crop:336,pad:224 ") == (
        ModelInputSpec("pad", 224),
        ModelInputSpec("crop", 336),
    )
    assert parse_model_inputs("") == ()
    for text in ["pad", "pad:0", "stretch:224", "pad:224;crop:224"]:
        with pytest.raises(ValueError):
            parse_model_inputs(text)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(params=["local", "s3"])
def store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> ImageStore:
    if request.param == "local":
        return LocalImageStore(tmp_path / "blobs")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    client = boto3.client("s3", endpoint_url=request.getfixturevalue("s3_endpoint"))
    return S3ImageStore(
        f"hps-{os.urandom(4).hex()}", "images/prod", client=client, create_bucket=True
    )


def test_store_keeps_inputs_beside_the_blob_and_deletes_them_with_it(store: ImageStore) -> None:
    pad = ModelInputSpec("pad", 224)
    result = intake_and_store(
        png(noise(640, 480)), store, max_bytes=10**8, max_pixels=10**8, model_inputs=[pad]
    )
    sha = result.sha256
    assert read_model_input(store, sha, pad) == make_model_input(result.open(), pad)
    with pytest.raises(BlobNotFound):
        store.get_input(sha, "crop", 224)
    store.put_input(sha, "crop", 224, b"x")
    store.put_input(sha, "crop", 224, b"replaced")  # replacing is allowed (unlike blobs)
    assert store.get_input(sha, "crop", 224) == b"replaced"
    assert store.delete(sha)
    for mode in ("pad", "crop"):
        with pytest.raises(BlobNotFound):
            store.get_input(sha, mode, 224)
    assert store.delete_inputs(sha) == 0
    if isinstance(store, LocalImageStore):
        assert not (store.root / "inputs" / sha[:2] / sha[2:4] / sha).exists()


def test_intake_writes_the_configured_inputs_from_its_own_decode(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path)
    # A JPEG turned on its side by EXIF: the input is made from the upright pixels.
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6
    noise(400, 250).save(buffer, format="JPEG", exif=exif)
    specs = (ModelInputSpec("pad", 64), ModelInputSpec("crop", 32))
    result = intake_and_store(
        buffer.getvalue(), store, max_bytes=10**8, max_pixels=10**8, model_inputs=specs
    )
    assert set(result.model_inputs) == set(specs)
    for spec in specs:
        stored = store.get_input(result.sha256, spec.mode, spec.size)
        assert stored == result.model_inputs[spec]
        from_blob = shape_pixels(store.get(result.sha256), spec.size, spec.mode)  # type: ignore[arg-type]
        assert np.array_equal(shape_pixels(stored, spec.size, spec.mode), from_blob)  # type: ignore[arg-type]
    with pytest.raises(BlobNotFound):  # only the configured ones
        store.get_input(result.sha256, "pad", 224)
    assert intake_image(png(noise(8, 8)), max_bytes=10**6, max_pixels=10**6).model_inputs == {}
    none = intake_and_store(png(noise(9, 9)), store, max_bytes=10**6, max_pixels=10**6)
    assert not (tmp_path / "inputs" / none.sha256[:2]).exists()  # none asked, none written


def _flip_a_pixel_byte(data: bytes) -> bytes:
    """The stored PNG with one byte of its image data changed (the chunk CRC then fails)."""
    index = data.index(b"IDAT") + 40
    return data[:index] + bytes([data[index] ^ 0x55]) + data[index + 1 :]


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: b"",
        lambda data: data[: len(data) // 2],
        _flip_a_pixel_byte,
        lambda data: make_model_input(noise(30, 40), ModelInputSpec("pad", 112)),  # wrong size
    ],
    ids=["empty", "truncated", "bit-flip", "wrong-size"],
)
def test_a_damaged_input_is_derived_again_and_replaced(store: ImageStore, damage: object) -> None:
    spec = ModelInputSpec("pad", 224)
    result = intake_and_store(
        png(noise(500, 300)), store, max_bytes=10**8, max_pixels=10**8, model_inputs=[spec]
    )
    good = result.model_inputs[spec]
    store.put_input(result.sha256, spec.mode, spec.size, damage(good))  # type: ignore[operator]
    assert read_model_input(store, result.sha256, spec) is None
    assert ensure_model_input(store, result.sha256, spec) == good
    assert store.get_input(result.sha256, spec.mode, spec.size) == good


def test_missing_input_is_derived_once_and_undecodable_originals_pass_through(
    tmp_path: Path,
) -> None:
    store = LocalImageStore(tmp_path)
    spec = ModelInputSpec("crop", 64)
    original = png(noise(90, 70))
    sha = store.put(original)
    derived = ensure_model_input(store, sha, spec)
    assert derived == make_model_input(noise(90, 70), spec)
    assert store.input_path(sha, "crop", 64).read_bytes() == derived
    not_an_image = store.put(b"not an image at all")
    assert model_input_of(store, not_an_image, spec) is None
    assert ensure_model_input(store, not_an_image, spec) == b"not an image at all"
    with pytest.raises(BlobNotFound):
        ensure_model_input(store, "cd" * 32, spec)


def test_scores_from_stored_inputs_equal_scores_from_originals() -> None:
    torch.manual_seed(3)
    architecture = get_architecture("tiny")
    scorer = HpsScorer(build_model(architecture), architecture, device="cpu", dtype="float32")
    mode, size = scorer.model_input or ("", 0)
    assert (mode, size) == ("pad", architecture.image_size)
    images = [noise(w, h, seed=i) for i, (w, h) in enumerate(SIZES[:7])]
    originals = [png(image) for image in images]
    inputs = [make_model_input(image, ModelInputSpec(mode, size)) for image in images]
    prompts = [f"picture {i}" for i in range(len(images))]
    from_inputs = scorer.score(prompts, inputs, batch_size=3)
    assert from_inputs == scorer.score(prompts, originals, batch_size=3)  # bit for bit


def test_training_snapshot_paths_point_at_model_inputs(store: ImageStore, tmp_path: Path) -> None:
    image = noise(700, 400)
    sha = store.put(png(image))
    cache = tmp_path / "cache"
    original_path = local_image_path(store, sha, cache)
    path = local_image_path(store, sha, cache, ("pad", 112))
    assert path != original_path
    assert Path(path).read_bytes() == make_model_input(image, ModelInputSpec("pad", 112))
    if isinstance(store, LocalImageStore):  # read in place, nothing copied
        assert path == str(store.input_path(sha, "pad", 112))
        assert not cache.exists()
    else:  # derived once, stored, downloaded into the run's cache
        assert store.get_input(sha, "pad", 112) == Path(path).read_bytes()
        assert Path(path).parent == cache
    # What the trainer's loader makes of it: the original's pixels exactly.
    assert np.array_equal(shape_pixels(path, 112, "pad"), shape_pixels(original_path, 112, "pad"))
