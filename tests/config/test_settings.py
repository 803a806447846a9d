"""One Settings object: embedded defaults, environment names, clear errors, no leaked secrets."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from config import Settings, SettingsError, load_settings

ENV_NAMES = [
    "HPS_DATA_DIR",
    "DATABASE_URL",
    "BROKER_URL",
    "STORAGE_URL",
    "DISCORD_TOKEN",
    "ALLOWED_CDN_HOSTS",
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_PIXELS",
    "S3_ENDPOINT_URL",
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_embedded_defaults_need_no_external_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HPS_DATA_DIR", str(tmp_path / "d"))
    settings = load_settings()
    assert settings.database_url == f"sqlite:///{tmp_path / 'd' / 'hps.sqlite3'}"
    assert settings.broker_url == f"sqla+sqlite:///{tmp_path / 'd' / 'broker.sqlite3'}"
    assert settings.storage_url == (tmp_path / "d" / "images").as_uri()
    assert settings.uses_embedded_defaults
    assert settings.discord_token is None


def test_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://hps:pw@db:5432/hps")
    monkeypatch.setenv("BROKER_URL", "redis://redis:6379/0")
    monkeypatch.setenv("STORAGE_URL", "s3://hps-images/prod")
    monkeypatch.setenv("DISCORD_TOKEN", "MTIzNDU2.secret.token")
    monkeypatch.setenv("ALLOWED_CDN_HOSTS", "cdn.discordapp.com, 127.0.0.1")
    monkeypatch.setenv("MAX_IMAGE_BYTES", "1048576")
    monkeypatch.setenv("MAX_IMAGE_PIXELS", "4000000")
    settings = load_settings()
    assert settings.database_url.startswith("postgresql+psycopg://")
    assert settings.broker_url == "redis://redis:6379/0"
    assert settings.storage_url == "s3://hps-images/prod"
    assert settings.discord_token is not None
    assert settings.discord_token.get_secret_value() == "MTIzNDU2.secret.token"
    assert settings.allowed_cdn_hosts == ["cdn.discordapp.com", "127.0.0.1"]
    assert (settings.max_image_bytes, settings.max_image_pixels) == (1048576, 4000000)
    assert not settings.uses_embedded_defaults


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("MAX_IMAGE_PIXELS=1234\nDISCORD_TOKEN=from-dotenv\n")
    settings = load_settings()
    assert settings.max_image_pixels == 1234


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("MAX_IMAGE_PIXELS", "lots", "MAX_IMAGE_PIXELS: Input should be a valid integer"),
        ("MAX_IMAGE_BYTES", "-5", "MAX_IMAGE_BYTES: Input should be greater than 0"),
        ("DATABASE_URL", "mysql://x/y", "DATABASE_URL: scheme 'mysql' is not supported"),
        ("BROKER_URL", "kafka://x", "BROKER_URL: scheme 'kafka' is not supported"),
        ("STORAGE_URL", "ftp://x", "STORAGE_URL: scheme 'ftp' is not supported"),
        (
            "ALLOWED_CDN_HOSTS",
            "https://cdn.example/x",
            "ALLOWED_CDN_HOSTS: .https://cdn.example/x. is not a host",
        ),
    ],
)
def test_invalid_settings_fail_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=f"invalid setting {message}".replace("(", r"\(")):
        load_settings()


def test_secrets_never_appear_in_repr_str_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(
        database_url="postgresql+psycopg://hps:db-password-123@db/hps",
        broker_url="redis://:redis-password-456@redis:6379/0",
        discord_token="discord-token-789",
    )
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info(
            "settings: %s / %r / %s", settings, settings, settings.redacted()
        )
    rendered = repr(settings) + str(settings) + str(settings.redacted()) + caplog.text
    for secret in ("db-password-123", "redis-password-456", "discord-token-789"):
        assert secret not in rendered
    assert "hps:***@db" in rendered and "DISCORD_TOKEN" in rendered
