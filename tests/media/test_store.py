"""Content-addressed blob stores: local filesystem and S3 (moto's server on 127.0.0.1)."""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from media.store import (
    BlobIntegrityError,
    BlobNotFound,
    ImageStore,
    LocalImageStore,
    S3ImageStore,
    key_for,
    open_store,
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ImageStore:
    if request.param == "local":
        return LocalImageStore(tmp_path / "blobs")
    request.getfixturevalue("s3_env")
    endpoint = request.getfixturevalue("s3_endpoint")
    client = boto3.client("s3", endpoint_url=endpoint)
    bucket = f"hps-{os.urandom(4).hex()}"
    return S3ImageStore(bucket, "images/prod", client=client, create_bucket=True)


def test_put_get_exists_delete_are_idempotent(store: ImageStore) -> None:
    data = b"\x89PNG fake image bytes"
    sha = store.put(data)
    assert sha == hashlib.sha256(data).hexdigest()
    assert store.put(data) == sha  # the same bytes again: same key, no error
    assert store.exists(sha)
    assert store.get(sha) == data
    assert store.delete(sha) is True
    assert store.delete(sha) is False
    assert not store.exists(sha)
    with pytest.raises(BlobNotFound):
        store.get(sha)


def test_put_refuses_bytes_that_do_not_match_their_hash(store: ImageStore) -> None:
    with pytest.raises(BlobIntegrityError, match="hashes to"):
        store.put(b"abc", "0" * 64)
    assert not store.exists("0" * 64)


def test_keys_fan_out_and_reject_non_hashes() -> None:
    sha = hashlib.sha256(b"x").hexdigest()
    assert key_for(sha) == f"{sha[:2]}/{sha[2:4]}/{sha}.png"
    with pytest.raises(ValueError, match="not a lower-case sha256"):
        key_for("../../etc/passwd")


def test_local_writes_are_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalImageStore(tmp_path)
    data = b"payload" * 1000

    def crash(*_args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        store.put(data)
    monkeypatch.undo()
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # no partial file left
    sha = store.put(data)
    assert store.path_for(sha).read_bytes() == data


def test_open_store_from_urls(tmp_path: Path, s3_env: None, s3_endpoint: str) -> None:
    local = open_store((tmp_path / "x").as_uri())
    assert isinstance(local, LocalImageStore) and local.root == tmp_path / "x"
    s3 = open_store("s3://bucket-name/some/prefix", s3_endpoint_url=s3_endpoint)
    assert isinstance(s3, S3ImageStore)
    assert (s3.bucket, s3.prefix) == ("bucket-name", "some/prefix")
    with pytest.raises(ValueError, match="STORAGE_URL: unsupported scheme 'ftp'"):
        open_store("ftp://host/x")
    with pytest.raises(ValueError, match="needs a bucket name"):
        open_store("s3:///nothing")
