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
    if kind == "rank_result":
        ranking = ", ".join(
            f"#{entry['position'] + 1}: {entry['score']:.2f}"
            for entry in payload.get("ranking", [])
        )
        model = payload.get("model_version", {}).get("name", "?")
        return f"{user}ranking by HPS ({model}): {ranking}", []
    if kind == "regenerate_result":
        redone = payload.get("regenerated", {})
        original = payload.get("original", {})
        best = original.get("best_score")
        before = f"best original {best:.2f}" if best is not None else "no original"
        files = []
        if redone.get("sha256"):
            files.append(
                discord.File(io.BytesIO(store.get(redone["sha256"])), filename="regenerated.png")
            )
        candidates = redone.get("candidates", "?")
        return (
            f"{user}**{payload.get('prompt', '')}** regenerated (best of {candidates}): "
            f"HPS {redone.get('score', 0):.2f} vs {before}",
            files,
        )
    text = payload.get("text") or f"{kind.replace('_', ' ')} finished"
    return f"{user}{text}", _stored_files(payload, store)


def _stored_files(payload: dict[str, Any], store: ImageStore) -> list[discord.File]:
    """Files a job put in the blob store and listed as ``files: [{sha256, filename}]``.

    This is the generic contract for reports (charts, evaluation plots): any job may write
    ``text`` and ``files`` into its outbox payload and the bot posts them as they are."""
    files = []
    for entry in payload.get("files", [])[:10]:  # Discord allows at most 10 files per message
        files.append(discord.File(io.BytesIO(store.get(entry["sha256"])), entry["filename"]))
    return files
