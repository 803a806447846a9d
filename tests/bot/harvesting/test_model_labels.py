"""Model labels per harvested image: alt text, filenames and the generator's ``Models:`` line
(multi-attachment adapter), and Midjourney's version parameter; never from the prompt."""

from __future__ import annotations

import pytest

from bot.harvesting.adapters import midjourney, multi_attachment
from bot.harvesting.adapters.base import AttachmentRef, GeneratorMessage, ParsedGeneration
from bot.harvesting.model_labels import (
    image_models,
    label_from_description,
    label_from_filename,
    labels_from_text,
    midjourney_model,
    normalise_label,
)

USER = 111111111111111111


def image(filename: str, description: str | None = None) -> AttachmentRef:
    return AttachmentRef(f"https://cdn/{filename}", filename, 10, "image/png", description)


def parse(content: str, attachments: list[AttachmentRef]) -> ParsedGeneration:
    parsed = multi_attachment.ADAPTER.read(GeneratorMessage(1, content, attachments, True))
    assert isinstance(parsed, ParsedGeneration)
    return parsed


@pytest.mark.parametrize(
    ("filename", "label"),
    [
        ("model-sdxl_0.png", "sdxl"),
        ("model-sd-1.5.png", "sd-1.5"),
        ("model-SD-1.5_seed_42.webp", "sd-1.5"),
        ("model-sd3+lora_1.JPG", "sd3+lora"),
        ("sdxl_0.png", None),  # a plain name names no model
        ("image_0.png", None),
        ("model-_0.png", None),
        ("mymodel-sdxl.png", None),
    ],
)
def test_labels_from_filenames(filename: str, label: str | None) -> None:
    assert label_from_filename(filename) == label


@pytest.mark.parametrize(
    ("description", "label"),
    [
        ("model: SDXL", "sdxl"),
        ("Model = Stable Diffusion 1.5", "stable diffusion 1.5"),
        ("  model:  midjourney   v6.1 ", "midjourney v6.1"),
        ("a red fox in the snow", None),  # alt text that is the prompt
        ("model: `x` <@123>", None),  # never a backtick or a mention in a label
        ("model: " + "x" * 49, None),  # too long
        (None, None),
    ],
)
def test_labels_from_alt_text(description: str | None, label: str | None) -> None:
    assert label_from_description(description) == label


def test_models_line_in_order_numbered_or_ignored() -> None:
    assert labels_from_text(" - <@1>\nModels: sdxl, SD-1.5", 2) == ["sdxl", "sd-1.5"]
    assert labels_from_text("\nmodels: 2=sd-1.5; 1: sdxl", 3) == ["sdxl", "sd-1.5", None]
    assert labels_from_text("\nModels: 1=sdxl, 9=far", 2) == ["sdxl", None]
    assert labels_from_text("\nModels: sdxl, sd-1.5, extra", 2) == [None, None]  # count differs
    assert labels_from_text("\nModels: sdxl, `bad`", 2) == [None, None]
    assert labels_from_text(" - <@1> (fast)", 2) == [None, None]


def test_alt_text_wins_over_filename_over_text() -> None:
    labels = image_models(
        ["model-a_0.png", "model-b_1.png", "x.png"],
        ["model: c", None, None],
        "\nModels: d, e, f",
    )
    assert labels == ["c", "b", "f"]
    assert image_models(["0.png", "1.png"], [None, None], "") is None
    assert normalise_label("  SDXL   Turbo ") == "sdxl turbo"


def test_multi_attachment_stores_per_image_labels_in_params() -> None:
    parsed = parse(
        f"**a red fox** - <@{USER}>", [image("model-sdxl_0.png"), image("model-sd-1.5_1.png")]
    )
    assert parsed.params == {"image_models": ["sdxl", "sd-1.5"]}
    assert parsed.prompt == "a red fox"
    described = parse(f"**a red fox** - <@{USER}>", [image("0.png", "model: sdxl"), image("1.png")])
    assert described.params == {"image_models": ["sdxl", None]}
    listed = parse(
        f"**a red fox** - <@{USER}>\nModels: 1: sdxl, 2: sd-1.5", [image("0.png"), image("1.png")]
    )
    assert listed.params == {"image_models": ["sdxl", "sd-1.5"]}
    assert parse(f"**a red fox** - <@{USER}>", [image("0.png"), image("1.png")]).params == {}


def test_labels_are_never_read_from_the_prompt() -> None:
    content = f"**a cat\nModels: sdxl, sd-1.5** - <@{USER}>"
    parsed = parse(content, [image("0.png"), image("1.png")])
    assert parsed.params == {} and "Models: sdxl" in parsed.prompt
    # Without a bold prompt the whole text is the prompt: no labels from text either.
    plain = parse("a cat\nModels: sdxl, sd-1.5", [image("0.png"), image("1.png")])
    assert plain.params == {}


@pytest.mark.parametrize(
    ("prompt", "model"),
    [
        ("a fox --v 6.1", "midjourney v6.1"),
        ("a fox --ar 16:9 --version 5.2 --q 2", "midjourney v5.2"),
        ("a fox --niji 6", "midjourney niji 6"),
        ("a fox \u2014v 6", "midjourney v6"),  # a phone's em dash for --
        ("a fox --v 5 --v 6", "midjourney v6"),  # the last one wins
        ("a fox", None),  # absent: unknown
        ("a fox --niji", None),  # no number: unknown
        ("a vivid fox --vivid 3", None),
        ("a fox --v6", None),
    ],
)
def test_midjourney_version_from_the_prompt(prompt: str, model: str | None) -> None:
    assert midjourney_model(prompt) == model


def test_midjourney_grid_stores_its_version_or_none() -> None:
    grid = [image("grid.png")]
    parsed = midjourney.parse_grid(
        f"**a fox --v 6.1** - <@{USER}> (fast)", grid, author_is_bot=True
    )
    assert parsed is not None
    assert parsed.params == {"layout": "2x2 grid", "model": "midjourney v6.1"}
    unknown = midjourney.parse_grid(f"**a fox** - <@{USER}> (fast)", grid, author_is_bot=True)
    assert unknown is not None and unknown.params == {"layout": "2x2 grid"}
