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

Catalogue entries (:mod:`hps.catalogue`) are fetched from the Hugging Face Hub by
:func:`fetch_entry` through ``huggingface_hub`` (resumable, cached; ``HF_ENDPOINT``,
``HF_TOKEN`` and ``HF_HUB_OFFLINE`` are read by the library, the token is never logged): every
weight file is hashed, checked against the catalogue's sha256 or else the Hub's own LFS sha256
(the cached blob's name), and recorded beside it; a mismatch evicts the file from the cache and
raises :class:`ChecksumMismatch`. :func:`write_record` notes what was fetched in
``MODELS_DIR/catalogue/NAME.json``; :func:`verified_record` reads it back with every recorded
file re-hashed (what ``SD_PIPELINE=NAME`` and ``hps train --base NAME`` resolve through, offline),
raising :class:`FetchRecordError` for anything amiss.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import urllib.parse
import urllib.request
from collections.abc import Callable, Collection
from dataclasses import dataclass
from http.client import HTTPMessage
from pathlib import Path
from typing import IO, Any

from hps.catalogue import CatalogueEntry, is_weight_file
from hps.checkpoints import (
    ChecksumMismatch,
    normalize_sha256,
    sha256_of_file,
    sidecar_path,
    write_sidecar,
)

DEFAULT_MAX_REDIRECTS = 5
DEFAULT_MAX_BYTES = 16 * 1024**3  # ViT-H/14 in fp32 is about 4 GiB
CHUNK = 1 << 20


class DownloadRefused(ValueError):
    """The download breaks the policy (scheme, redirects, size); nothing was kept."""


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


# --- catalogue entries, from the Hugging Face Hub ------------------------------------------------

RECORDS_FOLDER = "catalogue"  # MODELS_DIR/catalogue/NAME.json: what was fetched, and where
_SHA256_NAME = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class FetchedFile:
    """One weight file of a fetched entry."""

    name: str  # path inside the repository
    path: Path  # where it is (the cache's snapshot folder)
    sha256: str
    size: int
    checked_against: str  # "catalogue", "hub lfs sha256" or "nothing"


@dataclass(frozen=True)
class FetchedEntry:
    """What :func:`fetch_entry` made available."""

    entry: CatalogueEntry
    commit: str
    folder: Path
    files: tuple[FetchedFile, ...]

    def weight(self, name: str) -> FetchedFile:
        """The fetched weight file ``name`` (KeyError if the entry has none of that name)."""
        for file in self.files:
            if file.name == name:
                return file
        raise KeyError(f"{self.entry.name}: no weight file {name!r} was fetched")


def fetch_entry(entry: CatalogueEntry, cache_dir: Path) -> FetchedEntry:
    """Download ``entry``'s files into the Hugging Face cache at ``cache_dir`` (or take them
    from it: offline once fetched), then hash and check every weight file and write its
    ``.sha256`` sidecar. Raises DownloadRefused (not on the Hub), ChecksumMismatch (the file
    is evicted from the cache) or huggingface_hub's errors (network, not found)."""
    if entry.repo is None:
        raise DownloadRefused(f"{entry.name} cannot be fetched from the Hub: {entry.note}")
    from huggingface_hub import snapshot_download

    folder = Path(
        snapshot_download(
            entry.repo,
            revision=entry.revision,
            cache_dir=str(cache_dir),
            allow_patterns=list(entry.files),
        )
    )
    fetched = tuple(_check_weight(entry, folder, name) for name in _weight_names(entry, folder))
    if entry.checkpoint and not (folder / entry.checkpoint).is_file():
        raise FileNotFoundError(f"{entry.name}: {entry.repo} has no {entry.checkpoint}")
    if not fetched:
        raise FileNotFoundError(f"{entry.name}: no weight file matched {list(entry.files)}")
    return FetchedEntry(entry, folder.name, folder, fetched)


def _weight_names(entry: CatalogueEntry, folder: Path) -> list[str]:
    """The weight files of ``folder`` that ``entry`` asked for (a snapshot folder may hold
    another entry's files of the same repository and commit)."""
    names = (p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return sorted(
        name
        for name in names
        if is_weight_file(name) and any(fnmatch.fnmatch(name, pattern) for pattern in entry.files)
    )


def _check_weight(entry: CatalogueEntry, folder: Path, name: str) -> FetchedFile:
    path = folder / name
    actual = sha256_of_file(path)
    expected, source = _expected_sha256(entry, path, name)
    if expected is not None and actual != expected:
        _evict(path)
        raise ChecksumMismatch(f"{entry.repo}/{name}", actual, expected)
    write_sidecar(path, actual)
    return FetchedFile(name, path, actual, path.stat().st_size, source)


def _expected_sha256(entry: CatalogueEntry, path: Path, name: str) -> tuple[str | None, str]:
    if name in entry.sha256:
        return normalize_sha256(entry.sha256[name]), "catalogue"
    # The cache names a blob after its ETag, which for an LFS file is the Hub's sha256.
    blob = path.resolve().name
    if path.is_symlink() and _SHA256_NAME.fullmatch(blob):
        return blob, "hub lfs sha256"
    return None, "nothing"


def _evict(path: Path) -> None:
    """Remove a refused file from the cache: its blob, the snapshot's link and any sidecar."""
    blob = path.resolve()
    for doomed in (path, sidecar_path(path), blob):
        doomed.unlink(missing_ok=True)


def _relative(path: Path, models_dir: Path) -> str:
    return str(path.relative_to(models_dir)) if path.is_relative_to(models_dir) else str(path)


def record_path(models_dir: Path, name: str) -> Path:
    """Where the record of catalogue entry ``name`` lives."""
    return models_dir / RECORDS_FOLDER / f"{name}.json"


def write_record(models_dir: Path, fetched: FetchedEntry) -> Path:
    """Note in ``MODELS_DIR/catalogue/NAME.json`` what was fetched (commit, folder, the sha256
    of each weight file), atomically; return its path."""
    entry = fetched.entry
    document = {
        "name": entry.name,
        "kind": entry.kind,
        "repo": entry.repo,
        "revision": entry.revision,
        "pinned": entry.pinned,
        "commit": fetched.commit,
        "folder": _relative(fetched.folder, models_dir),
        "architecture": entry.architecture,
        "checkpoint": entry.checkpoint,
        "pipeline_class": entry.pipeline_class,
        "variant": entry.variant,
        "files": {f.name: {"sha256": f.sha256, "bytes": f.size} for f in fetched.files},
    }
    path = record_path(models_dir, entry.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(document, indent=2) + "\n")
    partial.replace(path)
    return path


class FetchRecordError(ValueError):
    """A catalogue entry cannot be used as fetched: no record (never fetched), a malformed
    record, or a recorded file missing or changed since. The message names the entry, the file,
    the expected and found sha256, and the command that mends it."""


@dataclass(frozen=True)
class RecordedFile:
    """One weight file of a fetch record, verified against its recorded sha256."""

    name: str  # path inside the entry's folder
    path: Path
    sha256: str
    size: int | None


@dataclass(frozen=True)
class FetchRecord:
    """``MODELS_DIR/catalogue/NAME.json`` as read by :func:`verified_record`: what was
    fetched, where (``folder``, absolute), and its files, every one verified."""

    name: str
    folder: Path
    files: tuple[RecordedFile, ...]
    kind: str | None = None
    architecture: str | None = None
    checkpoint: str | None = None
    pipeline_class: str | None = None
    variant: str | None = None
    commit: str | None = None

    def checkpoint_file(self) -> RecordedFile:
        """The entry's checkpoint: its ``checkpoint`` file, else its only weight file;
        FetchRecordError when it names none of the recorded files."""
        wanted = self.checkpoint or (self.files[0].name if len(self.files) == 1 else None)
        for file in self.files:
            if file.name == wanted:
                return file
        raise FetchRecordError(
            f"{self.name}: no single checkpoint file among {sorted(f.name for f in self.files)}"
            f" in its fetch record: run hps models fetch {self.name}"
        )


def verified_record(models_dir: Path, name: str) -> FetchRecord:
    """The fetch record of catalogue entry ``name``, every recorded file re-hashed against the
    sha256 recorded at fetch time (offline): what a catalogue pipeline (``SD_PIPELINE=NAME``)
    and a catalogue base (``hps train --base NAME``) load from. FetchRecordError when there is
    no record, it is malformed, or a file is missing or changed."""
    path = record_path(models_dir, name)
    fix = f"run hps models fetch {name}"
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise FetchRecordError(f"{name} is not fetched yet (no {path}): {fix}") from None
    except (OSError, ValueError) as exc:
        raise FetchRecordError(
            f"{name}: cannot read its fetch record {path} ({exc}): {fix}"
        ) from None
    record = _parse_record(document, models_dir, name, path)
    for file in record.files:
        _verify_recorded(name, file)
    return record


def _parse_record(document: Any, models_dir: Path, name: str, path: Path) -> FetchRecord:
    def malformed(why: str) -> FetchRecordError:
        return FetchRecordError(
            f"{name}: its fetch record {path} is malformed ({why}): run hps models fetch {name}"
        )

    if not isinstance(document, dict):
        raise malformed("not a JSON object")
    if document.get("name", name) != name:
        raise malformed(f"it records {document.get('name')!r}")
    folder = document.get("folder")
    files = document.get("files")
    if not isinstance(folder, str) or not folder:
        raise malformed("no folder")
    if not isinstance(files, dict) or not files:
        raise malformed("no files")
    root = Path(folder) if Path(folder).is_absolute() else models_dir / folder
    recorded = []
    for file, facts in files.items():
        inside = Path(file)
        if not file or inside.is_absolute() or ".." in inside.parts:
            raise malformed(f"file {file!r} is not inside its folder")
        digest = facts.get("sha256") if isinstance(facts, dict) else None
        if not isinstance(digest, str) or not _SHA256_NAME.fullmatch(digest):
            raise malformed(f"{file} has no sha256")
        size = facts.get("bytes")
        recorded.append(
            RecordedFile(file, root / file, digest, size if isinstance(size, int) else None)
        )
    text = {
        key: value if isinstance(value := document.get(key), str) else None
        for key in ("kind", "architecture", "checkpoint", "pipeline_class", "variant", "commit")
    }
    return FetchRecord(name, root, tuple(recorded), **text)


def _verify_recorded(name: str, file: RecordedFile) -> None:
    try:
        found = sha256_of_file(file.path)
    except FileNotFoundError:
        raise FetchRecordError(
            f"{name}: {file.name} is missing ({file.path}; expected sha256 {file.sha256}): "
            f"run hps models fetch {name}"
        ) from None
    except OSError as exc:  # a folder where the file was, no permission...
        raise FetchRecordError(
            f"{name}: {file.name} cannot be read ({exc}; expected sha256 {file.sha256}): "
            f"delete {file.path} and run hps models fetch {name}"
        ) from None
    if found != file.sha256:
        # The real file (a cache link's blob): once it is gone the fetch downloads it again.
        raise FetchRecordError(
            f"{name}: {file.name} changed since it was fetched ({file.path}: sha256 is {found}, "
            f"expected {file.sha256}): delete {file.path.resolve()} and run hps models fetch "
            f"{name}"
        )


def fetched_checkpoint(models_dir: Path, name: str) -> tuple[Path, str, str | None]:
    """``(file, sha256, architecture)`` of fetched catalogue entry ``name``'s checkpoint (its
    ``checkpoint`` file, else its only weight file), verified by :func:`verified_record`: what
    ``hps train --base NAME`` and the train job start from, offline. FetchRecordError when it
    was not fetched, its record is malformed or a file is missing or changed."""
    record = verified_record(models_dir, name)
    checkpoint = record.checkpoint_file()
    return checkpoint.path, checkpoint.sha256, record.architecture
