"""How job results read in Discord: short text, images attached where there are some.

Every post fits Discord's limits (2,000 characters, 10 files) and pings at most its requester:
user text (prompts, model names, error reasons) is escaped, the whole content has its mentions
escaped (worker-composed reports included), and each post carries ``allowed_mentions`` that
allow the requester's mention only."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import discord

from db.outbox import OutboxKind
from discord_text import MAX_CONTENT_CHARS, MAX_FILES, fit_content, quote_user_text
from media.store import ImageStore

PROMPT_CHARS = 300
NAME_CHARS = 64
REPORT_FILENAME = "report.txt"


@dataclass
class RenderedPost:
    """One Discord message: its content, files and who it may ping."""

    content: str
    files: list[discord.File] = field(default_factory=list)
    allowed_mentions: discord.AllowedMentions = field(default_factory=discord.AllowedMentions.none)
    # Only the requester should see it (a failure): ephemeral while the interaction lives.
    private: bool = False


def only_pings(user_id: int | None) -> discord.AllowedMentions:
    """Allowed mentions that ping ``user_id`` (if any) and nobody else: no @everyone, no
    @here, no roles, no reply ping."""
    users: list[discord.abc.Snowflake] | bool = (
        [discord.Object(id=user_id)] if user_id is not None else False
    )
    return discord.AllowedMentions(everyone=False, users=users, roles=False, replied_user=False)


def _percentile(value: float | None) -> str:
    return "" if value is None else f" (better than {value:.0f}% of the community's images)"


def _name(payload: dict[str, Any], key: str) -> str:
    return quote_user_text(str((payload.get(key) or {}).get("name", "?")), NAME_CHARS)


def _prompt(payload: dict[str, Any]) -> str:
    return quote_user_text(str(payload.get("prompt", "")), PROMPT_CHARS)


def render_result(kind: str, payload: dict[str, Any], store: ImageStore) -> RenderedPost:
    """The message for one outbox row."""
    requester = payload.get("requested_by")
    requester_id = int(requester) if requester else None
    user = f"<@{requester_id}> " if requester_id else ""
    body, files = _body(kind, payload, store)
    # Reports composed by workers may quote user text: no mention in them may work. The
    # requester's own mention is added after, and the only one allowed_mentions lets through.
    body = discord.utils.escape_mentions(body)
    content = user + body
    if len(content) > MAX_CONTENT_CHARS and len(files) < MAX_FILES:
        files.append(discord.File(io.BytesIO(body.encode()), filename=REPORT_FILENAME))
        note = f" (the whole text is in {REPORT_FILENAME})"
        content = fit_content(content, MAX_CONTENT_CHARS - len(note)) + note
    return RenderedPost(
        fit_content(content),
        files[:MAX_FILES],
        only_pings(requester_id),
        private=kind == OutboxKind.job_failed,
    )


def _body(kind: str, payload: dict[str, Any], store: ImageStore) -> tuple[str, list[discord.File]]:
    if kind == OutboxKind.job_failed:
        reason = quote_user_text(str(payload.get("error") or "unknown error"))
        return f"that did not work: {reason}", []
    if kind == OutboxKind.score_result:
        lines = [
            f"HPS {entry['score']:.2f}{_percentile(entry.get('percentile'))}"
            for entry in payload.get("scores", [])
        ]
        return "; ".join(lines) + f" · model {_name(payload, 'model_version')}", []
    if kind == OutboxKind.generate_result:
        files = [
            discord.File(io.BytesIO(store.get(image["sha256"])), filename=f"{n + 1}.png")
            for n, image in enumerate(payload.get("images", [])[:MAX_FILES])
        ]
        return f"**{_prompt(payload)}**", files
    if kind == OutboxKind.rank_result:
        ranking = ", ".join(
            f"#{entry['position'] + 1}: {entry['score']:.2f}"
            for entry in payload.get("ranking", [])
        )
        about = f" of **{_prompt(payload)}**" if payload.get("prompt") else ""
        return f"ranking{about} by HPS ({_name(payload, 'model_version')}): {ranking}", []
    if kind == OutboxKind.regenerate_result:
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
            f"**{_prompt(payload)}** regenerated (best of {candidates}): "
            f"HPS {redone.get('score', 0):.2f} vs {before}",
            files,
        )
    text = str(payload.get("text") or f"{kind.replace('_', ' ')} finished")
    return text, _stored_files(payload, store)


def _stored_files(payload: dict[str, Any], store: ImageStore) -> list[discord.File]:
    """Files a job put in the blob store and listed as ``files: [{sha256, filename}]``.

    This is the generic contract for reports (charts, evaluation plots): any job may write
    ``text`` and ``files`` into its outbox payload and the bot posts them as they are."""
    return [
        discord.File(io.BytesIO(store.get(entry["sha256"])), entry["filename"])
        for entry in payload.get("files", [])[:MAX_FILES]
    ]
