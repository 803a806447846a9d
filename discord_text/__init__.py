"""Text the product posts to Discord: user text escaped so that it neither pings nor formats,
and every message cut to Discord's limits.

Discord refuses (HTTP 400, code 50035) message content over 2,000 characters and more than 10
files or 10 embeds; ``@everyone``, ``@here``, ``<@id>`` and ``<@&id>`` in content ping unless the
post's ``allowed_mentions`` says otherwise. The bot sets ``allowed_mentions`` on every post; this
module makes the text itself harmless too, for the worker (which composes report texts) as well
as the bot. A leaf: it imports nothing of the product.
"""

from __future__ import annotations

from discord.utils import escape_markdown, escape_mentions

MAX_CONTENT_CHARS = 2000
MAX_FILES = 10
MAX_EMBEDS = 10
ELLIPSIS = "…"


def shorten(text: str, limit: int) -> str:
    """``text`` with its whitespace collapsed, cut to ``limit`` characters with an ellipsis."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + ELLIPSIS


def quote_user_text(text: str, limit: int = 300) -> str:
    """User text (a prompt, a licence string) as the bot may echo it: on one line, at most
    ``limit`` characters before escaping, markdown and mentions escaped.

    Escaping can lengthen the text (a backslash per markdown character, a zero-width space per
    mention), at most about threefold; callers budget for that or cut the whole content with
    :func:`fit_content` afterwards."""
    short = shorten(text, limit)
    return escape_mentions(escape_markdown(short))


def fit_content(content: str, limit: int = MAX_CONTENT_CHARS) -> str:
    """``content`` cut to Discord's limit with an ellipsis (never inside an escape: a trailing
    lone backslash would escape the ellipsis)."""
    if len(content) <= limit:
        return content
    cut = content[: limit - 1]
    trailing = len(cut) - len(cut.rstrip("\\"))
    if trailing % 2:
        cut = cut[:-1]
    return cut + ELLIPSIS
