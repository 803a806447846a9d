"""Logs in text and JSON, with the token and passwords masked whatever logs them."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from config import Settings, load_settings
from config.logging_setup import MASK, SecretMasker, configure_logging, secrets_of

TOKEN = "MTE5ODc2NTQzMjEwOTg3NjU0.GhIjKl.abcdefghijklmnopqrstuvwxyz012345678"
DB_PASSWORD = "s3cret-Pa55word"
BROKER_PASSWORD = "redis-pass-4242"
SALT = "export-salt-value-xyz"
DATABASE_URL = f"postgresql://hps:{DB_PASSWORD}@db:5432/hps"
BROKER_URL = f"redis://:{BROKER_PASSWORD}@redis:6379/0"
SECRETS = (TOKEN, DB_PASSWORD, BROKER_PASSWORD, SALT)


def settings(log_format: str) -> Settings:
    return load_settings(
        discord_token=TOKEN,
        database_url=DATABASE_URL,
        broker_url=BROKER_URL,
        export_user_salt=SALT,
        log_format=log_format,
        log_level="DEBUG",
    )


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)


def emit_everything(logger: logging.Logger) -> None:
    logger.info("connecting with token %s", TOKEN)
    logger.warning("database at %s", DATABASE_URL)
    logger.info("broker %s and libpq dsn host=db password=%s", BROKER_URL, DB_PASSWORD)
    logger.info("headers {'Authorization': 'Bot %s'}", TOKEN)
    logger.info("the salt is %s", SALT, extra={"url": DATABASE_URL, "token_in_extra": TOKEN})
    logger.info(
        "followup https://discord.com/api/v10/webhooks/123/aW50ZXJhY3Rpb246MTIzOnNlY3JldHRva2Vu"
    )
    try:
        raise ConnectionError(f"could not connect to {DATABASE_URL} with {TOKEN}")
    except ConnectionError:
        logger.exception("startup failed for %s", BROKER_URL)
    logger.info("stack", stack_info=True, extra={"nested": {"dsn": DATABASE_URL}})


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_secrets_are_masked(log_format: str, restore_root: None) -> None:
    stream = io.StringIO()
    configure_logging(settings(log_format), stream=stream)
    emit_everything(logging.getLogger("hps.test.logging"))
    output = stream.getvalue()
    for secret in SECRETS:
        assert secret not in output
    assert "aW50ZXJhY3Rpb246MTIzOnNlY3JldHRva2Vu" not in output
    assert "postgresql://hps:***@db:5432/hps" in output  # user and host stay readable
    assert "password=***" in output and "Bot ***" in output
    assert "ConnectionError" in output  # the exception is logged, masked


def test_json_lines_parse(restore_root: None) -> None:
    stream = io.StringIO()
    configure_logging(settings("json"), stream=stream)
    emit_everything(logging.getLogger("hps.test.json"))
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 8
    first = lines[0]
    assert {"time", "level", "logger", "message", "process"} <= set(first)
    assert first["level"] == "INFO" and first["logger"] == "hps.test.json"
    assert first["message"] == f"connecting with token {MASK}"
    assert first["time"].endswith("+00:00")
    with_extra = lines[4]
    assert with_extra["url"] == "postgresql://hps:***@db:5432/hps"
    assert with_extra["token_in_extra"] == MASK
    failed = lines[6]
    assert failed["level"] == "ERROR" and "Traceback" in failed["exception"]
    assert lines[7]["nested"] == {"dsn": "postgresql://hps:***@db:5432/hps"}
    assert "stack" in lines[7]


def test_text_format_is_one_readable_line(restore_root: None) -> None:
    stream = io.StringIO()
    configure_logging(settings("text"), stream=stream)
    logging.getLogger("hps.test.text").warning("disk %d%% full", 93)
    [line] = stream.getvalue().splitlines()
    assert line.endswith("WARNING [MainProcess] hps.test.text: disk 93% full")


def test_level_and_reconfiguration(restore_root: None) -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging(settings("text"), stream=first, level="WARNING")
    configure_logging(settings("json"), stream=second, level="INFO")
    ours = [h for h in logging.getLogger().handlers if getattr(h, "_hps_handler", False)]
    assert len(ours) == 1  # the second call replaced the first handler
    logging.getLogger("hps.test.level").debug("not shown")
    logging.getLogger("hps.test.level").info("shown")
    assert first.getvalue() == ""
    assert [json.loads(x)["message"] for x in second.getvalue().splitlines()] == ["shown"]


def test_masker_patterns_without_settings() -> None:
    mask = SecretMasker()
    assert mask(f"token {TOKEN}") == f"token {MASK}"
    assert mask("amqp://guest:guest-pass@rabbit//") == "amqp://guest:***@rabbit//"
    assert mask("password='hunter2'") == "password='***'"
    assert mask("AWS secret_access_key=abcd1234") == "AWS secret_access_key=***"
    assert mask("nothing to hide here: 42 images") == "nothing to hide here: 42 images"
    assert mask("the interaction token expired") == "the interaction token expired"


def test_secrets_of_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-key-123")
    found = secrets_of(settings("text"))
    assert set(found) == {TOKEN, DB_PASSWORD, BROKER_PASSWORD, SALT, "aws-secret-key-123"}
