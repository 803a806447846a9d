"""Which model made each image of a harvested generation, where the generator's message says so.

The labels end up in ``Generation.params`` and feed the arena's ratings
(:mod:`db.harvest_ratings`): a pick among images of different models is a win of the picked
image's model over the others. So a label is read only from what the *generator* wrote, never
from the prompt (the requester's own words), and only in these documented forms:

- **Alt text** (an attachment's description): ``model: <label>`` (or ``model=<label>``).
- **Filename**: ``model-<label>`` at the start of the name, ended by ``_``, the extension or
  the end: ``model-sdxl_0.png``, ``model-sd-1.5.png``. Plain names (``image_0.png``) name no
  model: an arbitrary filename is no evidence of which model made the image.
- **Message text** after the bold prompt (the generator's own suffix): one line
  ``Models: sdxl, sd-1.5`` (one label per image, in order; the count must match the images)
  or numbered ``Models: 1=sdxl, 2: sd-1.5`` (images not numbered stay unlabelled).

Per image the alt text wins over the filename, which wins over the message text. A label is
lower-cased, its whitespace collapsed, and it must match :data:`LABEL` (letters, digits and
``. _ + -`` and spaces, at most :data:`MAX_LABEL_CHARS`): a label is shown in the leaderboard's
code-block table, where a backtick or a mention must never appear.

Midjourney's version is a parameter of the prompt itself (``--v 6.1``, ``--niji 6``): that is
where Midjourney reads it too, so :func:`midjourney_model` reads it there.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

MAX_LABEL_CHARS = 48
LABEL = re.compile(r"[a-z0-9][a-z0-9 ._+-]*")
DESCRIPTION = re.compile(r"^\s*model\s*[:=]\s*(.+?)\s*$", re.IGNORECASE)
FILENAME = re.compile(r"^model-([A-Za-z0-9.+-]+)(?:_.*)?$")
MODELS_LINE = re.compile(r"^\s*models?\s*:\s*(.+?)\s*$", re.IGNORECASE | re.MULTILINE)
NUMBERED = re.compile(r"^(\d{1,2})\s*[:=.)]\s*(.+)$")
ITEM_SEPARATORS = re.compile(r"[,;|]")
# ``--v 6.1``, ``--version 5.2``, ``--niji 6``, ``--niji`` (also with the em dash that phones
# type for ``--``); the last one wins, as later parameters override earlier ones.
MJ_VERSION = re.compile(r"(?:--|\u2014)(v|version|niji)(?:[ =]+(\d+(?:\.\d+)?))?(?![\w.])")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".gif")


def normalise_label(text: str | None) -> str | None:
    """``text`` as a model label (lower-case, single spaces), None when it is not one."""
    if text is None:
        return None
    label = " ".join(text.split()).lower()
    if not label or len(label) > MAX_LABEL_CHARS or LABEL.fullmatch(label) is None:
        return None
    return label


def label_from_description(description: str | None) -> str | None:
    """The label of alt text ``model: <label>``, else None."""
    match = DESCRIPTION.match(description or "")
    return normalise_label(match.group(1)) if match else None


def label_from_filename(filename: str) -> str | None:
    """The label of a filename ``model-<label>[_<anything>].<ext>``, else None."""
    stem = filename
    if stem.lower().endswith(IMAGE_EXTENSIONS):
        stem = stem.rsplit(".", 1)[0]
    match = FILENAME.match(stem)
    return normalise_label(match.group(1)) if match else None


def labels_from_text(suffix: str, count: int) -> list[str | None]:
    """Labels per image from a ``Models:`` line of the generator's own text (``suffix``: the
    message after the bold prompt). All None without such a line, or when an unnumbered list
    does not have exactly ``count`` valid labels."""
    unlabelled: list[str | None] = [None] * count
    match = MODELS_LINE.search(suffix)
    if match is None:
        return unlabelled
    items = [item.strip() for item in ITEM_SEPARATORS.split(match.group(1)) if item.strip()]
    numbered = [NUMBERED.match(item) for item in items]
    if items and all(numbered):
        labels = list(unlabelled)
        for found in numbered:
            assert found is not None
            position = int(found.group(1)) - 1
            if 0 <= position < count:
                labels[position] = normalise_label(found.group(2))
        return labels
    plain = [normalise_label(item) for item in items]
    if len(plain) != count or any(label is None for label in plain):
        return unlabelled
    return plain


def image_models(
    filenames: Sequence[str], descriptions: Sequence[str | None], suffix: str
) -> list[str | None] | None:
    """The model label of each image (alt text, else filename, else the ``Models:`` line), or
    None when no image has one."""
    from_text = labels_from_text(suffix, len(filenames))
    labels = [
        label_from_description(description) or label_from_filename(filename) or text_label
        for filename, description, text_label in zip(
            filenames, descriptions, from_text, strict=True
        )
    ]
    return labels if any(label is not None for label in labels) else None


def midjourney_model(prompt: str) -> str | None:
    """The Midjourney model a prompt asks for: ``midjourney v6.1`` for ``--v 6.1``,
    ``midjourney niji 6`` for ``--niji 6``; None (unknown: Midjourney's default changes over
    time) without a version parameter or with one that names no number (``--niji`` alone)."""
    found = list(MJ_VERSION.finditer(prompt))
    if not found:
        return None
    kind, number = found[-1].group(1), found[-1].group(2)
    if number is None:
        return None
    name = f"niji {number}" if kind == "niji" else f"v{number}"
    return normalise_label(f"midjourney {name}")
