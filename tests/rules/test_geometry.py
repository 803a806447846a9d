"""rules.geometry: the pad and crop geometries place and size the image as open_clip does
(tests/hps checks them against open_clip's own transforms pixel for pixel); the pad geometry is
its two halves, which the intake stores and the scorer finishes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from rules.geometry import pad_square, resize_crop, resize_longest, resize_pad


def noise(width: int, height: int) -> Image.Image:
    rng = np.random.default_rng(width * 7 + height)
    return Image.fromarray(rng.integers(1, 256, (height, width, 3), dtype=np.uint8), "RGB")


@pytest.mark.parametrize(
    "width,height,expected",
    [(512, 512, (224, 224)), (300, 1000, (67, 224)), (1000, 301, (224, 67)), (3, 700, (1, 224))],
)
def test_longest_side_goes_to_the_size(width: int, height: int, expected: tuple[int, int]) -> None:
    assert resize_longest(noise(width, height), 224).size == expected


def test_pad_centres_the_resized_image_on_black() -> None:
    image = noise(1000, 301)  # resized to 224 x 67: 78 black rows above, 79 below
    padded = np.asarray(resize_pad(image, 224))
    assert padded.shape == (224, 224, 3)
    assert not padded[:78].any() and not padded[78 + 67 :].any()
    assert (padded[78 : 78 + 67] > 0).all()  # noise() has no black pixel
    assert np.array_equal(padded[78 : 78 + 67], np.asarray(resize_longest(image, 224)))


def test_pad_is_its_two_halves_and_a_square_of_size_is_left_alone() -> None:
    for width, height in [(300, 1000), (224, 224), (223, 225), (1, 1)]:
        image = noise(width, height)
        halves = pad_square(resize_longest(image, 224), 224)
        assert resize_pad(image, 224).tobytes() == halves.tobytes()
    square = noise(64, 64)
    assert pad_square(square, 64) is square


@pytest.mark.parametrize("width,height", [(512, 512), (300, 1000), (1000, 301), (3, 700), (1, 1)])
def test_crop_is_a_centred_square_of_the_shortest_side_resize(width: int, height: int) -> None:
    image = noise(width, height)
    cropped = resize_crop(image, 64)
    assert cropped.size == (64, 64)
    short, long = sorted(image.size)
    new_long = int(64 * long / short)
    size = (64, new_long) if width <= height else (new_long, 64)
    resized = np.asarray(image.resize(size, Image.Resampling.BICUBIC))
    top, left = round((size[1] - 64) / 2), round((size[0] - 64) / 2)
    assert np.array_equal(np.asarray(cropped), resized[top : top + 64, left : left + 64])
