"""How job results read in Discord: short text, images attached where there are some."""

from __future__ import annotations

import io
from typing import Any

import discord

from media.store import ImageStore


def _percentile(value: float | None) -> str:
    return "" if value is None else f" (better than {value:.0f}% of the community's images)"


def render_result(
    kind: str, payload: dict[str, Any], store: ImageStore
) -> tuple[str, list[discord.File]]:
    """The message text and files for one outbox row."""
    user = f"<@{payload['requested_by']}> " if payload.get("requested_by") else ""
    if kind == "job_failed":
        return f"{user}that did not work: {payload.get('error', 'unknown error')}", []
    if kind == "score_result":
        model = payload.get("model_version", {}).get("name", "?")
        lines = [
            f"HPS {entry['score']:.2f}{_percentile(entry.get('percentile'))}"
            for entry in payload.get("scores", [])
        ]
        return f"{user}" + "; ".join(lines) + f" · model {model}", []
    if kind == "generate_result":
        files = [
            discord.File(io.BytesIO(store.get(image["sha256"])), filename=f"{n + 1}.png")
            for n, image in enumerate(payload.get("images", []))
        ]
        return f"{user}**{payload.get('prompt', '')}**", files
    return f"{user}{kind.replace('_', ' ')} finished", []
