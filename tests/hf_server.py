"""A local Hugging Face Hub over TLS on 127.0.0.1, for ``huggingface_hub`` without the internet.

It serves what ``snapshot_download`` / ``hf_hub_download`` (huggingface_hub 1.x-2.x) ask for:

- ``GET /api/models/{repo}/revision/{revision}``: ``{"id", "sha", "siblings"}`` (repo_info);
- ``GET /api/models/{repo}/tree/{revision}?recursive=...``: the file list, with ``lfs``
  (``oid`` = sha256, ``size``, ``pointerSize``) for weight files;
- ``HEAD``/``GET /{repo}/resolve/{revision}/{path}``: ``X-Repo-Commit``, ``ETag`` (the git
  blob sha1, or for an LFS file the sha256, also in ``X-Linked-Etag`` with ``X-Linked-Size``),
  ``Content-Length``, ``Accept-Ranges``; a ``Range: bytes=N-`` request gets a 206 with
  ``Content-Range``.

A revision is a branch name or a commit sha. Unknown repos and revisions answer 404 with the
``X-Error-Code`` the library reads. :meth:`HubServer.cut_next` makes the next GET of a file send
its headers and half its body, then drop the connection (the library resumes with a Range).
:meth:`HubServer.lie_about` announces a wrong LFS sha256 for a file (a tampered mirror).

The certificate comes from a private CA made here with ``cryptography``; :meth:`HubServer.env`
gives the variables that point a client at the server and make it trust that CA
(``SSL_CERT_FILE``, ``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``, ``HF_ENDPOINT``).
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import ssl
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

LFS_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


def make_tls_files(folder: Path) -> tuple[Path, Path, Path]:
    """A private CA and a server certificate for 127.0.0.1/localhost signed by it:
    (ca.pem, server.pem, server.key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hps test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    ca_path, cert_path, key_path = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_path, cert_path, key_path


def git_blob_sha1(content: bytes) -> str:
    """The git object id of a file (what the Hub gives as a non-LFS file's ETag)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content, usedforsecurity=False).hexdigest()


@dataclass
class Repo:
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # sha -> path -> bytes
    refs: dict[str, str] = field(default_factory=dict)  # branch -> sha


@dataclass
class HubServer:
    """The server's state; :meth:`start` serves it on a free port of 127.0.0.1."""

    folder: Path
    repos: dict[str, Repo] = field(default_factory=dict)
    # method, path, Range header, Authorization header
    requests: list[tuple[str, str, str | None, str | None]] = field(default_factory=list)
    cuts: set[str] = field(default_factory=set)  # file paths whose next GET is cut midway
    lies: set[str] = field(default_factory=set)  # file paths announced with a wrong sha256
    _httpd: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add_commit(self, repo_id: str, files: dict[str, bytes], branch: str = "main") -> str:
        """Add a commit holding ``files`` to ``repo_id``, move ``branch`` to it; its sha."""
        repo = self.repos.setdefault(repo_id, Repo())
        digest = hashlib.sha1(usedforsecurity=False)
        digest.update(f"{repo_id} {len(repo.commits)}".encode())
        for path in sorted(files):
            digest.update(path.encode() + hashlib.sha256(files[path]).digest())
        sha = digest.hexdigest()
        repo.commits[sha] = dict(files)
        repo.refs[branch] = sha
        return sha

    def cut_next(self, path: str) -> None:
        """Drop the connection halfway through the next GET of ``path``."""
        with self._lock:
            self.cuts.add(path)

    def lie_about(self, path: str) -> None:
        """Announce a wrong LFS sha256 for ``path`` (its bytes stay the same)."""
        self.lies.add(path)

    def resolve(self, repo_id: str, revision: str) -> str | None:
        repo = self.repos[repo_id]
        if revision in repo.commits:
            return revision
        return repo.refs.get(revision)

    @property
    def url(self) -> str:
        assert self._httpd is not None
        return f"https://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def ca_file(self) -> Path:
        return self.folder / "ca.pem"

    def env(self) -> dict[str, str]:
        """Variables pointing huggingface_hub (and requests, curl) at this server, trusting
        its CA; telemetry and Xet off."""
        ca = str(self.ca_file)
        return {
            "HF_ENDPOINT": self.url,
            "SSL_CERT_FILE": ca,
            "REQUESTS_CA_BUNDLE": ca,
            "CURL_CA_BUNDLE": ca,
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        }

    def start(self) -> HubServer:
        """Serve on 127.0.0.1 (a free port) in a daemon thread."""
        _, cert, key = make_tls_files(self.folder)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server = self

        class Handler(_HubHandler):
            hub = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (connections are refused from now on)."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def take_cut(self, path: str) -> bool:
        with self._lock:
            if path in self.cuts:
                self.cuts.discard(path)
                return True
            return False


class _HubHandler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet tests

    def do_HEAD(self) -> None:
        self._route(head=True)

    def do_GET(self) -> None:
        self._route(head=False)

    def _route(self, head: bool) -> None:
        url = urllib.parse.urlsplit(self.path)
        self.hub.requests.append(
            (self.command, url.path, self.headers.get("Range"), self.headers.get("Authorization"))
        )
        parts = [urllib.parse.unquote(p) for p in url.path.strip("/").split("/")]
        if parts[:2] == ["api", "models"] and len(parts) >= 6:
            repo_id, action, revision = "/".join(parts[2:4]), parts[4], parts[5]
            commit = self._commit(repo_id, revision)
            if commit is None:
                return
            if action in ("revision", "tree"):
                info = self._info if action == "revision" else self._tree
                self._json(info(repo_id, commit))
                return
        elif len(parts) >= 5 and parts[2] == "resolve":
            repo_id, revision, path = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
            commit = self._commit(repo_id, revision)
            if commit is not None:
                self._file(repo_id, commit, path, head)
            return
        self._error(404, "EntryNotFound", "no such endpoint")

    def _commit(self, repo_id: str, revision: str) -> str | None:
        if repo_id not in self.hub.repos:
            self._error(404, "RepoNotFound", f"no repository {repo_id}")
            return None
        commit = self.hub.resolve(repo_id, revision)
        if commit is None:
            self._error(404, "RevisionNotFound", f"no revision {revision}")
        return commit

    def _info(self, repo_id: str, commit: str) -> Any:
        files = self.hub.repos[repo_id].commits[commit]
        return {"id": repo_id, "sha": commit, "siblings": [{"rfilename": p} for p in files]}

    def _tree(self, repo_id: str, commit: str) -> Any:
        entries = []
        for path, content in sorted(self.hub.repos[repo_id].commits[commit].items()):
            entry: dict[str, Any] = {
                "type": "file",
                "path": path,
                "size": len(content),
                "oid": git_blob_sha1(content),
            }
            if path.endswith(LFS_SUFFIXES):
                entry["lfs"] = {"oid": self._sha256(path, content), "size": len(content)}
                entry["lfs"]["pointerSize"] = 134
            entries.append(entry)
        return entries

    def _sha256(self, path: str, content: bytes) -> str:
        if path in self.hub.lies:
            return hashlib.sha256(b"not " + content).hexdigest()
        return hashlib.sha256(content).hexdigest()

    def _file(self, repo_id: str, commit: str, path: str, head: bool) -> None:
        content = self.hub.repos[repo_id].commits[commit].get(path)
        if content is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("X-Repo-Commit", commit)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start = _range_start(self.headers.get("Range"))
        body = content[start:]
        self.send_response(206 if start else 200)
        self.send_header("X-Repo-Commit", commit)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        if path.endswith(LFS_SUFFIXES):
            digest = self._sha256(path, content)
            self.send_header("ETag", f'"{digest}"')
            self.send_header("X-Linked-Etag", f'"{digest}"')
            self.send_header("X-Linked-Size", str(len(content)))
        else:
            self.send_header("ETag", f'"{git_blob_sha1(content)}"')
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(content) - 1}/{len(content)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if head:
            return
        if self.hub.take_cut(path):
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.close()  # mid-body: the client sees an incomplete response
            return
        self.wfile.write(body)

    def _json(self, value: Any) -> None:
        body = json.dumps(value).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, code: str, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _range_start(header: str | None) -> int:
    """N of ``bytes=N-`` (what the library sends to resume); 0 without a Range."""
    if not header or not header.startswith("bytes="):
        return 0
    first = header.removeprefix("bytes=").split(",")[0]
    return int(first.split("-")[0] or 0)
