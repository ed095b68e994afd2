"""``update.offer`` end to end (issue 20): the real mosquitto broker, the real gatewayd, the
provider's HTTPS service (provider/est.py) serving release artifacts over mutual TLS, and the
provider's verifier reading the sealed command outcomes.

The root updater does not run here: a release that arrives is checked in the daemon's inbox
(``<state_dir>/updates/inbox/<id>/``), where the updater would take it from. The artifact is
random bytes: the daemon checks digest and size, never the content (the updater does).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from buffer.schema_facts import OUTBOX_MIN_READER, OUTBOX_SCHEMA
from gateway import __version__
from gateway.updates.inbox import INCOMING, UPDATES_SUBDIR, inbox_dir
from gateway.updates.release import Release, parse_version, sign_release
from gateway.updates.updater import machine_arch
from provider.commands import public_key_text
from provider.est import EstAuthority, EstService, _Issued
from provider.release_offer import offer_args, publish, release_url
from rig.pki import RigPki, create_rig_pki
from tests.integration.rig import Rig, wait_for
from tests.integration.test_commands_downlink import THERMO, Centre, _config

pytestmark = pytest.mark.integration

ARTIFACT_BYTES = 3 * 1024 * 1024 + 17  # many chunks (64 KiB each), and not a round number


def _version(delta: int) -> str:
    major, minor, patch, _ = parse_version(__version__)
    return f"{major}.{minor}.{patch + delta}" if patch + delta >= 0 else f"{major}.{minor - 1}.9"


NEWER = _version(+1)
OLDER = _version(-1)


@dataclass
class OfferRig:
    rig: Rig
    centre: Centre
    est: EstService
    authority: EstAuthority
    release_key: ed25519.Ed25519PrivateKey
    work: Path

    def release(
        self, version: str, artifact: bytes, *, key: ed25519.Ed25519PrivateKey | None = None,
        rollback: bool = False,
    ) -> tuple[Release, bytes, Path]:  # fmt: skip
        """A signed manifest for ``artifact`` (written to a file), like release sign makes."""
        release = Release(
            version=version,
            arch=machine_arch(),
            sha256=hashlib.sha256(artifact).hexdigest(),
            size=len(artifact),
            compression="gz",
            rollback=rollback,
            issued_at=datetime.now(UTC),
            outbox_schema=OUTBOX_SCHEMA,
            outbox_min_reader=OUTBOX_MIN_READER,
        )
        path = self.work / f"{version}-{release.sha256[:8]}.tar.gz"
        path.write_bytes(artifact)
        return release, sign_release(release, key or self.release_key), path

    def offer(self, manifest: bytes, sha256: str) -> dict[str, Any]:
        args = offer_args(manifest, release_url(self.est.url, sha256))
        return self.centre.run(self.centre.signed("update.offer", args))

    def fetched(self, sha256: str) -> list[str]:
        return [gw for gw, sha in self.authority.release_fetches if sha == sha256]

    def inbox(self) -> list[Path]:
        d = inbox_dir(self.rig.state_dir)
        return sorted(d.iterdir()) if d.is_dir() else []

    def incoming(self) -> list[Path]:
        d = self.rig.state_dir / UPDATES_SUBDIR / INCOMING
        return sorted(d.iterdir()) if d.is_dir() else []

    def updater_takes_the_inbox(self) -> None:
        for entry in self.inbox():
            shutil.rmtree(entry)


class StallingServer:
    """An HTTPS release server (mutual TLS, the rig's CA) that sends half the artifact and then
    holds the connection open until told to let go: a download caught in the middle."""

    def __init__(self, pki: RigPki, body: bytes) -> None:
        self.half_sent = threading.Event()
        self.let_go = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                outer.half_sent.set()
                outer.let_go.wait(120)

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(pki.broker_cert), str(pki.broker_key))
        ctx.load_verify_locations(str(pki.ca_cert))
        ctx.verify_mode = ssl.CERT_REQUIRED
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.httpd.server_address[1]}/homecare/v1/releases/x"

    def __enter__(self) -> StallingServer:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.let_go.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def offers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OfferRig]:
    base = tmp_path_factory.mktemp("offer")
    rig = Rig(base)
    est: EstService | None = None
    try:
        rig.start_provider()
        authority = EstAuthority(rig.pki, base / "crl.pem", releases_dir=base / "releases")
        est = EstService(authority)
        est.start()
        command_key = ed25519.Ed25519PrivateKey.generate()
        release_key = ed25519.Ed25519PrivateKey.generate()
        pub = base / "release-signing.pub"
        pub.write_bytes(
            release_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        config = _config(rig, public_key_text(command_key), [THERMO])
        config.write_text(config.read_text() + f'\n[updates]\nrelease_signing_key = "{pub}"\n')
        rig.start_daemon(config)
        wait_for(lambda: len(rig.received.readings) >= 2, 60, "readings from the thermometer")
        work = base / "work"
        work.mkdir()
        yield OfferRig(rig, Centre(rig, command_key), est, authority, release_key, work)
        assert rig.daemon is not None
        assert rig.daemon.poll() is None, rig.log_text()[-3000:]
        assert rig.stop_daemon() == 0, rig.log_text()[-3000:]
    finally:
        if est is not None:
            est.stop()
        rig.close()


def test_a_good_offer_lands_whole_in_the_inbox_and_a_second_is_busy(offers: OfferRig) -> None:
    """A newer release, signed with the pinned key and published on the provider's service:
    the router downloads it with its certificate and the outcome is ``done``; the inbox holds
    exactly the signed manifest and the artifact, byte for byte, and nothing is left in
    ``incoming``. While it waits for the updater, another offer is refused ``busy`` (and not
    downloaded)."""
    artifact = os.urandom(ARTIFACT_BYTES)
    release, manifest, path = offers.release(NEWER, artifact)
    publish(offers.authority.releases_dir or Path("/nonexistent"), release, path)
    got = offers.offer(manifest, release.sha256)
    assert got["outcome"] == "done", got
    assert got["result"]["version"] == NEWER
    assert got["result"]["bytes"] == ARTIFACT_BYTES
    assert offers.fetched(release.sha256) == [offers.rig.gateway_id]
    [entry] = offers.inbox()
    assert entry.name == got["result"]["inbox_entry"]
    assert (entry / "release.json").read_bytes() == manifest
    assert hashlib.sha256((entry / "release.tar.gz").read_bytes()).hexdigest() == release.sha256
    assert offers.incoming() == []

    second, manifest2, path2 = offers.release(NEWER, os.urandom(1024))
    publish(offers.authority.releases_dir or Path("/nonexistent"), second, path2)
    busy = offers.offer(manifest2, second.sha256)
    assert (busy["outcome"], busy["reason"]) == ("refused", "busy"), busy
    assert offers.fetched(second.sha256) == []
    assert len(offers.inbox()) == 1
    offers.updater_takes_the_inbox()


def test_bad_signature_downgrade_and_bad_urls_are_refused_before_any_download(
    offers: OfferRig,
) -> None:
    """A manifest signed by another key (``bad-release-signature``), an older version not
    signed as a rollback (``not-applicable``), a plain-http URL and a URL with credentials
    (``bad-args``): each refused at once (no ``accepted`` record), nothing fetched from the
    provider's service, nothing in the inbox."""
    artifact = os.urandom(64 * 1024)
    good, _, path = offers.release(NEWER, artifact)
    releases = offers.authority.releases_dir or Path("/nonexistent")
    publish(releases, good, path)
    intruder = ed25519.Ed25519PrivateKey.generate()
    _, forged, _ = offers.release(NEWER, artifact, key=intruder)
    older, downgrade, older_path = offers.release(OLDER, os.urandom(2048))
    publish(releases, older, older_path)
    _, signed, _ = offers.release(NEWER, artifact)
    url = release_url(offers.est.url, good.sha256)
    cases: list[tuple[str, dict[str, Any]]] = [
        ("bad-release-signature", offer_args(forged, url)),
        ("not-applicable", offer_args(downgrade, release_url(offers.est.url, older.sha256))),
        ("bad-args", offer_args(signed, url.replace("https://", "http://"))),
        ("bad-args", offer_args(signed, url.replace("https://", "https://user:pw@"))),
        ("bad-args", {"manifest": "not base64!", "url": url}),
    ]
    for reason, args in cases:
        sha = offers.centre.send_raw(offers.centre.signed("update.offer", args))
        got = offers.centre.outcome(sha)
        assert (got["outcome"], got["reason"]) == ("refused", reason), got
        assert offers.centre.records_of(sha) == ["refused"]
    assert offers.fetched(good.sha256) == []
    assert offers.fetched(older.sha256) == []
    assert offers.inbox() == []


def test_tampered_bytes_on_the_server_fail_and_leave_nothing_behind(offers: OfferRig) -> None:
    """The provider's service serves other bytes of the same size under the release's digest
    (a compromised mirror, a disk error): the router downloads, the digest does not match,
    the outcome is ``failed`` (ReleaseInvalidError) and neither the inbox nor ``incoming``
    holds anything. A release not published at all fails the same way (HTTP 404)."""
    artifact = os.urandom(512 * 1024)
    release, manifest, path = offers.release(NEWER, artifact)
    releases = offers.authority.releases_dir or Path("/nonexistent")
    publish(releases, release, path)
    tampered = bytearray(artifact)
    tampered[len(tampered) // 2] ^= 0x01  # one bit
    (releases / release.sha256).write_bytes(bytes(tampered))
    got = offers.offer(manifest, release.sha256)
    assert (got["outcome"], got["error"]) == ("failed", "ReleaseInvalidError"), got
    assert "SHA-256" in got["detail"]
    assert offers.fetched(release.sha256) == [offers.rig.gateway_id]
    assert offers.inbox() == []
    assert offers.incoming() == []

    missing, manifest2, _ = offers.release(NEWER, os.urandom(4096))  # never published
    got = offers.offer(manifest2, missing.sha256)
    assert (got["outcome"], got["error"]) == ("failed", "ReleaseDownloadError"), got
    assert "404" in got["detail"]
    assert offers.inbox() == []
    assert offers.incoming() == []


def test_the_release_service_serves_only_routers_with_a_certificate(offers: OfferRig) -> None:
    """Without a client certificate, or with a revoked one, the release route answers 401
    and serves no byte; with the router's certificate it serves the published artifact."""
    release, _, path = offers.release(NEWER, os.urandom(4096))
    publish(offers.authority.releases_dir or Path("/nonexistent"), release, path)
    url = release_url(offers.est.url, release.sha256)
    anonymous = ssl.create_default_context(cafile=str(offers.rig.pki.ca_cert))
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, context=anonymous, timeout=30)
    assert refused.value.code == 401
    gw = offers.rig.pki.gateway(offers.rig.gateway_id)
    router = ssl.create_default_context(cafile=str(offers.rig.pki.ca_cert))
    router.load_cert_chain(str(gw.client_cert), str(gw.client_key))
    with urllib.request.urlopen(url, context=router, timeout=30) as resp:
        assert hashlib.sha256(resp.read()).hexdigest() == release.sha256
    # The same router once its certificate is revoked: refused.
    serial = x509.load_pem_x509_certificate(gw.client_cert.read_bytes()).serial_number
    revoked = _Issued(offers.rig.gateway_id, serial, revoked_at=datetime.now(UTC))
    offers.authority.issued.append(revoked)
    try:
        with pytest.raises(urllib.error.HTTPError) as after:
            urllib.request.urlopen(url, context=router, timeout=30)
        assert after.value.code == 401
    finally:
        offers.authority.issued.remove(revoked)


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


LARGE_MIB = 96
GROWTH_CAP_MIB = 32  # what the daemon may grow by while a release streams through it


def test_a_large_release_streams_through_without_growing_the_daemon(offers: OfferRig) -> None:
    """A 96 MiB artifact (the unit's MemoryMax is 256M) goes through the daemon in chunks: its
    peak resident set (VmHWM, reset just before) stays within 32 MiB of where it was, so the
    artifact was never held whole; the inbox gets every byte."""
    path = offers.work / "large.tar.gz"
    digest = hashlib.sha256()
    with path.open("wb") as f:
        for _ in range(LARGE_MIB):
            block = os.urandom(1024 * 1024)
            digest.update(block)
            f.write(block)
    release = Release(
        version=NEWER, arch=machine_arch(), sha256=digest.hexdigest(),
        size=LARGE_MIB * 1024 * 1024, compression="gz", rollback=False,
        issued_at=datetime.now(UTC), outbox_schema=OUTBOX_SCHEMA,
        outbox_min_reader=OUTBOX_MIN_READER,
    )  # fmt: skip
    publish(offers.authority.releases_dir or Path("/nonexistent"), release, path)
    path.unlink()
    assert offers.rig.daemon is not None
    pid = offers.rig.daemon.pid
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS now
    before = _status_kib(pid, "VmRSS")
    got = offers.offer(sign_release(release, offers.release_key), release.sha256)
    peak = _status_kib(pid, "VmHWM")
    assert got["outcome"] == "done", got
    print(f"{LARGE_MIB} MiB release: {got['result']['download_s']} s, daemon RSS {before // 1024}"
          f" MiB before, peak {peak // 1024} MiB during")  # fmt: skip
    assert peak - before < GROWTH_CAP_MIB * 1024, (before, peak)
    [entry] = offers.inbox()
    assert (entry / "release.tar.gz").stat().st_size == release.size
    offers.updater_takes_the_inbox()
    (offers.authority.releases_dir or Path("/nonexistent")).joinpath(release.sha256).unlink()


def test_a_restart_mid_download_leaves_nothing_and_is_reported_interrupted(
    offers: OfferRig,
) -> None:
    """gatewayd killed (SIGKILL, a power cut for it) while half the artifact has arrived: the
    half entry it was writing stays in ``incoming`` (never in the inbox, which the updater
    watches); the next start removes it and seals the command ``interrupted``. The last test
    of the module's daemon: it restarts it."""
    artifact = os.urandom(1024 * 1024)
    release, manifest, _ = offers.release(NEWER, artifact)
    rig = offers.rig
    with StallingServer(rig.pki, artifact) as server:
        raw = offers.centre.signed("update.offer", offer_args(manifest, server.url))
        sha = offers.centre.send_raw(raw)
        wait_for(server.half_sent.is_set, 60, "half the artifact sent")
        wait_for(lambda: offers.incoming() != [], 30, "the entry being written")
        assert rig.daemon is not None
        rig.daemon.send_signal(signal.SIGKILL)
        assert rig.daemon.wait(30) == -signal.SIGKILL
    [half] = offers.incoming()
    assert (half / "release.json").read_bytes() == manifest
    assert offers.inbox() == []
    rig.start_daemon(rig.base / "gateway.toml")

    def interrupted() -> bool:  # sealed by the ledger's recovery: no envelope digest, the name
        return any(
            e.get("outcome") == "interrupted" and e.get("command") == "update.offer"
            for e in rig.received.events
        )

    wait_for(interrupted, 60, "the interrupted record")
    wait_for(lambda: offers.incoming() == [], 30, "incoming cleared at start")
    assert offers.inbox() == []
    assert offers.centre.records_of(sha) == ["accepted"]  # never done, never failed
    assert offers.fetched(release.sha256) == []  # only the stalling server ever saw it


def test_the_desk_publishes_and_serves_what_release_offer_sends(tmp_path: Path) -> None:
    """The command centre's way, as processes: ``serve-est`` runs the desk, ``command keygen``
    and ``release offer`` publish the artifact in the desk folder and send the command (the
    desk's broker acknowledges it); the desk's HTTPS service - another process - serves exactly
    that artifact at the URL sent, to a router certificate of the desk's CA only."""
    env = {k: v for k, v in os.environ.items() if k != "HOMECARE_PROVIDER_DESK"}
    desk = tmp_path / "desk"
    cli = [sys.executable, "-m", "provider.service"]
    log = tmp_path / "serve-est.log"
    with log.open("w") as out:
        serve = subprocess.Popen(
            [*cli, "serve-est", "--desk", str(desk), "--seconds", "300"],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        wait_for(lambda: "desk: files in" in log.read_text() or serve.poll() is not None, 60,
                 "the desk")  # fmt: skip
        assert serve.poll() is None, log.read_text()

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*cli, *args], capture_output=True, text=True, timeout=120, check=False, env=env
            )

        assert run("command", "keygen", "--desk", str(desk)).returncode == 0
        key = ed25519.Ed25519PrivateKey.generate()
        artifact = os.urandom(300_000)
        release = Release(
            version=NEWER, arch="amd64", sha256=hashlib.sha256(artifact).hexdigest(),
            size=len(artifact), compression="gz", rollback=False, issued_at=datetime.now(UTC),
            outbox_schema=OUTBOX_SCHEMA, outbox_min_reader=OUTBOX_MIN_READER,
        )  # fmt: skip
        (tmp_path / "release.json").write_bytes(sign_release(release, key))
        (tmp_path / "release.tar.gz").write_bytes(artifact)
        offered = run("release", "offer", "--desk", str(desk), "--gateway", "gw-desk-1",
                      "--manifest", str(tmp_path / "release.json"),
                      "--artifact", str(tmp_path / "release.tar.gz"))  # fmt: skip
        assert offered.returncode == 0, offered.stderr
        url = offered.stdout.strip().rsplit(" ", 1)[-1]
        assert url.endswith(f"/homecare/v1/releases/{release.sha256}")
        lines = (desk / "commands-sent.jsonl").read_text().splitlines()
        sent = [(s["command"], s["gateway_id"]) for s in map(json.loads, lines)]
        assert sent == [("update.offer", "gw-desk-1")]  # the desk's broker acknowledged it

        pki = create_rig_pki(desk / "pki", gateway_ids=["gw-desk-1"])  # the desk's CA
        gw = pki.gateway("gw-desk-1")
        router = ssl.create_default_context(cafile=str(pki.ca_cert))
        router.load_cert_chain(str(gw.client_cert), str(gw.client_key))
        with urllib.request.urlopen(url, context=router, timeout=30) as resp:
            assert resp.read() == artifact
        anonymous = ssl.create_default_context(cafile=str(pki.ca_cert))
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, context=anonymous, timeout=30)
        assert refused.value.code == 401
    finally:
        serve.terminate()
        serve.wait(30)
