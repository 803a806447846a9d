"""Where the checkout is and which of its folders are the product, for the tests that read
the source itself (import rules, function size, safe loading)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The product's packages: what the size and import rules govern.
PRODUCT_PACKAGES = (
    "bot",
    "worker",
    "db",
    "hps",
    "media",
    "config",
    "cli",
    "jobqueue",
    "exchange",
    "discord_text",
    "sandbox",
    "rules",
)
# The product's packages and the code around it (no tests): what is scanned for import
# cycles and for unsafe loading.
SOURCE_PACKAGES = (*PRODUCT_PACKAGES, "migrations", "bench")
