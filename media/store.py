"""Content-addressed blob storage for images: local filesystem or any S3-compatible service.

Keys are the sha256 of the stored bytes, laid out as ``ab/cd/abcdef...png`` so that no
directory grows huge. Writes are idempotent (the same bytes always land at the same key) and
atomic (a reader never sees a half-written file).

Beside each blob a store may keep derived *model inputs* (:mod:`media.model_inputs`): the image
already shaped for one model resolution, under ``inputs/ab/cd/<sha256>/<mode>-<size>.png``
(:func:`input_key`). Deleting a blob deletes its model inputs.
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


def input_key(sha256: str, mode: str, size: int) -> str:
    """Storage key of a blob's model input for ``mode`` (pad | crop) at ``size`` pixels."""
    _check_sha256(sha256)
    if mode not in ("pad", "crop") or not 0 < size < 100_000:
        raise ValueError(f"not a model input: {mode!r} at {size!r} px")
    return f"{_inputs_prefix(sha256)}{mode}-{size}.png"


def _inputs_prefix(sha256: str) -> str:
    return f"inputs/{sha256[:2]}/{sha256[2:4]}/{sha256}/"


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
        """Remove the blob (and its model inputs); return whether the blob existed."""
        ...

    def put_input(self, sha256: str, mode: str, size: int, data: bytes) -> None:
        """Store (or replace) the model input of blob ``sha256`` for ``mode`` at ``size``."""
        ...

    def get_input(self, sha256: str, mode: str, size: int) -> bytes:
        """The stored model input; raise BlobNotFound if absent."""
        ...

    def delete_inputs(self, sha256: str) -> int:
        """Remove every model input of blob ``sha256``; return how many there were."""
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

    def input_path(self, sha256: str, mode: str, size: int) -> Path:
        """Filesystem path of a blob's model input (whether or not it exists)."""
        return self.root / input_key(sha256, mode, size)

    def put(self, data: bytes, sha256: str | None = None) -> str:
        """Store ``data`` atomically; return its sha256."""
        digest = _digest(data, sha256)
        target = self.path_for(digest)
        if not target.exists():
            _write_atomically(target, data)
        return digest

    def put_input(self, sha256: str, mode: str, size: int, data: bytes) -> None:
        """Write (or atomically replace) a model input file."""
        _write_atomically(self.input_path(sha256, mode, size), data)

    def get_input(self, sha256: str, mode: str, size: int) -> bytes:
        """Read a model input; raise BlobNotFound if it is absent."""
        try:
            return self.input_path(sha256, mode, size).read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(input_key(sha256, mode, size)) from None

    def delete_inputs(self, sha256: str) -> int:
        """Remove the blob's model-input folder; return how many inputs it held."""
        _check_sha256(sha256)
        folder = self.root / _inputs_prefix(sha256)
        removed = 0
        for path in folder.glob("*.png"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
        with contextlib.suppress(OSError):  # absent, or a concurrent writer's temp file
            folder.rmdir()
        return removed

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
        """Remove the blob file and its model inputs; return whether the blob existed."""
        self.delete_inputs(sha256)
        try:
            self.path_for(sha256).unlink()
        except FileNotFoundError:
            return False
        return True


def _write_atomically(target: Path, data: bytes) -> None:
    """Write ``data`` to ``target`` through a temporary file and a rename."""
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
        return self._prefixed(key_for(sha256))

    def _prefixed(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put_input(self, sha256: str, mode: str, size: int, data: bytes) -> None:
        """Upload (or replace) a model input object."""
        self.client.put_object(
            Bucket=self.bucket,
            Key=self._prefixed(input_key(sha256, mode, size)),
            Body=data,
            ContentType="image/png",
        )

    def get_input(self, sha256: str, mode: str, size: int) -> bytes:
        """Download a model input; raise BlobNotFound if it is absent."""
        key = self._prefixed(input_key(sha256, mode, size))
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
        except self.client.exceptions.NoSuchKey:
            raise BlobNotFound(key) from None
        body: bytes = response["Body"].read()
        return body

    def delete_inputs(self, sha256: str) -> int:
        """Delete every object under the blob's model-input prefix; return the count."""
        _check_sha256(sha256)
        listed = self.client.list_objects_v2(
            Bucket=self.bucket, Prefix=self._prefixed(_inputs_prefix(sha256))
        )
        keys = [item["Key"] for item in listed.get("Contents", [])]
        for key in keys:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        return len(keys)

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
        """Delete the object and its model inputs; return whether the blob existed."""
        self.delete_inputs(sha256)
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
