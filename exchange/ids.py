"""Identities in exchanged data: salted user hashes on export, deterministic ids on import.

Exports never carry a Discord id. Users, generations and rankings are named by a keyed hash
(HMAC-SHA256) of the per-deployment salt, so the same user has the same pseudonym across
exports of one deployment, and nobody without the salt can link it to a Discord account.

Imported rows need ids where Discord would supply them (user ids, generation message ids,
the channel). They are **negative** BIGINTs derived from a SHA-256 of a namespace and the
source's own key: Discord snowflakes are always positive, so imported rows can never collide
with harvested ones, and importing the same file again yields the same ids (idempotent).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import tempfile
from pathlib import Path

SALT_FILE_NAME = "export_user_salt"
BIGINT_MAX = 2**63 - 1


def imported_id(kind: str, namespace: str, key: str) -> int:
    """A deterministic negative BIGINT in -1 .. -(2**63 - 1) for an imported row."""
    digest = hashlib.sha256(f"hps-import\x1f{kind}\x1f{namespace}\x1f{key}".encode()).digest()
    return -(int.from_bytes(digest[:8], "big") % BIGINT_MAX + 1)


def pseudonym(salt: str, kind: str, value: object, length: int = 32) -> str:
    """A keyed hash of ``value`` (hex, ``length`` characters): stable for one salt."""
    mac = hmac.new(salt.encode(), f"{kind}:{value}".encode(), hashlib.sha256)
    return mac.hexdigest()[:length]


def resolve_user_salt(configured: str | None, data_dir: Path) -> str:
    """The salt for user pseudonyms: ``EXPORT_USER_SALT`` when set, else a random salt created
    once in ``data_dir/export_user_salt`` (mode 0600) and reused by every later export.

    Creation is atomic (a fully written temporary file is hard-linked into place), so two
    processes exporting at once agree on one salt."""
    if configured:
        return configured
    path = data_dir / SALT_FILE_NAME
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=data_dir, prefix=".salt-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(secrets.token_hex(32) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(tmp_name, path)  # fails if another process won the race
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
    salt = path.read_text(encoding="utf-8").strip()
    if not salt:
        raise ValueError(f"{path} is empty; delete it to create a new salt")
    return salt
