"""Safe intake: a corpus of bad images, each refused with a specific error and nothing stored;
awkward but valid images normalised correctly."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from media.intake import (
    CorruptImage,
    EmptyImage,
    ImageRejected,
    ImageTooLarge,
    NotAGrid,
    TooManyPixels,
    UnsupportedFormat,
    intake_and_store,
    split_grid,
)
from media.store import LocalImageStore

MAX_BYTES = 2 * 1024 * 1024
MAX_PIXELS = 20_000_000


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def decompression_bomb(side: int = 30_000) -> bytes:
    """A genuine 1-bit PNG of side x side black pixels: ~200 kB that would decode to 900 MP."""
    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    compressor = zlib.compressobj(9)
    chunks = [compressor.compress(row) for _ in range(side)]
    chunks.append(compressor.flush())
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", b"".join(chunks))
        + png_chunk(b"IEND", b"")
    )


@pytest.fixture
def store(tmp_path: Path) -> LocalImageStore:
    return LocalImageStore(tmp_path / "blobs")


def stored_files(store: LocalImageStore) -> list[Path]:
    return [p for p in store.root.rglob("*") if p.is_file()]


def valid_png() -> bytes:
    return encode(Image.new("RGB", (64, 48), (10, 200, 30)), "PNG")


BAD_IMAGES = {
    "zero bytes": (lambda: b"", EmptyImage, "empty"),
    "truncated PNG": (lambda: valid_png()[: len(valid_png()) // 2], CorruptImage, "damaged"),
    "truncated JPEG": (
        lambda: encode(Image.effect_noise((256, 256), 60).convert("RGB"), "JPEG")[:3000],
        CorruptImage,
        "damaged",
    ),
    "30000x30000 decompression bomb": (
        decompression_bomb,
        TooManyPixels,
        "too many pixels|900,000,000",
    ),
    "6000x6000 PNG over the configured limit": (
        lambda: decompression_bomb(6000),
        TooManyPixels,
        "6000x6000 = 36,000,000 pixels; the limit is 20,000,000",
    ),
    "text renamed .png": (
        lambda: b"just some text, saved as picture.png\n" * 10,
        UnsupportedFormat,
        "not a recognised image",
    ),
    "BMP (not allowed)": (
        lambda: encode(Image.new("RGB", (8, 8)), "BMP"),
        UnsupportedFormat,
        "BMP is not allowed",
    ),
    "oversize file": (lambda: b"\x89PNG\r\n\x1a\n" + b"\0" * MAX_BYTES, ImageTooLarge, "limit"),
    "PNG with a broken chunk checksum": (
        lambda: valid_png()[:-20] + b"\xff" * 8 + valid_png()[-12:],
        CorruptImage,
        "damaged",
    ),
}


@pytest.mark.parametrize("name", list(BAD_IMAGES))
def test_bad_images_are_refused_and_nothing_is_stored(name: str, store: LocalImageStore) -> None:
    make, error, message = BAD_IMAGES[name]
    with pytest.raises(error, match=message) as caught:
        intake_and_store(make(), store, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    assert isinstance(caught.value, ImageRejected)
    assert caught.value.code == error.code
    assert stored_files(store) == []


def test_animated_gif_keeps_its_first_frame(store: LocalImageStore) -> None:
    frames = [
        Image.new("RGB", (20, 20), color) for color in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    ]
    raw = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    result = intake_and_store(raw, store, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    assert (result.source_format, result.frames) == ("GIF", 3)
    assert result.open().getpixel((5, 5)) == (255, 0, 0)
    assert stored_files(store) == [store.path_for(result.sha256)]


def test_cmyk_jpeg_becomes_correct_rgb(store: LocalImageStore) -> None:
    raw = encode(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG", quality=95)
    result = intake_and_store(raw, store, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    red, green, blue = result.open().getpixel((16, 16))  # type: ignore[misc]
    assert red > 230 and green < 30 and blue < 30


def test_16_bit_png_is_scaled_not_clipped(store: LocalImageStore) -> None:
    image = Image.new("I;16", (16, 16), 32768)
    result = intake_and_store(
        encode(image, "PNG"), store, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS
    )
    assert result.open().getpixel((3, 3)) == (127, 127, 127)


def test_exif_orientation_is_applied(store: LocalImageStore) -> None:
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 20, 20))  # white on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    raw = encode(image, "JPEG", exif=exif.tobytes(), quality=95)
    result = intake_and_store(raw, store, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    assert (result.width, result.height) == (20, 40)
    top = result.open().getpixel((10, 5))
    assert top[0] > 200  # type: ignore[index]  # the white half is now on top


def test_transparent_png_and_webp_are_accepted(store: LocalImageStore) -> None:
    rgba = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    result = intake_and_store(
        encode(rgba, "PNG"), store, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS
    )
    assert result.open().getpixel((1, 1)) == (0, 0, 0)
    webp = encode(Image.new("RGB", (10, 10), (0, 0, 255)), "WEBP", lossless=True)
    assert (
        intake_and_store(webp, store, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS).source_format
        == "WEBP"
    )


def test_metadata_and_trailing_bytes_are_dropped(store: LocalImageStore) -> None:
    from PIL import PngImagePlugin

    image = Image.effect_noise((64, 64), 50).convert("RGB")
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "secret: user@example.com, GPS 48.85N")
    plain = intake_and_store(
        encode(image, "PNG"), store, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS
    )
    tagged = intake_and_store(
        encode(image, "PNG", pnginfo=info, compress_level=9) + b"trailing junk",
        store,
        max_bytes=MAX_BYTES,
        max_pixels=MAX_PIXELS,
    )
    assert b"secret" not in store.get(tagged.sha256)
    assert not store.get(tagged.sha256).endswith(b"trailing junk")
    assert plain.open().tobytes() == tagged.open().tobytes() == image.tobytes()
    # Same pixels in another container: same perceptual hash, identical decoded pixels.
    webp = intake_and_store(
        encode(image, "WEBP", lossless=True), store, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS
    )
    assert webp.phash == plain.phash and len(plain.phash) == 16
    assert webp.open().tobytes() == image.tobytes()


def test_reposted_bytes_share_one_blob(store: LocalImageStore) -> None:
    raw = encode(Image.effect_noise((64, 64), 50).convert("RGB"), "PNG")
    first = intake_and_store(raw, store, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    second = intake_and_store(raw, store, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    assert first.sha256 == second.sha256
    assert len(stored_files(store)) == 1


def test_split_grid_into_four_tiles_in_upscale_order() -> None:
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    grid = Image.new("RGB", (200, 100))
    for index, color in enumerate(colors):
        grid.paste(
            color,
            ((index % 2) * 100, (index // 2) * 50, (index % 2 + 1) * 100, (index // 2 + 1) * 50),
        )
    tiles = split_grid(grid)
    assert [tile.size for tile in tiles] == [(100, 50)] * 4
    assert [tile.getpixel((50, 25)) for tile in tiles] == colors
    odd = split_grid(Image.new("RGB", (201, 99)))
    assert [tile.size for tile in odd] == [(100, 49)] * 4
    with pytest.raises(NotAGrid, match="too small"):
        split_grid(Image.new("RGB", (10, 10)))
