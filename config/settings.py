"""The one Settings object of the platform, read by the bot, the workers, db/ and migrations.

Values come from the environment and from a `.env` file in the working directory. Every
setting has an embedded default so that the product runs with no external service: a SQLite
file and local image storage under ``HPS_DATA_DIR`` and a Celery broker kept in a SQLite file.
Compose and production point ``DATABASE_URL``/``BROKER_URL`` at PostgreSQL and Redis.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from config.redact import redact_url

DEFAULT_CDN_HOSTS = ("cdn.discordapp.com", "media.discordapp.net")
DATABASE_SCHEMES = ("sqlite", "postgresql")
BROKER_SCHEMES = ("redis", "rediss", "amqp", "amqps", "pyamqp", "sqla", "filesystem", "memory")
STORAGE_SCHEMES = ("file", "s3")


class SettingsError(ValueError):
    """A setting is missing or invalid; the message names the environment variable."""


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """All configuration of the platform. Environment names are the upper-case field names."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
    )

    hps_data_dir: Path = Field(default=Path("data"), description="Embedded-mode data directory")
    database_url: str = Field(default="", description="SQLAlchemy URL; empty = SQLite in data dir")
    broker_url: str = Field(default="", description="Celery broker; empty = SQLite file broker")
    storage_url: str = Field(default="", description="file:///path or s3://bucket/prefix")
    s3_endpoint_url: str | None = Field(default=None, description="S3-compatible endpoint")
    discord_token: SecretStr | None = Field(default=None, description="Bot token (secret)")
    discord_api_base: str = Field(
        default="https://discord.com/api/v10", description="Discord REST base (or the emulator)"
    )
    discord_gateway_url: str = Field(
        default="wss://gateway.discord.gg/", description="Discord gateway (or the emulator)"
    )
    allowed_cdn_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_CDN_HOSTS),
        description="Hosts attachments may be downloaded from (comma-separated)",
    )
    allow_insecure_cdn: bool = Field(
        default=False, description="Permit http:// CDN URLs (only for the local emulator)"
    )
    max_image_bytes: int = Field(default=25 * 1024 * 1024, gt=0, le=1024 * 1024 * 1024)
    max_image_pixels: int = Field(default=40_000_000, gt=0, le=1_000_000_000)
    model_inputs: str = Field(
        default="pad:224",
        pattern=r"^\s*((pad|crop):\d{1,4}\s*(,\s*(pad|crop):\d{1,4}\s*)*)?$",
        description="Model inputs stored beside each image at intake (decode once): "
        "comma-separated pad:SIZE / crop:SIZE (the active architecture's); empty = none",
    )
    download_timeout_s: float = Field(default=30.0, gt=0, le=600)
    split_salt: str = Field(default="hps-split-v1", min_length=1)
    models_dir: Path | None = Field(default=None, description="Model files; default data/models")
    train_base: str = Field(
        default="",
        description="What a scope's first HPS model is trained from when it has none: a "
        "fetched catalogue base (openai-vit-l-14, laion-vit-h-14) or a checkpoint file",
    )
    task_visibility_timeout_s: int | None = Field(
        default=None, gt=0, description="Broker redelivery timeout; default above the longest task"
    )
    worker_max_tasks_per_child: int = Field(default=200, gt=0)
    worker_max_memory_mb: int = Field(default=16_384, gt=0)
    worker_device: str = Field(
        default="auto", description="Device for model work: auto, cpu, cuda:N"
    )
    score_compile: Literal[
        "", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"
    ] = Field(
        default="",
        description="torch.compile mode of the scorers' image tower on the workers (empty: "
        "eager); measure with bench.score --compile MODE on the GPU first",
    )
    sd_pipeline: str = Field(
        default="",
        description=(
            "Stable Diffusion folder or single-file checkpoint "
            "('tiny': tests; 'toy': the small pretrained generator)"
        ),
    )
    promotion_margin: float = Field(
        default=0.01, ge=0, le=1, description="Top-1 gain a candidate needs to be promoted"
    )
    log_level: str = Field(default="INFO")
    log_format: Literal["text", "json"] = Field(
        default="text", description="text for people, json for log collectors"
    )
    export_user_salt: SecretStr | None = Field(
        default=None,
        description="Per-deployment salt hashing user ids in exports; empty = a random salt "
        "kept in the data directory",
    )
    exports_dir: Path | None = Field(
        default=None, description="Dataset exports; default data/exports"
    )
    bot_metrics_port: int = Field(
        default=0, ge=0, le=65535, description="Prometheus port of the bot; 0 = off"
    )
    worker_metrics_port: int = Field(
        default=0, ge=0, le=65535, description="Prometheus port of a worker; 0 = off"
    )
    user_jobs_per_minute: int = Field(
        default=6, gt=0, description="Slash-command jobs one user may start per minute"
    )
    user_max_open_jobs: int = Field(
        default=3, gt=0, description="Jobs one user may have queued or running at once"
    )

    operator_user_ids: Annotated[list[int], NoDecode] = Field(
        default_factory=list,
        description="Discord user ids of the bot's operators (comma-separated), besides the "
        "application owner: global models, global training and cross-guild exports",
    )
    shard_count: int | None = Field(
        default=None,
        gt=0,
        description="Gateway shards of the whole bot; empty = one process decides (Discord's "
        "recommendation)",
    )
    shard_ids: Annotated[list[int], NoDecode] = Field(
        default_factory=list,
        description="Shards this bot process runs (comma-separated); empty = all of SHARD_COUNT",
    )

    @field_validator("operator_user_ids", "shard_ids", mode="before")
    @classmethod
    def _parse_ids(cls, value: Any) -> Any:
        items = _split_csv(value)
        if isinstance(items, list):
            for item in items:
                if isinstance(item, str) and not item.strip().isdigit():
                    raise ValueError(f"{item!r} is not a number")
            return [int(item) for item in items]
        return items

    @model_validator(mode="after")
    def _check_shards(self) -> Settings:
        if self.shard_ids:
            if self.shard_count is None:
                raise ValueError("SHARD_IDS needs SHARD_COUNT")
            if len(set(self.shard_ids)) != len(self.shard_ids):
                raise ValueError("SHARD_IDS lists a shard twice")
            bad = [i for i in self.shard_ids if not 0 <= i < self.shard_count]
            if bad:
                raise ValueError(f"SHARD_IDS {bad} outside 0..{self.shard_count - 1}")
        return self

    @field_validator("allowed_cdn_hosts", mode="before")
    @classmethod
    def _parse_hosts(cls, value: Any) -> Any:
        hosts = _split_csv(value)
        if isinstance(hosts, list):
            for host in hosts:
                if "/" in host or " " in host:
                    raise ValueError(f"{host!r} is not a host name (no scheme or path)")
        return hosts

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @model_validator(mode="after")
    def _fill_embedded_defaults(self) -> Settings:
        data_dir = self.hps_data_dir.expanduser().resolve()
        self.hps_data_dir = data_dir
        if not self.database_url:
            self.database_url = f"sqlite:///{data_dir / 'hps.sqlite3'}"
        if not self.broker_url:
            self.broker_url = f"sqla+sqlite:///{data_dir / 'broker.sqlite3'}"
        if not self.storage_url:
            self.storage_url = (data_dir / "images").as_uri()
        if self.models_dir is None:
            self.models_dir = data_dir / "models"
        self.models_dir = self.models_dir.expanduser().resolve()
        if self.exports_dir is None:
            self.exports_dir = data_dir / "exports"
        self.exports_dir = self.exports_dir.expanduser().resolve()
        _check_scheme("DATABASE_URL", self.database_url, DATABASE_SCHEMES)
        _check_scheme("BROKER_URL", self.broker_url, BROKER_SCHEMES)
        _check_scheme("STORAGE_URL", self.storage_url, STORAGE_SCHEMES)
        return self

    @property
    def uses_embedded_defaults(self) -> bool:
        """True when the database is the embedded SQLite file."""
        return self.database_url.startswith("sqlite")

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict that is safe to print or log: secrets and passwords masked."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = "**********" if value.get_secret_value() else ""
            elif name.endswith("_url") and isinstance(value, str):
                value = redact_url(value)
            elif isinstance(value, Path):
                value = str(value)
            out[name.upper()] = value
        return out

    def __repr_args__(self) -> Any:
        # repr() must never reveal the token or a password inside a URL.
        return list(self.redacted().items())


def _check_scheme(env_name: str, url: str, allowed: tuple[str, ...]) -> None:
    scheme = urlsplit(url).scheme.split("+", 1)[0].lower()
    if scheme not in allowed:
        raise ValueError(
            f"{env_name}: scheme {scheme or '(none)'!r} is not supported; use one of "
            + ", ".join(allowed)
        )


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment; raise SettingsError naming the bad variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]).upper() or "SETTINGS"
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {message}" if where != "SETTINGS" else message)
        raise SettingsError("invalid setting " + "; ".join(problems)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
