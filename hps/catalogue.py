"""The catalogue of published weights that ``hps models fetch NAME`` downloads: data, not code.

Each entry names a Hugging Face repository, a revision and the files to take from it. A
revision that is a 40-hex commit sha is *pinned* (the same bytes forever); ``main`` is
*unpinned*: the entries below say so, and ``hps models list`` shows it, because their commit
shas could not be looked up where this catalogue was written (no network). Pin one by replacing
``main`` with the commit sha the Hub shows for the repository (``hps models fetch`` prints the
commit it got). Where a publisher's sha256 of a file is known it goes in ``sha256``; a fetched
file that hashes otherwise is refused. Without one, the Hub's own LFS sha256 is checked.

Kinds:

- ``hps``: a scorer, registered as a model version of kind ``hps`` (``--activate`` makes it
  the active one, global or ``--guild``'s);
- ``base``: a pretrained CLIP to train from (not a scorer; recorded, not registered);
- ``pipeline``: a Stable Diffusion pipeline in diffusers format, recorded in
  ``MODELS_DIR/catalogue/NAME.json`` so that ``SD_PIPELINE=NAME`` and ``hps adapt --pipeline
  NAME`` resolve to the fetched folder.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["hps", "base", "pipeline"]
COMMIT_SHA = re.compile(r"[0-9a-f]{40}")
# Files whose sha256 is computed, checked and recorded (the rest are small configs).
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


@dataclass(frozen=True)
class CatalogueEntry:
    """One published set of weights."""

    name: str
    kind: Kind
    description: str
    repo: str | None
    revision: str
    files: tuple[str, ...]  # exact names or glob patterns (snapshot_download allow_patterns)
    architecture: str | None = None  # hps: the scorer architecture; base: what it is a base for
    checkpoint: str | None = None  # hps: the file registered; base: the file training starts from
    pipeline_class: str | None = None  # pipeline: the diffusers class
    variant: str | None = None  # pipeline: diffusers variant of the weight files ("fp16")
    size_bytes: int | None = None  # None where not known here
    sha256: Mapping[str, str] = field(default_factory=dict)  # file -> publisher's sha256
    note: str = ""

    @property
    def pinned(self) -> bool:
        """Whether the revision is a commit sha (immutable)."""
        return bool(COMMIT_SHA.fullmatch(self.revision))

    @property
    def fetchable(self) -> bool:
        """Whether ``hps models fetch NAME`` can download it (it is on the Hub)."""
        return self.repo is not None


def _sd_files(*folders: str) -> tuple[str, ...]:
    """The fp16 safetensors of a diffusers pipeline: configs, tokenizers, scheduler, and the
    ``*.fp16.safetensors`` weights of each model folder (never pickles, never fp32)."""
    files = ["model_index.json", "scheduler/*"]
    for folder in folders:
        if folder.startswith("tokenizer") or folder == "feature_extractor":
            files.append(f"{folder}/*")
        else:
            files += [f"{folder}/config.json", f"{folder}/*.fp16.safetensors"]
    return tuple(files)


UNPINNED = "unpinned: revision main (commit sha not looked up offline)"

ENTRIES: tuple[CatalogueEntry, ...] = (
    CatalogueEntry(
        name="hps-v1",
        kind="hps",
        description="HPS v1 (OpenAI CLIP ViT-L/14, QuickGELU) fine-tuned on HPD v1",
        repo=None,
        revision="-",
        files=("hpc.pth",),
        architecture="hps-v1",
        checkpoint="hpc.pth",
        note="not on the Hugging Face Hub: download hpc.pth from the authors' link "
        "(tgxs002/align_sd), then `hps models fetch <https URL> --sha256 ...` and "
        "`hps registry add --arch hps-v1`. A torch pickle: read with weights_only=True only.",
    ),
    CatalogueEntry(
        name="hps-v2",
        kind="hps",
        description="HPS v2 (open_clip ViT-H/14), fp16 compressed",
        repo="xswu/HPSv2",
        revision="main",
        files=("HPS_v2_compressed.pt",),
        architecture="hps-v2",
        checkpoint="HPS_v2_compressed.pt",
        note=UNPINNED + "; a torch pickle: read with weights_only=True only",
    ),
    CatalogueEntry(
        name="hps-v2.1",
        kind="hps",
        description="HPS v2.1 (open_clip ViT-H/14), fp16 compressed",
        repo="xswu/HPSv2",
        revision="main",
        files=("HPS_v2.1_compressed.pt",),
        architecture="hps-v2",
        checkpoint="HPS_v2.1_compressed.pt",
        note=UNPINNED + "; a torch pickle: read with weights_only=True only",
    ),
    CatalogueEntry(
        name="pickscore-v1",
        kind="hps",
        description="PickScore v1 (CLIP ViT-H/14, Hugging Face format)",
        repo="yuvalkirstain/PickScore_v1",
        revision="main",
        files=("config.json", "model.safetensors"),
        architecture="pickscore",
        checkpoint="model.safetensors",
        note=UNPINNED,
    ),
    CatalogueEntry(
        name="openai-vit-l-14",
        kind="base",
        description="OpenAI CLIP ViT-L/14 (open_clip safetensors, as open_clip itself fetches "
        "it): the base of HPS v1's recipe (hps train --base openai-vit-l-14)",
        repo="timm/vit_large_patch14_clip_224.openai",
        revision="main",
        files=("open_clip_model.safetensors",),
        architecture="hps-v1",
        checkpoint="open_clip_model.safetensors",
        note=UNPINNED,
    ),
    CatalogueEntry(
        name="laion-vit-h-14",
        kind="base",
        description="LAION-2B CLIP ViT-H/14 (open_clip safetensors): the base of HPS v2",
        repo="laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
        revision="main",
        files=("open_clip_model.safetensors",),
        architecture="hps-v2",
        checkpoint="open_clip_model.safetensors",
        note=UNPINNED + "; the safetensors variant (open_clip_pytorch_model.bin is a pickle)",
    ),
    CatalogueEntry(
        name="sd-1.5",
        kind="pipeline",
        description="Stable Diffusion 1.5 (diffusers, fp16 safetensors)",
        repo="stable-diffusion-v1-5/stable-diffusion-v1-5",
        revision="main",
        files=_sd_files("feature_extractor", "text_encoder", "tokenizer", "unet", "vae"),
        pipeline_class="StableDiffusionPipeline",
        variant="fp16",
        note=UNPINNED,
    ),
    CatalogueEntry(
        name="sdxl",
        kind="pipeline",
        description="Stable Diffusion XL base 1.0 (diffusers, fp16 safetensors)",
        repo="stabilityai/stable-diffusion-xl-base-1.0",
        revision="main",
        files=_sd_files(
            "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "unet", "vae"
        ),
        pipeline_class="StableDiffusionXLPipeline",
        variant="fp16",
        note=UNPINNED + "; its VAE overflows in fp16 (upcast it if images come out black)",
    ),
)

CATALOGUE: dict[str, CatalogueEntry] = {entry.name: entry for entry in ENTRIES}


# A JSON file of more entries (a list of objects with CatalogueEntry's fields), added to the
# catalogue or replacing entries of the same name: a private mirror's repositories, the tests'.
EXTRA_CATALOGUE_ENV = "HPS_CATALOGUE"


def load_catalogue() -> dict[str, CatalogueEntry]:
    """The catalogue, plus the entries of the file named by ``$HPS_CATALOGUE`` (if set)."""
    entries = dict(CATALOGUE)
    extra = os.environ.get(EXTRA_CATALOGUE_ENV)
    if extra:
        with open(extra, encoding="utf-8") as handle:
            for item in json.load(handle):
                item["files"] = tuple(item["files"])
                entry = CatalogueEntry(**item)
                entries[entry.name] = entry
    return entries


def get_entry(name: str, catalogue: Mapping[str, CatalogueEntry] | None = None) -> CatalogueEntry:
    """The entry called ``name`` (of :func:`load_catalogue` by default); KeyError listing the
    known names otherwise."""
    entries = load_catalogue() if catalogue is None else catalogue
    try:
        return entries[name]
    except KeyError:
        raise KeyError(f"{name!r} is not in the catalogue ({', '.join(sorted(entries))})") from None


def is_weight_file(path: str) -> bool:
    """Whether ``path`` is a weights file (hashed, checked and recorded)."""
    return path.endswith(WEIGHT_SUFFIXES)
