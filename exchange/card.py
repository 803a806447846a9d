"""The dataset card (``README.md`` with Hugging Face metadata) and its histogram."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from db.datasets import SPLITS

FORMATS = ("pickapic", "hpd")  # the export formats, in the order they are written

DEFAULT_LICENSE = "cc-by-4.0"
HISTOGRAM_FILE = "histogram.png"


@dataclass
class CardInfo:
    """Everything the card states about one export."""

    name: str
    license: str
    created_at: datetime
    cutoff: datetime
    formats: list[str]
    counts: dict[str, int]
    splits: dict[str, dict[str, int]]
    consent_modes: dict[str, int] = field(default_factory=dict)
    opted_out_users: int = 0
    scope: str = "every server where harvesting was enabled"
    files: list[str] = field(default_factory=list)


def pooled_scope_text(guild_ids: list[int]) -> str:
    """The scope line of an export that spans guilds: which ones pooled their data."""
    listed = ", ".join(str(g) for g in guild_ids) if guild_ids else "none"
    return (
        "the Discord servers whose admins chose to pool their data (`/hps admin sharing "
        f"pooled`), server ids: {listed}; plus datasets imported by the operators"
    )


def histogram_png(choices_per_prompt: Iterable[int], images_per_set: Iterable[int]) -> bytes:
    """Two histograms side by side: choices per prompt and images per set, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("choices per prompt", Counter(choices_per_prompt), "tab:blue"),
        ("images per set", Counter(images_per_set), "tab:orange"),
    ]
    figure, axes = plt.subplots(1, 2, figsize=(8, 3.2), dpi=100)
    for axis, (title, counter, color) in zip(axes, panels, strict=True):
        values = sorted(counter)
        if values and len(values) <= 30:
            axis.bar(values, [counter[v] for v in values], color=color, width=0.8)
            if len(values) <= 20:
                axis.set_xticks(values)
        elif values:  # a long tail: 30 bins instead of one bar per value
            axis.hist(values, bins=30, weights=[counter[v] for v in values], color=color)
        else:
            axis.text(0.5, 0.5, "no data", ha="center", va="center", transform=axis.transAxes)
        axis.set_title(title)
        axis.set_xlabel(title.split(" per ")[0])
        axis.set_ylabel("prompts" if "prompt" in title else "sets")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def _size_category(rows: int) -> str:
    for limit, label in (
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
        (10_000_000, "1M<n<10M"),
    ):
        if rows < limit:
            return label
    return "n>10M"


def _consent_statement(info: CardInfo) -> str:
    modes = info.consent_modes
    mode_text = (
        ", ".join(f"{count} in `{mode}` mode" for mode, count in sorted(modes.items()))
        if modes
        else "no guild configuration recorded (data imported or made by jobs)"
    )
    return (
        "The choices were recorded by the HPS Discord bot only in channels a server "
        "administrator enabled for harvesting (guilds: " + mode_text + "). In `opt_out` guilds "
        "members are recorded unless they run `/hps privacy optout`; in `opt_in` guilds only "
        "members who ran `/hps privacy optin` are recorded. Members who opted out "
        f"({info.opted_out_users} at export time) are excluded from this export, and so are "
        "generations they requested; members who asked to be forgotten "
        "(`/hps privacy forget-me`) had all their rows deleted before the export and cannot "
        "appear. No Discord ids, names or avatars are included: `user_id` is a salted keyed "
        "hash that is stable within this deployment and cannot be reversed without its salt."
    )


def render_card(info: CardInfo) -> str:
    """The dataset card as markdown with YAML front matter (HF ``configs`` point at the
    parquet shards, so ``datasets.load_dataset(<folder>)`` finds the splits)."""
    lines = _front_matter(info) + _introduction(info) + _counts_table(info.counts)
    lines += _splits_table(info.splits) + _formats_section(info.formats)
    lines += ["## Consent and privacy", "", _consent_statement(info), ""]
    if info.files:
        lines += ["## Files", ""] + [f"- `{name}`" for name in info.files] + [""]
    return "\n".join(lines)


_COUNT_LABELS = (
    ("prompts", "prompts"),
    ("generations", "generations (image sets)"),
    ("images", "images"),
    ("choices", "choices"),
    ("picks", "... picks (one image chosen)"),
    ("skips", "... skips (no image preferred; ties in the parquet)"),
    ("users", "users (pseudonymous)"),
    ("pairs", "Pick-a-Pic rows (pairs)"),
)

_PICKAPIC_FORMAT = [
    "**Pick-a-Pic parquet** (`data/<split>-NNNNN-of-NNNNN.parquet`): one row per pair of "
    "images. A pick of one image among n makes n - 1 rows (the chosen image against "
    "each other one, labels 1/0); a skip makes n(n-1)/2 tie rows (labels 0.5/0.5, "
    "empty `best_image_uid`). `jpg_0`/`jpg_1` are JPEG bytes; `image_*_uid` is the "
    "sha256 of the stored PNG; `ranking_id` identifies the choice; `created_at` is when "
    "it was made; `num_example_per_prompt` counts the rows of the prompt; "
    "`generation_uid`, `image_0_position`, `image_1_position` rebuild the image sets.",
    "",
    "```python",
    "import datasets",
    'ds = datasets.load_dataset("parquet", data_files={',
    '    "train": "data/train-*.parquet", "validation": "data/validation-*.parquet",',
    '    "test": "data/test-*.parquet"})',
    "```",
    "",
]

_HPD_FORMAT = [
    "**HPD JSON** (`hpd/`): `v1_<split>.json` has one record per pick "
    "(`prompt`, `file_path`, `human_preference` = index of the chosen image); "
    "`v2_<split>.json` has one record per generation in HPD v2 test style (`prompt`, "
    "`image_path`, `rank`: images ordered by how many users picked them, equal counts "
    "share a rank, never-picked images share the last rank; `votes` beside it). "
    "Images are `hpd/images/<split>/<sha256>.png`.",
    "",
]


def _front_matter(info: CardInfo) -> list[str]:
    """The YAML header Hugging Face reads (licence, tags, size, parquet splits)."""
    lines = ["---", f"license: {info.license}", f"pretty_name: {info.name}"]
    lines += ["task_categories:", "- text-to-image", "tags:", "- human-preference"]
    size = _size_category(info.counts["pairs"])
    lines += ["- pick-a-pic", "- hpd", "size_categories:", f"- {size}"]
    if "pickapic" in info.formats:
        lines += ["configs:", "- config_name: default", "  data_files:"]
        for split in SPLITS:
            lines += [f"  - split: {split}", f"    path: data/{split}-*.parquet"]
    return [*lines, "---", ""]


def _introduction(info: CardInfo) -> list[str]:
    return [
        f"# {info.name}",
        "",
        "Human preference choices among text-to-image generations, collected on Discord by "
        "the HPS platform (method of *Human Preference Score*, Wu et al., ICCV 2023, "
        "arXiv 2303.14420).",
        "",
        f"- scope: {info.scope}",
        f"- exported: {info.created_at.isoformat(timespec='seconds')}",
        f"- choices made up to: {info.cutoff.isoformat(timespec='seconds')}",
        f"- licence: `{info.license}` (the images may also be subject to the terms of the "
        "generators that made them: see `model_0`/`model_1`)",
        "",
    ]


def _counts_table(counts: dict[str, int]) -> list[str]:
    lines = ["## Counts", "", "| what | count |", "| --- | ---: |"]
    return lines + [f"| {label} | {counts.get(key, 0):,} |" for key, label in _COUNT_LABELS]


def _splits_table(splits: dict[str, dict[str, int]]) -> list[str]:
    lines = [
        "",
        "## Splits",
        "",
        "Split **by prompt** (a salted hash of the normalised prompt, 80/10/10): all image sets "
        "and choices of a prompt are in one split, so a model is never evaluated on a prompt "
        "it was trained on.",
        "",
        "| split | prompts | generations | choices | parquet rows | HPD v1 records "
        "| HPD v2 records |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for split in SPLITS:
        row = splits.get(split, {})
        lines.append(
            f"| {split} | {row.get('prompts', 0):,} | {row.get('generations', 0):,} | "
            f"{row.get('choices', 0):,} | {row.get('pairs', 0):,} | {row.get('hpd_v1', 0):,} | "
            f"{row.get('hpd_v2', 0):,} |"
        )
    return [*lines, "", f"![choices per prompt and images per set]({HISTOGRAM_FILE})", ""]


def _formats_section(formats: list[str]) -> list[str]:
    lines = ["## Formats", ""]
    if "pickapic" in formats:
        lines += _PICKAPIC_FORMAT
    if "hpd" in formats:
        lines += _HPD_FORMAT
    return lines
