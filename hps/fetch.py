"""Explicit download of published checkpoints (``hps models fetch``); nothing else downloads.

The policy:

- https only, at every hop: a redirect to anything else (``http:``, ``file:``, ``ftp:`` ...) is
  refused, naming the refused URL, and so is a chain of more than ``max_redirects`` redirects;
  certificates are verified (Python's default context).
- at most ``max_bytes`` (the announced Content-Length and the bytes actually read);
- the bytes go to ``<target>.partial`` and are renamed into place only once complete and, when
  a sha256 is known or given, only if they hash to it; on any failure nothing is kept (no
  target, no ``.partial``);
- the sha256 of what was kept is recorded beside it, ``<target>.sha256`` in ``sha256sum``
  format: ``hps registry add`` registers it and every later load verifies the file against it.
"""

from __future__ import annotations

import hashlib
import urllib.parse
import urllib.request
from collections.abc import Callable, Collection
from dataclasses import dataclass
from http.client import HTTPMessage
from pathlib import Path
from typing import IO, Any

from hps.checkpoints import ChecksumMismatch, normalize_sha256, write_sidecar

DEFAULT_MAX_REDIRECTS = 5
DEFAULT_MAX_BYTES = 16 * 1024**3  # ViT-H/14 in fp32 is about 4 GiB
CHUNK = 1 << 20


class DownloadRefused(ValueError):
    """The download breaks the policy (scheme, redirects, size); nothing was kept."""


@dataclass(frozen=True)
class PublishedCheckpoint:
    name: str
    architecture: str
    url: str
    sha256: str | None
    description: str


# sha256 left None where the publisher gives none; pass --sha256 to pin a download.
PUBLISHED = {
    c.name: c
    for c in (
        PublishedCheckpoint(
            "hps-v2",
            "hps-v2",
            "https://huggingface.co/xswu/HPSv2/resolve/main/HPS_v2_compressed.pt",
            None,
            "HPS v2 (ViT-H/14, fp16 compressed)",
        ),
        PublishedCheckpoint(
            "hps-v2.1",
            "hps-v2",
            "https://huggingface.co/xswu/HPSv2/resolve/main/HPS_v2.1_compressed.pt",
            None,
            "HPS v2.1 (ViT-H/14, fp16 compressed)",
        ),
    )
}


@dataclass(frozen=True)
class Fetched:
    """What ``fetch`` kept."""

    path: Path
    sha256: str
    size: int
    sidecar: Path
    final_url: str


def check_url(url: str, allow_insecure_hosts: Collection[str] = (), *, hop: str = "") -> None:
    """Raise DownloadRefused unless ``url`` is https (or plain http to an allowed test host)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme == "https" and host:
        return
    if parts.scheme == "http" and host and host in allow_insecure_hosts:
        return
    what = f"refusing {hop} to a non-https URL" if hop else "refusing a non-https URL"
    raise DownloadRefused(f"{what}: {url}")


class _RedirectPolicy(urllib.request.HTTPRedirectHandler):
    """Follow at most ``max_redirects`` redirects, each to an allowed URL (checked before
    urllib's own rules, so every refusal reads the same)."""

    def __init__(self, max_redirects: int, allow_insecure_hosts: Collection[str]) -> None:
        self.max_redirects = max_redirects
        self.allow_insecure_hosts = allow_insecure_hosts
        self.hops = 0

    def http_error_302(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: HTTPMessage,
    ) -> Any:
        location = headers.get("location") or headers.get("uri")
        if location:
            newurl = urllib.parse.urljoin(req.full_url, location)
            self.hops += 1
            try:
                if self.hops > self.max_redirects:
                    raise DownloadRefused(
                        f"refusing more than {self.max_redirects} redirects "
                        f"(the next was to {newurl})"
                    )
                check_url(newurl, self.allow_insecure_hosts, hop=f"a redirect ({code})")
            except DownloadRefused:
                fp.close()
                raise
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


def _opener(policy: _RedirectPolicy) -> urllib.request.OpenerDirector:
    """http(s) only: no ``file:``, ``ftp:`` or ``data:`` handlers to redirect into."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
        policy,
    ):
        opener.add_handler(handler)
    return opener


def _announced_length(headers: Any) -> int | None:
    try:
        return int(headers.get("Content-Length") or 0) or None
    except ValueError:
        return None


def fetch(
    url: str,
    target: Path,
    *,
    sha256: str | None = None,
    timeout_s: float = 60.0,
    on_progress: Callable[[int, int | None], None] | None = None,
    max_redirects: int = DEFAULT_MAX_REDIRECTS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    allow_insecure_hosts: Collection[str] = (),
) -> Fetched:
    """Download ``url`` to ``target`` (atomic), verifying ``sha256`` when given, and record
    the sha256 of what was kept in ``<target>.sha256``.

    ``allow_insecure_hosts`` lets plain http reach the named hosts (tests on 127.0.0.1 only;
    the command line never sets it). Raises DownloadRefused (policy), ChecksumMismatch (the
    bytes are not the pinned ones) or OSError (network); in every case nothing is kept.
    """
    check_url(url, allow_insecure_hosts)
    expected = normalize_sha256(sha256) if sha256 else None
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    digest = hashlib.sha256()
    policy = _RedirectPolicy(max_redirects, allow_insecure_hosts)
    done = 0
    try:
        with _opener(policy).open(url, timeout=timeout_s) as response, partial.open("wb") as out:
            final_url = response.geturl()
            total = _announced_length(response.headers)
            if total is not None and total > max_bytes:
                raise DownloadRefused(
                    f"refusing {final_url}: {total} bytes announced, the limit is {max_bytes}"
                )
            while chunk := response.read(CHUNK):
                done += len(chunk)
                if done > max_bytes:
                    raise DownloadRefused(f"refusing {final_url}: more than {max_bytes} bytes")
                out.write(chunk)
                digest.update(chunk)
                if on_progress:
                    on_progress(done, total)
        actual = digest.hexdigest()
        if expected and actual != expected:
            raise ChecksumMismatch(url, actual, expected)
        partial.replace(target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    sidecar = write_sidecar(target, actual)
    return Fetched(target, actual, done, sidecar, final_url)
