"""Explicit download of published checkpoints (``hps models fetch``); nothing else downloads.

A download goes to a temporary file beside the target, is checked against its sha256 when one
is known or given, and only then renamed into place.
"""

from __future__ import annotations

import hashlib
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hps.checkpoints import CheckpointError


@dataclass(frozen=True)
class PublishedCheckpoint:
    name: str
    architecture: str
    url: str
    sha256: str | None
    description: str


# sha256 left None where the publisher gives none; pass --sha256 to pin a download.
PUBLISHED = {
    c.name: c
    for c in (
        PublishedCheckpoint(
            "hps-v2",
            "hps-v2",
            "https://huggingface.co/xswu/HPSv2/resolve/main/HPS_v2_compressed.pt",
            None,
            "HPS v2 (ViT-H/14, fp16 compressed)",
        ),
        PublishedCheckpoint(
            "hps-v2.1",
            "hps-v2",
            "https://huggingface.co/xswu/HPSv2/resolve/main/HPS_v2.1_compressed.pt",
            None,
            "HPS v2.1 (ViT-H/14, fp16 compressed)",
        ),
    )
}


def fetch(
    url: str,
    target: Path,
    *,
    sha256: str | None = None,
    timeout_s: float = 60.0,
    on_progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Download ``url`` to ``target`` (atomic), verifying ``sha256`` when given."""
    if not url.startswith("https://"):
        raise ValueError(f"refusing to download over a non-https URL: {url}")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=timeout_s) as response, partial.open("wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        done = 0
        while chunk := response.read(1 << 20):
            out.write(chunk)
            digest.update(chunk)
            done += len(chunk)
            if on_progress:
                on_progress(done, total)
    if sha256 and digest.hexdigest() != sha256.lower():
        partial.unlink(missing_ok=True)
        raise CheckpointError(f"{url}: sha256 is {digest.hexdigest()}, expected {sha256}")
    partial.replace(target)
    return target
