"""Logging of every process (bot, workers, CLI): text for people or one JSON object per line
for log collectors (``LOG_FORMAT``), with every record passed through secret redaction.

Redaction happens twice: a filter on the handler rewrites each record (message with its
arguments merged, exception and stack text, extra fields) before any formatter sees it, and the
formatters mask their final output again. What is masked:

- the literal values of the secrets in the settings (``DISCORD_TOKEN``, ``EXPORT_USER_SALT``,
  the passwords inside ``DATABASE_URL``/``BROKER_URL``/``STORAGE_URL``/``S3_ENDPOINT_URL``) and
  ``AWS_SECRET_ACCESS_KEY`` from the environment;
- by pattern, whatever process logged it: passwords in URLs (``scheme://user:***@host``),
  ``password=...``-style pairs (libpq DSNs, driver errors), ``Authorization: Bot ...`` headers,
  anything shaped like a Discord bot token, and interaction/webhook tokens in Discord URLs.

This module is a leaf: it imports only the standard library and ``config``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import traceback
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import IO, Any
from urllib.parse import urlsplit

from pydantic import SecretStr

from config.settings import Settings

MASK = "***"
# Literal secrets shorter than this are only masked where a pattern finds them (masking a
# two-letter password everywhere would garble every line).
MIN_LITERAL_SECRET = 6

TEXT_FORMAT = "%(asctime)s %(levelname)s [%(processName)s] %(name)s: %(message)s"

_URL_PASSWORD = re.compile(r"(?P<keep>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@'\"]*:)[^\s@'\"]+(?=@)")
_KEY_VALUE = re.compile(
    r"(?P<keep>\b(?:password|passwd|pwd|secret|token|api_key|apikey|access_key"
    r"|secret_access_key|aws_secret_access_key|discord_token|export_user_salt)"
    r"['\"]?\s*[=:]\s*['\"]?)(?P<value>[^\s'\",;&}]+)",
    re.IGNORECASE,
)
_AUTH_HEADER = re.compile(
    r"(?P<keep>\bauthorization['\"]?\s*[:=]\s*['\"]?(?:bot|bearer|basic)\s+)[^\s'\",}]+",
    re.IGNORECASE,
)
# Discord bot tokens: base64 user id . timestamp . HMAC.
_DISCORD_TOKEN = re.compile(
    r"\b[MNO][A-Za-z\d_\-]{20,30}\.[A-Za-z\d_\-]{5,7}\.[A-Za-z\d_\-]{25,45}"
)
# Interaction tokens travel in webhook and callback URLs and are valid for 15 minutes.
_DISCORD_URL_TOKEN = re.compile(
    r"(?P<keep>/(?:webhooks|interactions)/\d+/)[A-Za-z\d_.\-]{20,}", re.IGNORECASE
)

# Attributes every LogRecord has; anything else on a record is an "extra" field.
_STANDARD_ATTRS = frozenset(
    {
        *logging.LogRecord("", 0, "", 0, "", None, None).__dict__,
        "message",
        "asctime",
        "taskName",
    }
)


class SecretMasker:
    """Masks secrets in text: given literal values plus the patterns of the module doc."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        literal = sorted(
            {s for s in secrets if s and len(s) >= MIN_LITERAL_SECRET}, key=len, reverse=True
        )
        self._literal = re.compile("|".join(re.escape(s) for s in literal)) if literal else None

    def __call__(self, text: str) -> str:
        if not text:
            return text
        if self._literal is not None:
            text = self._literal.sub(MASK, text)
        text = _URL_PASSWORD.sub(lambda m: m.group("keep") + MASK, text)
        text = _AUTH_HEADER.sub(lambda m: m.group("keep") + MASK, text)
        text = _KEY_VALUE.sub(
            lambda m: m.group("keep") + (m.group("value") if m.group("value") == MASK else MASK),
            text,
        )
        text = _DISCORD_URL_TOKEN.sub(lambda m: m.group("keep") + MASK, text)
        return _DISCORD_TOKEN.sub(MASK, text)

    def value(self, value: Any) -> Any:
        """Mask inside a JSON-able value (strings, lists, dicts); other values as text."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, bool | int | float) or value is None:
            return value
        if isinstance(value, dict):
            return {str(k): self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.value(v) for v in value]
        if isinstance(value, SecretStr):
            return MASK
        return self(str(value))


def secrets_of(settings: Settings) -> list[str]:
    """The secret values a process holds: the token, the export salt, URL passwords, and
    the S3 secret key from the environment."""
    found: list[str] = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif isinstance(value, str) and "://" in value:
            try:
                password = urlsplit(value).password
            except ValueError:
                password = None
            if password:
                found.append(password)
    aws_secret = os.environ.get("AWS_SECRET_ACCESS_KEY")
    if aws_secret:
        found.append(aws_secret)
    return [secret for secret in found if secret]


class RedactingFilter(logging.Filter):
    """Rewrites each record so that no secret survives into any formatter: the message (with
    its arguments merged), the exception and stack text, and string extras."""

    def __init__(self, masker: SecretMasker) -> None:
        super().__init__()
        self.masker = masker

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not lose the record
            message = f"{record.msg!r} {record.args!r}"
        record.msg = self.masker(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        if record.exc_text:
            record.exc_text = self.masker(record.exc_text)
        if record.stack_info:
            record.stack_info = self.masker(record.stack_info)
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD_ATTRS:
                record.__dict__[key] = self.masker.value(value)
        return True


class RedactingTextFormatter(logging.Formatter):
    """The human format; the final line is masked once more."""

    def __init__(self, masker: SecretMasker, fmt: str = TEXT_FORMAT) -> None:
        super().__init__(fmt)
        self.masker = masker

    def format(self, record: logging.LogRecord) -> str:
        return self.masker(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, exception,
    stack, process, process_name, thread_name and every extra field of the record."""

    def __init__(self, masker: SecretMasker) -> None:
        super().__init__()
        self.masker = masker

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            document["exception"] = record.exc_text
        if record.stack_info:
            document["stack"] = record.stack_info
        document["process"] = record.process
        document["process_name"] = record.processName
        document["thread_name"] = record.threadName
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and key not in document:
                document[key] = value
        return json.dumps(self.masker.value(document), ensure_ascii=False, default=str)


def make_handler(settings: Settings, stream: IO[str] | None = None) -> logging.Handler:
    """A stream handler in the configured format that redacts this process's secrets."""
    masker = SecretMasker(secrets_of(settings))
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(RedactingFilter(masker))
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter(masker))
    else:
        handler.setFormatter(RedactingTextFormatter(masker))
    handler._hps_handler = True  # type: ignore[attr-defined]
    return handler


def configure_logging(
    settings: Settings, *, level: str | int | None = None, stream: IO[str] | None = None
) -> logging.Handler:
    """Send the root logger's records to stderr (or ``stream``) in ``settings.log_format`` at
    ``level`` (default ``settings.log_level``), redacted. Calling it again replaces the
    handler installed before; handlers installed by others (pytest's capture) are kept.
    Python warnings are logged too. Returns the handler."""
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, "_hps_handler", False):
            root.removeHandler(existing)
            existing.close()
    handler = make_handler(settings, stream)
    root.addHandler(handler)
    chosen = level if level is not None else settings.log_level
    root.setLevel(chosen.upper() if isinstance(chosen, str) else chosen)
    logging.captureWarnings(True)
    return handler
