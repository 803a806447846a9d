"""``hps models fetch``: https at every hop, few redirects, a size cap, nothing kept on any
failure, and the sha256 of what was kept recorded beside it and verified by later loads.

A local HTTPS server needs certificates; the policy is tested instead through plain http on
127.0.0.1, which ``fetch`` reaches only when a test names it in ``allow_insecure_hosts``."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from hps.checkpoints import ChecksumMismatch, read_sidecar, save_checkpoint, sidecar_path
from hps.factory import load_model
from hps.fetch import DownloadRefused, fetch

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
ALLOWED = {"127.0.0.1"}


class Handler(BaseHTTPRequestHandler):
    """``/file`` serves PAYLOAD (or ``server.files[path]``); ``/hop/N`` redirects N times;
    ``/to?url=...`` redirects to that URL; ``/stream`` sends bytes without Content-Length."""

    def do_GET(self) -> None:
        files: dict[str, bytes] = self.server.files  # type: ignore[attr-defined]
        path, _, query = self.path.partition("?")
        if path in files:
            self._send(files[path])
        elif path.startswith("/hop/"):
            left = int(path.rsplit("/", 1)[1])
            self._redirect("/file" if left <= 1 else f"/hop/{left - 1}")
        elif path == "/to":
            self._redirect(query.removeprefix("url="))
        elif path == "/stream":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(PAYLOAD * 3)
        elif path == "/big":
            self.send_response(200)
            self.send_header("Content-Length", str(10**12))
            self.end_headers()
        else:
            self.send_error(404)

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[ThreadingHTTPServer]:
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.files = {"/file": PAYLOAD}  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def base(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def nothing_kept(target: Path) -> bool:
    return sorted(p.name for p in target.parent.iterdir()) == []


def test_a_download_is_kept_with_its_sha256_beside_it(
    server: ThreadingHTTPServer, tmp_path: Path
) -> None:
    target = tmp_path / "models" / "model.pt"
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    fetched = fetch(f"{base(server)}/hop/2", target, allow_insecure_hosts=ALLOWED)
    assert target.read_bytes() == PAYLOAD
    assert fetched.sha256 == digest and fetched.size == len(PAYLOAD)
    assert fetched.final_url == f"{base(server)}/file"
    assert fetched.sidecar == sidecar_path(target)
    assert fetched.sidecar.read_text() == f"{digest}  model.pt\n"  # `sha256sum -c` reads it
    assert read_sidecar(target) == digest
    assert sorted(p.name for p in target.parent.iterdir()) == ["model.pt", "model.pt.sha256"]
    # Pinned up front: the same bytes pass.
    fetch(f"{base(server)}/file", target, sha256=digest.upper(), allow_insecure_hosts=ALLOWED)


@pytest.mark.parametrize(
    "location",
    [
        "http://localhost:{port}/file",  # the same server, but not an allowed insecure host
        "http://example.invalid/model.pt",
        "file:///etc/passwd",
        "ftp://127.0.0.1/model.pt",
    ],
)
def test_a_redirect_off_https_is_refused_and_nothing_is_kept(
    server: ThreadingHTTPServer, tmp_path: Path, location: str
) -> None:
    refused = location.format(port=server.server_address[1])
    target = tmp_path / "models" / "model.pt"
    with pytest.raises(DownloadRefused, match="refusing a redirect") as caught:
        fetch(f"{base(server)}/to?url={refused}", target, allow_insecure_hosts=ALLOWED)
    assert refused in str(caught.value)
    assert nothing_kept(target)


def test_too_many_redirects_are_refused(server: ThreadingHTTPServer, tmp_path: Path) -> None:
    target = tmp_path / "models" / "model.pt"
    fetch(f"{base(server)}/hop/5", target, allow_insecure_hosts=ALLOWED)  # 5 is the limit
    target.unlink()
    sidecar_path(target).unlink()
    with pytest.raises(DownloadRefused, match="more than 5 redirects"):
        fetch(f"{base(server)}/hop/6", target, allow_insecure_hosts=ALLOWED)
    assert nothing_kept(target)
    with pytest.raises(DownloadRefused, match="more than 1 redirects"):
        fetch(f"{base(server)}/hop/2", target, allow_insecure_hosts=ALLOWED, max_redirects=1)
    assert nothing_kept(target)


def test_a_sha256_mismatch_keeps_nothing(server: ThreadingHTTPServer, tmp_path: Path) -> None:
    target = tmp_path / "models" / "model.pt"
    with pytest.raises(ChecksumMismatch, match="expected 0000"):
        fetch(f"{base(server)}/file", target, sha256="0" * 64, allow_insecure_hosts=ALLOWED)
    assert nothing_kept(target)


def test_a_download_over_the_size_cap_is_refused(
    server: ThreadingHTTPServer, tmp_path: Path
) -> None:
    target = tmp_path / "models" / "model.pt"
    with pytest.raises(DownloadRefused, match="bytes announced, the limit is"):
        fetch(f"{base(server)}/big", target, allow_insecure_hosts=ALLOWED)
    assert nothing_kept(target)
    with pytest.raises(DownloadRefused, match=f"more than {len(PAYLOAD)} bytes"):
        fetch(
            f"{base(server)}/stream",
            target,
            allow_insecure_hosts=ALLOWED,
            max_bytes=len(PAYLOAD),
        )
    assert nothing_kept(target)


def test_plain_http_is_refused_unless_a_test_allows_the_host(
    server: ThreadingHTTPServer, tmp_path: Path
) -> None:
    target = tmp_path / "models" / "model.pt"
    with pytest.raises(DownloadRefused, match=r"refusing a non-https URL: http://127\.0\.0\.1"):
        fetch(f"{base(server)}/file", target)
    assert not target.parent.exists() or nothing_kept(target)


def test_a_later_load_verifies_the_recorded_sha256(
    server: ThreadingHTTPServer, tmp_path: Path
) -> None:
    from hps.architectures import build_model, get_architecture

    torch.manual_seed(0)
    source = save_checkpoint(
        tmp_path / "published.safetensors",
        build_model(get_architecture("tiny")),
        {"architecture": "tiny"},
    )
    server.files["/tiny.safetensors"] = source.read_bytes()  # type: ignore[attr-defined]
    target = tmp_path / "models" / "tiny.safetensors"
    fetch(f"{base(server)}/tiny.safetensors", target, allow_insecure_hosts=ALLOWED)
    load_model(None, target)  # verified against the sidecar, then loaded

    torch.manual_seed(1)  # swapped for other (valid) weights
    save_checkpoint(target, build_model(get_architecture("tiny")), {"architecture": "tiny"})
    with pytest.raises(ChecksumMismatch, match="sha256 is"):
        load_model(None, target)
