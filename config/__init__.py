"""Configuration shared by the bot, the workers, db/ and migrations."""

from config.redact import redact_url
from config.settings import Settings, SettingsError, get_settings, load_settings

__all__ = ["Settings", "SettingsError", "get_settings", "load_settings", "redact_url"]
