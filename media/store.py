"""Content-addressed blob storage for images: local filesystem or any S3-compatible service.

Keys are the sha256 of the stored bytes, laid out as ``ab/cd/abcdef...png`` so that no
directory grows huge. Writes are idempotent (the same bytes always land at the same key) and
atomic (a reader never sees a half-written file).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

SHA256_HEX_LENGTH = 64


class BlobNotFound(KeyError):
    """No blob is stored under this sha256."""


class BlobIntegrityError(ValueError):
    """The bytes do not hash to the sha256 they were stored or requested under."""


def key_for(sha256: str, suffix: str = ".png") -> str:
    """Storage key of a blob: two levels of fan-out then the full hash."""
    _check_sha256(sha256)
    return f"{sha256[:2]}/{sha256[2:4]}/{sha256}{suffix}"


def _check_sha256(sha256: str) -> None:
    if len(sha256) != SHA256_HEX_LENGTH or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError(f"not a lower-case sha256 hex digest: {sha256!r}")


class ImageStore(Protocol):
    """What every blob store offers. All methods are idempotent."""

    def put(self, data: bytes, sha256: str | None = None) -> str:
        """Store ``data``; return its sha256. Verifies ``sha256`` when given."""
        ...

    def get(self, sha256: str) -> bytes:
        """The bytes stored under ``sha256``; raise BlobNotFound if absent."""
        ...

    def exists(self, sha256: str) -> bool:
        """Whether a blob is stored under ``sha256``."""
        ...

    def delete(self, sha256: str) -> bool:
        """Remove the blob; return whether it existed."""
        ...


def _digest(data: bytes, expected: str | None) -> str:
    actual = hashlib.sha256(data).hexdigest()
    if expected is not None and expected != actual:
        raise BlobIntegrityError(f"data hashes to {actual}, not {expected}")
    return actual


class LocalImageStore:
    """Blobs as files under a root directory; atomic writes via rename."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path_for(self, sha256: str) -> Path:
        """Filesystem path of a blob (whether or not it exists)."""
        return self.root / key_for(sha256)

    def put(self, data: bytes, sha256: str | None = None) -> str:
        """Store ``data`` atomically; return its sha256."""
        digest = _digest(data, sha256)
        target = self.path_for(digest)
        if target.exists():
            return digest
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
        return digest

    def get(self, sha256: str) -> bytes:
        """Read a blob; raise BlobNotFound if it is absent."""
        try:
            return self.path_for(sha256).read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(sha256) from None

    def exists(self, sha256: str) -> bool:
        """Whether the blob file exists."""
        return self.path_for(sha256).is_file()

    def delete(self, sha256: str) -> bool:
        """Remove the blob file; return whether it existed."""
        try:
            self.path_for(sha256).unlink()
        except FileNotFoundError:
            return False
        return True


class S3ImageStore:
    """Blobs as objects in an S3-compatible bucket (AWS, MinIO, R2, moto, ...)."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        client: Any = None,
        create_bucket: bool = False,
    ) -> None:
        import boto3  # imported here: only S3 users pay for it

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client or boto3.client("s3", endpoint_url=endpoint_url)
        if create_bucket:
            with contextlib.suppress(
                self.client.exceptions.BucketAlreadyOwnedByYou,
                self.client.exceptions.BucketAlreadyExists,
            ):
                self.client.create_bucket(Bucket=bucket)

    def object_key(self, sha256: str) -> str:
        """Object key of a blob inside the bucket."""
        key = key_for(sha256)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, data: bytes, sha256: str | None = None) -> str:
        """Upload ``data`` (a single PUT is atomic in S3); return its sha256."""
        digest = _digest(data, sha256)
        self.client.put_object(
            Bucket=self.bucket,
            Key=self.object_key(digest),
            Body=data,
            ContentType="image/png",
            Metadata={"sha256": digest},
        )
        return digest

    def get(self, sha256: str) -> bytes:
        """Download a blob; raise BlobNotFound if it is absent."""
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.object_key(sha256))
        except self.client.exceptions.NoSuchKey:
            raise BlobNotFound(sha256) from None
        body: bytes = response["Body"].read()
        return body

    def exists(self, sha256: str) -> bool:
        """Whether the object exists (HEAD request)."""
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self.object_key(sha256))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def delete(self, sha256: str) -> bool:
        """Delete the object; return whether it existed."""
        existed = self.exists(sha256)
        if existed:
            self.client.delete_object(Bucket=self.bucket, Key=self.object_key(sha256))
        return existed


def open_store(url: str, *, s3_endpoint_url: str | None = None) -> LocalImageStore | S3ImageStore:
    """Build a store from ``file:///path`` or ``s3://bucket/prefix``."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        return LocalImageStore(unquote(parts.netloc + parts.path))
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ValueError("STORAGE_URL: s3:// needs a bucket name, e.g. s3://hps-images/prod")
        return S3ImageStore(parts.netloc, parts.path, endpoint_url=s3_endpoint_url)
    raise ValueError(f"STORAGE_URL: unsupported scheme {parts.scheme!r} (use file:// or s3://)")
