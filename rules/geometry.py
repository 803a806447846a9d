"""Image geometry of the model inputs, in Pillow alone (no numpy, no torch).

Two geometries, both reproducing open_clip's eval transforms pixel for pixel:

- ``pad`` (the paper's): :func:`resize_longest` (the longest side to the model resolution,
  bicubic, aspect kept), then :func:`pad_square` (zero-pad to a centred square);
  :func:`resize_pad` is both;
- ``crop`` (CLIP's): :func:`resize_crop` (the shortest side to the resolution, centre crop).

``hps.pixels`` shapes what the models see with these; ``media.model_inputs`` stores each
image's input with the same functions, so a stored input is the scorer's input to the bit.
"""

from __future__ import annotations

from PIL import Image


def resize_longest(image: Image.Image, size: int) -> Image.Image:
    """The longest side to ``size`` (bicubic, aspect kept, each side at least 1 px): the
    arithmetic of open_clip's ``resize_mode='longest'``, before its padding."""
    ratio = max(image.width / size, image.height / size)
    width, height = max(1, round(image.width / ratio)), max(1, round(image.height / ratio))
    return image.resize((width, height), Image.Resampling.BICUBIC)


def pad_square(image: Image.Image, size: int) -> Image.Image:
    """``image`` (no side above ``size``) centred on a black RGB square of ``size``; a square
    of ``size`` is returned as it is."""
    if image.size == (size, size):
        return image
    canvas = Image.new("RGB", (size, size), (0, 0, 0))
    canvas.paste(image, ((size - image.width) // 2, (size - image.height) // 2))
    return canvas


def resize_pad(image: Image.Image, size: int) -> Image.Image:
    """The ``pad`` geometry: :func:`resize_longest`, then :func:`pad_square`."""
    return pad_square(resize_longest(image, size), size)


def resize_crop(image: Image.Image, size: int) -> Image.Image:
    """The ``crop`` geometry: the shortest side to ``size`` (bicubic), then a centred square
    (torchvision's Resize + CenterCrop arithmetic, as in open_clip's default eval transform)."""
    short, long = sorted((image.width, image.height))
    new_long = int(size * long / short)
    width, height = (size, new_long) if image.width <= image.height else (new_long, size)
    resized = image.resize((width, height), Image.Resampling.BICUBIC)
    top = round((height - size) / 2.0)
    left = round((width - size) / 2.0)
    return resized.crop((left, top, left + size, top + size))
