"""``update.offer`` on the router, piece by piece: the pure argument and manifest checks (refused
before the command is accepted), the busy and free-space checks, and the download's caps and
timeouts against a local HTTPS server with mutual TLS. End to end: tests/integration/
test_update_offer.py."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.commands.envelope import Command, CommandRefusedError, Reason
from gateway.config.settings import Config, load
from gateway.daemon.update_offer import MAX_MANIFEST_B64_CHARS, UpdateOffers
from gateway.updates import fetch
from gateway.updates.inbox import inbox_dir
from gateway.updates.release import Release, sign_release
from rig.pki import RigPki, create_rig_pki
from tests.factories import VALID_CONFIG

KEY = ed25519.Ed25519PrivateKey.generate()
RUNNING = "0.3.0"
URL = "https://provider.example:8443/homecare/v1/releases/" + "a" * 64


def manifest(version: str = "0.3.1", *, arch: str = "amd64", rollback: bool = False,
             key: ed25519.Ed25519PrivateKey = KEY, data: bytes = b"x" * 100) -> bytes:  # fmt: skip
    release = Release(
        version=version, arch=arch, sha256=hashlib.sha256(data).hexdigest(), size=len(data),
        compression="gz", rollback=rollback, issued_at=datetime.now(UTC), outbox_schema=3,
        outbox_min_reader=3,
    )  # fmt: skip
    return sign_release(release, key)


def args(raw: bytes | None = None, url: Any = URL) -> dict[str, Any]:
    return {"manifest": base64.b64encode(raw or manifest()).decode(), "url": url}


@pytest.fixture
def cfg(files: Path) -> Config:
    (files / "release.pub").write_bytes(
        KEY.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    path = files / "gateway.toml"
    path.write_text(VALID_CONFIG + '\n[updates]\nrelease_signing_key = "release.pub"\n')
    c = load(path)
    c.state_dir.mkdir(parents=True, exist_ok=True)
    return c


def offers(cfg: Config, tmp_path: Path | None = None) -> UpdateOffers:
    state = (tmp_path or cfg.state_dir) / "updater-state.json"
    return UpdateOffers(cfg, running_version=RUNNING, arch="amd64", updater_state=state)


def refusal(o: UpdateOffers, a: dict[str, Any]) -> Reason:
    with pytest.raises(CommandRefusedError) as exc:
        o.validate(a)
    return exc.value.reason


def test_a_good_offer_validates_to_its_verified_release(cfg: Config) -> None:
    raw = manifest()
    offer = offers(cfg).validate(args(raw))
    assert (offer.release.version, offer.release.size, offer.url) == ("0.3.1", 100, URL)
    assert offer.manifest == raw  # dropped into the inbox as signed, byte for byte


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({"manifest": "", "url": URL}, Reason.BAD_ARGS),
        ({"url": URL}, Reason.BAD_ARGS),
        ({**args(), "extra": 1}, Reason.BAD_ARGS),
        ({"manifest": "!!!", "url": URL}, Reason.BAD_ARGS),
        ({"manifest": "A" * (MAX_MANIFEST_B64_CHARS + 4), "url": URL}, Reason.BAD_ARGS),
        ({"manifest": base64.b64encode(b"{}").decode(), "url": URL}, Reason.BAD_ARGS),
        (args(url=URL.replace("https", "http")), Reason.BAD_ARGS),
        (args(url="https://u:p@provider.example/x"), Reason.BAD_ARGS),
        (args(url=URL + "#frag"), Reason.BAD_ARGS),
        (args(url="https:///nohost"), Reason.BAD_ARGS),
        (args(url="https://provider.example/a b"), Reason.BAD_ARGS),
        (args(url="https://provider.example/" + "a" * fetch.MAX_URL_CHARS), Reason.BAD_ARGS),
        (args(url=42), Reason.BAD_ARGS),
        (args(manifest(key=ed25519.Ed25519PrivateKey.generate())), Reason.BAD_RELEASE_SIGNATURE),
        (args(manifest(arch="arm64")), Reason.NOT_APPLICABLE),
        (args(manifest("0.2.9")), Reason.NOT_APPLICABLE),
        (args(manifest(RUNNING)), Reason.NOT_APPLICABLE),
    ],
)
def test_each_bad_offer_is_refused_with_its_reason(
    cfg: Config, bad: dict[str, Any], reason: Reason
) -> None:
    assert refusal(offers(cfg), bad) is reason


def test_an_older_release_signed_as_a_rollback_is_accepted(cfg: Config) -> None:
    assert offers(cfg).validate(args(manifest("0.2.9", rollback=True))).release.rollback


def test_a_router_without_updates_refuses_every_offer(cfg: Config) -> None:
    bare = dataclasses.replace(cfg, updates=None)
    assert refusal(offers(bare), args()) is Reason.NOT_ALLOWED


COMMAND = Command("gw-0001", "c-1", 1, datetime.now(UTC), datetime.now(UTC), "update.offer", {})


async def _busy_reason(o: UpdateOffers) -> Reason:
    with pytest.raises(CommandRefusedError) as exc:
        await o.handle(COMMAND, o.validate(args()))
    return exc.value.reason


async def test_a_release_waiting_in_the_inbox_makes_the_next_offer_busy(cfg: Config) -> None:
    (inbox_dir(cfg.state_dir) / "0.3.1-abc").mkdir(parents=True)
    assert await _busy_reason(offers(cfg)) is Reason.BUSY


async def test_an_updater_in_its_health_gate_makes_an_offer_busy(cfg: Config) -> None:
    (cfg.state_dir / "updater-state.json").write_text('{"format": 1, "phase": "trial"}')
    assert await _busy_reason(offers(cfg)) is Reason.BUSY


async def test_an_offer_that_would_eat_the_outbox_headroom_is_refused(cfg: Config) -> None:
    """The outbox may grow to its quota on the same disk: the release must leave that free."""
    greedy = dataclasses.replace(cfg, outbox_quota_bytes=2**60)
    assert await _busy_reason(offers(greedy)) is Reason.NOT_ALLOWED
    assert not inbox_dir(cfg.state_dir).exists()


# -- the download ------------------------------------------------------------------------------


class Server:
    """HTTPS with mutual TLS (the rig's CA); ``behaviour`` decides what GET answers."""

    def __init__(self, pki: RigPki, behaviour: str, body: bytes) -> None:
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *a: Any) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                claimed = len(body) * (2 if behaviour == "claims-more" else 1)
                self.send_header("Content-Length", str(claimed))
                self.end_headers()
                if behaviour == "pause":  # a chunk and a bit, wait, then the rest slowly
                    self.wfile.write(body[:70_000])
                    self.wfile.flush()
                    outer.release.wait(30)
                    for i in range(70_000, len(body), 1024):
                        self.wfile.write(body[i : i + 1024])
                        self.wfile.flush()
                        time.sleep(0.01)
                    return
                if behaviour == "stall":
                    self.wfile.write(body[:10])
                    self.wfile.flush()
                    outer.release.wait(30)
                    self.close_connection = True  # the client sees the body end short
                    return
                self.wfile.write(body)

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(pki.broker_cert), str(pki.broker_key))
        ctx.load_verify_locations(str(pki.ca_cert))
        ctx.verify_mode = ssl.CERT_REQUIRED
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}/r"

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> RigPki:
    return create_rig_pki(tmp_path_factory.mktemp("pki"), gateway_ids=["gw-0001"])


@pytest.fixture
def tls(pki: RigPki) -> fetch.TlsFiles:
    gw = pki.gateway("gw-0001")
    return fetch.TlsFiles(pki.ca_cert, gw.client_cert, gw.client_key)


@pytest.fixture
def serve(pki: RigPki) -> Iterator[Any]:
    servers: list[Server] = []

    def start(behaviour: str, body: bytes) -> Server:
        servers.append(Server(pki, behaviour, body))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def test_the_body_streams_in_bounded_chunks(serve: Any, tls: fetch.TlsFiles) -> None:
    body = bytes(range(256)) * 1024
    server = serve("ok", body)
    chunks = list(fetch.stream(server.url, tls, max_bytes=len(body), deadline_s=30,
                               cancel=threading.Event()))  # fmt: skip
    assert b"".join(chunks) == body
    assert max(map(len, chunks)) <= fetch.CHUNK_BYTES


def test_a_server_claiming_more_than_the_manifest_is_cut_off_before_the_body(
    serve: Any, tls: fetch.TlsFiles
) -> None:
    server = serve("claims-more", b"y" * 1000)
    with pytest.raises(fetch.ReleaseDownloadError, match="manifest says 1000"):
        next(fetch.stream(server.url, tls, max_bytes=1000, deadline_s=30, cancel=threading.Event()))


def test_a_stalled_download_fails_on_the_read_timeout(serve: Any, tls: fetch.TlsFiles) -> None:
    server = serve("stall", b"z" * 100_000)
    with pytest.raises(fetch.ReleaseDownloadError, match="timed out"):
        list(fetch.stream(server.url, tls, max_bytes=100_000, deadline_s=30,
                          cancel=threading.Event(), read_timeout_s=0.5))  # fmt: skip


def test_a_cancelled_download_stops_at_the_next_chunk(serve: Any, tls: fetch.TlsFiles) -> None:
    body = b"c" * (4 * fetch.CHUNK_BYTES)
    server = serve("ok", body)
    cancel = threading.Event()
    gen = fetch.stream(server.url, tls, max_bytes=len(body), deadline_s=30, cancel=cancel)
    next(gen)
    cancel.set()
    with pytest.raises(fetch.ReleaseDownloadError, match="cancelled"):
        next(gen)


def test_a_server_not_of_the_provider_ca_is_refused(
    serve: Any, tls: fetch.TlsFiles, tmp_path: Path
) -> None:
    server = serve("ok", b"q")
    other = create_rig_pki(tmp_path / "other", gateway_ids=["gw-0001"])
    wrong_ca = dataclasses.replace(tls, ca_file=other.ca_cert)
    with pytest.raises(fetch.ReleaseDownloadError, match="not the provider's"):
        next(fetch.stream(server.url, wrong_ca, max_bytes=1, deadline_s=30,
                          cancel=threading.Event()))  # fmt: skip


async def test_a_cancelled_offer_stops_its_download_and_leaves_nothing(
    cfg: Config, pki: RigPki, serve: Any
) -> None:
    """The runner's timeout (or shutdown) cancels the handler mid-download: the download
    thread stops at its next chunk although the server goes on sending, removes its half
    entry and only then frees the offer slot (an offer meanwhile is ``busy``); the inbox never
    sees a byte."""
    body = bytes(200_000)
    server = serve("pause", body)
    gw = pki.gateway("gw-0001")
    real = dataclasses.replace(cfg, ca_file=pki.ca_cert, cert_file=gw.client_cert,
                               key_file=gw.client_key)  # fmt: skip
    o = offers(real)
    offer = o.validate(args(manifest(data=body), url=server.url))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(o.handle(COMMAND, offer), 2.0)
    incoming = cfg.state_dir / "updates" / "incoming"
    assert [p.name for p in incoming.iterdir()]  # the half entry, until the thread ends
    with pytest.raises(CommandRefusedError) as busy:
        await o.handle(COMMAND, offer)
    assert busy.value.reason is Reason.BUSY
    server.release.set()  # the server sends the rest; the thread stops at its next chunk
    deadline = asyncio.get_running_loop().time() + 30
    while o._active.locked():
        assert asyncio.get_running_loop().time() < deadline, "the download thread never ended"
        await asyncio.sleep(0.05)
    assert list(incoming.iterdir()) == []
    assert list(inbox_dir(cfg.state_dir).iterdir()) == []
