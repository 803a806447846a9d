"""Prompt normalisation: the same prompt typed twice maps to one row."""

from __future__ import annotations

import hashlib
import re
import unicodedata

_WHITESPACE = re.compile(r"\s+")
MAX_PROMPT_CHARS = 4000


def normalize_prompt(text: str) -> str:
    """NFKC, lower case, collapsed whitespace: the form prompts are compared in."""
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip().lower()


def prompt_hash(text: str) -> str:
    """sha256 hex of the normalised prompt; the unique key of ``prompts``."""
    return hashlib.sha256(normalize_prompt(text).encode("utf-8")).hexdigest()
