"""Download an offered release artifact from the provider: HTTPS, mutual TLS, bounded.

The daemon's ``update.offer`` handler (gateway/daemon/update_offer.py) streams what this yields
straight into :func:`gateway.updates.inbox.drop_release`, which checks size and SHA-256 as the
bytes arrive: the artifact is never held in memory (the unit's MemoryMax is 256M), and a
download that breaks off or does not match leaves nothing behind.

- Only ``https://`` URLs (:func:`check_url`); the server must present a certificate of the
  provider's CA and match the URL's host; the router presents its own client certificate.
- Connect and per-read timeouts, an overall deadline, a byte cap (the manifest's size: a
  server that says or sends more is cut off), and a cancel flag checked between chunks.

Standard library only (http.client + ssl): one GET with a client certificate needs nothing more.
"""

from __future__ import annotations

import http.client
import ssl
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import SplitResult, urlsplit

from gateway.updates.errors import UpdateError

MAX_URL_CHARS = 2048
CONNECT_TIMEOUT_S = 20.0
READ_TIMEOUT_S = 60.0  # one read without a byte for this long: the download failed
CHUNK_BYTES = 64 * 1024  # what is in memory at once
_STATUS_WHY = {
    401: " (it does not accept this router's certificate)",
    403: " (it does not accept this router's certificate)",
    404: " (the release is not published there)",
}


class ReleaseDownloadError(UpdateError):
    """The artifact could not be downloaded: network, TLS, HTTP status, timeout or cap."""

    hint = (
        "check that the router reaches the provider's release service (the URL in the offer) "
        "and that the release was published there (homecare-provider release offer); offer again"
    )


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca_file: Path  # the provider's CA: the server's certificate must chain to it
    cert_file: Path  # the router's client certificate ...
    key_file: Path  # ... and its key


def check_url(text: object) -> SplitResult:
    """An ``https://host[:port]/path`` URL, or ValueError saying what is wrong with it."""
    if not isinstance(text, str) or not text:
        raise ValueError("url must be a string")
    if len(text) > MAX_URL_CHARS:
        raise ValueError(f"url longer than {MAX_URL_CHARS} characters")
    if not text.isascii() or not text.isprintable() or any(c.isspace() for c in text):
        raise ValueError("url must be printable ASCII without spaces")
    parts = urlsplit(text)
    if parts.scheme != "https":
        raise ValueError("url must be https://")
    if not parts.hostname or parts.username is not None or parts.password is not None:
        raise ValueError("url must name a host and carry no credentials")
    if parts.fragment:
        raise ValueError("url must have no #fragment")
    try:
        _ = parts.port
    except ValueError:
        raise ValueError("url has an unusable port") from None
    return parts


def _context(tls: TlsFiles) -> ssl.SSLContext:
    try:
        ctx = ssl.create_default_context(cafile=str(tls.ca_file))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    except (OSError, ssl.SSLError) as exc:
        raise ReleaseDownloadError(
            f"the router's TLS files are unusable: {type(exc).__name__}",
            hint="the router's certificate, key or provider CA is missing or damaged: "
            "gatewayctl self-test says which; re-enrol if needed",
        ) from None
    return ctx


def stream(
    url: str,
    tls: TlsFiles,
    *,
    max_bytes: int,
    deadline_s: float,
    cancel: threading.Event,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
    read_timeout_s: float = READ_TIMEOUT_S,
) -> Generator[bytes, None, None]:
    """Yield the body of ``GET url`` in chunks of at most :data:`CHUNK_BYTES`. Raises
    :class:`ReleaseDownloadError` on any failure, more than ``max_bytes``, ``deadline_s``
    passed, or ``cancel`` set. Close the generator to drop the connection early."""
    parts = check_url(url)
    host = parts.hostname
    assert host is not None  # check_url
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    where = f"{host}:{parts.port or 443}"
    started = time.monotonic()
    conn = http.client.HTTPSConnection(
        host, parts.port or 443, timeout=connect_timeout_s, context=_context(tls)
    )
    try:
        try:
            conn.connect()
            if conn.sock is not None:
                conn.sock.settimeout(read_timeout_s)
            conn.request("GET", path, headers={"Accept": "application/octet-stream"})
            resp = conn.getresponse()
        except ssl.SSLCertVerificationError as exc:
            raise ReleaseDownloadError(
                f"the release server at {where} is not the provider's ({exc.verify_message})"
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            raise ReleaseDownloadError(
                f"cannot fetch the release from {where}: {_why(exc)}"
            ) from None
        if resp.status != 200:
            why = _STATUS_WHY.get(resp.status, "")
            raise ReleaseDownloadError(
                f"the release server at {where} answered HTTP {resp.status}{why}"
            )
        length = resp.getheader("Content-Length")
        if length is not None and length.isdigit() and int(length) > max_bytes:
            raise ReleaseDownloadError(
                f"the release server sends {int(length)} bytes; the manifest says {max_bytes}"
            )
        got = 0
        while True:
            if cancel.is_set():
                raise ReleaseDownloadError("the download was cancelled")
            if time.monotonic() - started > deadline_s:
                raise ReleaseDownloadError(f"the download took longer than {deadline_s:.0f} s")
            try:
                chunk = resp.read(CHUNK_BYTES)
            except (OSError, http.client.HTTPException) as exc:
                raise ReleaseDownloadError(
                    f"the download from {where} broke off after {got} bytes: {_why(exc)}"
                ) from None
            if not chunk:
                return
            got += len(chunk)
            if got > max_bytes:
                raise ReleaseDownloadError(f"the release server sent more than {max_bytes} bytes")
            yield chunk
    finally:
        conn.close()


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return getattr(exc, "strerror", None) or type(exc).__name__
