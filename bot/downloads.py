"""Safe download of Discord attachments: only from allowlisted CDN hosts, https (http only
when explicitly allowed, for the local emulator), a size cap checked before and while reading,
a total deadline, and no redirect to another host."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import aiohttp

from config import Settings


class DownloadRefused(ValueError):
    """The attachment was not downloaded; the message says why (safe to show users)."""

    def __init__(self, message: str, *, temporary: bool = False) -> None:
        super().__init__(message)
        # A timeout, a dropped connection or a 5xx: trying again later may work.
        self.temporary = temporary


DEFAULT_PORTS = {"https": 443, "http": 80}


def check_url(url: str, allowed_hosts: list[str], *, allow_insecure: bool = False) -> None:
    """Raise DownloadRefused unless ``url`` is on an allowed host with an allowed scheme, on
    the scheme's own port (443) unless the allowlist names ``host:port`` itself (the local
    emulator in tests), and without credentials in it."""
    parts = urlsplit(url)
    schemes = {"https", "http"} if allow_insecure else {"https"}
    if parts.scheme not in schemes:
        raise DownloadRefused(f"refused {parts.scheme or 'schemeless'} URL: only https downloads")
    if parts.username is not None or parts.password is not None:
        raise DownloadRefused("refused a URL with credentials in it")
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:
        raise DownloadRefused("refused a URL with an invalid port") from None
    if host not in allowed_hosts and f"{host}:{port}" not in allowed_hosts:
        where = f"{host}:{port}" if port is not None else host or "nowhere"
        raise DownloadRefused(f"refused download from {where}: not an allowed CDN host")
    default_port = DEFAULT_PORTS[parts.scheme]
    if port not in (None, default_port) and f"{host}:{port}" not in allowed_hosts:
        raise DownloadRefused(
            f"refused download from {host}:{port}: only port {default_port} is allowed"
        )


async def download(
    session: aiohttp.ClientSession,
    url: str,
    *,
    allowed_hosts: list[str],
    max_bytes: int,
    timeout_s: float,
    allow_insecure: bool = False,
    declared_size: int | None = None,
) -> bytes:
    """The bytes at ``url``, or DownloadRefused (bad host, too large, timed out, HTTP error)."""
    check_url(url, allowed_hosts, allow_insecure=allow_insecure)
    if declared_size is not None and declared_size > max_bytes:
        raise DownloadRefused(f"the file is {declared_size:,} bytes; the limit is {max_bytes:,}")
    try:
        async with asyncio.timeout(timeout_s):
            async with session.get(url, allow_redirects=False) as response:
                if response.status in (301, 302, 303, 307, 308):
                    raise DownloadRefused("refused a redirect away from the CDN")
                if response.status != 200:
                    raise DownloadRefused(
                        f"the CDN answered HTTP {response.status}",
                        temporary=response.status >= 500 or response.status == 429,
                    )
                if (response.content_length or 0) > max_bytes:
                    raise DownloadRefused(
                        f"the file is {response.content_length:,} bytes; the limit is {max_bytes:,}"
                    )
                chunks, total = [], 0
                async for chunk in response.content.iter_chunked(1 << 16):
                    total += len(chunk)
                    if total > max_bytes:
                        raise DownloadRefused(
                            f"the file is larger than the limit of {max_bytes:,} bytes"
                        )
                    chunks.append(chunk)
                return b"".join(chunks)
    except TimeoutError:
        raise DownloadRefused(
            f"the download took longer than {timeout_s:g} s", temporary=True
        ) from None
    except aiohttp.ClientError as exc:
        raise DownloadRefused(
            f"the download failed ({type(exc).__name__})", temporary=True
        ) from None


async def download_attachment(
    session: aiohttp.ClientSession, settings: Settings, url: str, declared_size: int | None
) -> bytes:
    """:func:`download` with the limits the settings give (CDN allowlist, size cap, deadline,
    http only where allowed)."""
    return await download(
        session,
        url,
        allowed_hosts=settings.allowed_cdn_hosts,
        max_bytes=settings.max_image_bytes,
        timeout_s=settings.download_timeout_s,
        allow_insecure=settings.allow_insecure_cdn,
        declared_size=declared_size,
    )
