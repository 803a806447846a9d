"""Image bytes for exports: read from the blob store once per generation, JPEG for
Pick-a-Pic, the stored canonical PNG for HPD folders."""

from __future__ import annotations

import io
from collections import OrderedDict

from PIL import Image

from media.store import ImageStore

DEFAULT_JPEG_QUALITY = 95


def to_jpeg(png: bytes, quality: int = DEFAULT_JPEG_QUALITY) -> bytes:
    """Re-encode stored (RGB PNG) bytes as a baseline JPEG of the given quality."""
    with Image.open(io.BytesIO(png)) as image:
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        buffer = io.BytesIO()
        rgb.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


class ImageReader:
    """Reads blobs by sha256 with a small LRU cache of PNG and JPEG bytes.

    Export rows come in generation order, so a cache of a few generations' images serves
    every choice on a generation from one store read and one JPEG encode, while the memory
    held stays bounded (``max_entries`` images of each kind)."""

    def __init__(
        self, store: ImageStore, *, jpeg_quality: int = DEFAULT_JPEG_QUALITY, max_entries: int = 64
    ) -> None:
        self.store = store
        self.jpeg_quality = jpeg_quality
        self.max_entries = max_entries
        self._png: OrderedDict[str, bytes] = OrderedDict()
        self._jpeg: OrderedDict[str, bytes] = OrderedDict()

    def _remember(self, cache: OrderedDict[str, bytes], key: str, value: bytes) -> bytes:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > self.max_entries:
            cache.popitem(last=False)
        return value

    def png(self, sha256: str) -> bytes:
        """The stored bytes; raises media.store.BlobNotFound when the blob is gone."""
        cached = self._png.get(sha256)
        if cached is not None:
            self._png.move_to_end(sha256)
            return cached
        return self._remember(self._png, sha256, self.store.get(sha256))

    def jpeg(self, sha256: str) -> bytes:
        """The image as JPEG bytes."""
        cached = self._jpeg.get(sha256)
        if cached is not None:
            self._jpeg.move_to_end(sha256)
            return cached
        return self._remember(self._jpeg, sha256, to_jpeg(self.png(sha256), self.jpeg_quality))
