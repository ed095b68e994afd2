"""The provider's EST enrolment service for the simulated rig (RFC 7030, test CA, tokens, CRL).

NOT a production CA: it signs with the rig CA key from :mod:`rig.pki`. It is a real
HTTPS server on loopback with real certificates, so the gateway's EST client, TLS checks and the
broker's CRL check are exercised for real:

- ``/.well-known/est/cacerts``        GET, the CA as base64 PKCS#7 certs-only
- ``/.well-known/est/simpleenroll``   POST base64 PKCS#10, one-time token (Basic or Bearer)
- ``/.well-known/est/simplereenroll`` POST base64 PKCS#10, TLS client certificate, same subject
- ``/homecare/v1/bundle``             GET, TLS client certificate: the signed episode bundle,
                                      bound to that certificate's key and the next generation
                                      (``offer_bundle``); ``bundles`` serves fixed bytes (tests)
- ``/homecare/v1/revoke``             POST, TLS client certificate: revoke every certificate
                                      issued to that gateway; the CRL is rewritten and
                                      ``on_revoke`` runs (the rig restarts mosquitto with it)
- ``/homecare/v1/releases/<sha256>``  GET, TLS client certificate (not revoked): a release
                                      artifact ``homecare-provider release offer`` published in
                                      ``releases_dir`` under its SHA-256 (streamed; the router
                                      checks digest and size against the signed manifest)
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import re
import secrets
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.atomicfile import atomic_write
from provisioning.bundle import EnrolmentBundle, sign_bundle, tls_key_sha256
from provisioning.est import SIGNING_KEY_OID, signing_key_of
from rig.pki import RigPki

_BACKDATE = timedelta(minutes=5)
_RELEASE_PATH = re.compile(r"/homecare/v1/releases/([0-9a-f]{64})")
RELEASE_CHUNK_BYTES = 64 * 1024
MAX_RELEASE_FETCHES_KEPT = 1000  # the log of who fetched what (tests, the desk) stays bounded


def make_token() -> str:
    """A one-time enrolment token a person can type from a delivery note: no 0/O or 1/I/l,
    five groups of four (100 bits)."""
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return "-".join("".join(secrets.choice(alphabet) for _ in range(4)) for _ in range(5))


@dataclass
class _Issued:
    gateway_id: str
    serial: int
    revoked_at: datetime | None = None


@dataclass
class EstAuthority:
    """The test CA's book-keeping: tokens, issued certificates, revocations, bundles."""

    pki: RigPki
    crl_path: Path
    cert_valid: timedelta = timedelta(days=30)
    tokens: dict[str, str] = field(default_factory=dict)  # token -> gateway id (one use)
    signing_keys: dict[str, bytes] = field(default_factory=dict)  # gateway id -> SPKI DER
    bundles: dict[str, bytes] = field(default_factory=dict)  # gateway id -> fixed signed bytes
    # gateway id -> (episode bundle, signing key): signed at fetch, bound to the fetching key
    offers: dict[str, tuple[EnrolmentBundle, ed25519.Ed25519PrivateKey]] = field(
        default_factory=dict
    )
    generations: dict[str, int] = field(default_factory=dict)  # gateway id -> last issued
    issued: list[_Issued] = field(default_factory=list)
    on_revoke: Callable[[], None] | None = None
    # Release artifacts, each named by its SHA-256 (homecare-provider release offer puts them
    # there); None: no release is served.
    releases_dir: Path | None = None
    release_fetches: list[tuple[str, str]] = field(default_factory=list)  # (gateway, sha256)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        key = serialization.load_pem_private_key(self.pki.ca_key.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        self._ca_key = key
        self._ca_cert = x509.load_pem_x509_certificate(self.pki.ca_cert.read_bytes())
        self.write_crl()  # an empty CRL from the start: with CRL checking, none means "reject"

    def new_token(self, gateway_id: str) -> str:
        token = make_token()
        with self.lock:
            self.tokens[token] = gateway_id
        self.saved()
        return token

    def take_token(self, token: str, cn: str) -> str | None:
        """The gateway a one-time token was issued for, if it is for ``cn``; spends it."""
        with self.lock:
            gateway = self.tokens.get(token)
            if gateway is None or gateway != cn:
                return None
            del self.tokens[token]  # one time only
        self.saved()
        return gateway

    def bundle_for(self, gateway_id: str) -> bytes | None:
        with self.lock:
            return self.bundles.get(gateway_id)

    def saved(self) -> None:
        """Called after tokens, certificates or revocations change (the desk keeps them on disk)."""

    def issue(self, csr: x509.CertificateSigningRequest, gateway_id: str) -> x509.Certificate:
        now = datetime.now(UTC)
        signing_spki = signing_key_of(csr)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, gateway_id)]))
            .issuer_name(self._ca_cert.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + self.cert_valid)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._ca_key.public_key()),
                critical=False,
            )
        )
        if signing_spki is not None:
            ext = x509.UnrecognizedExtension(SIGNING_KEY_OID, signing_spki)
            builder = builder.add_extension(ext, critical=False)
        cert = builder.sign(self._ca_key, hashes.SHA256())
        with self.lock:
            self.issued.append(_Issued(gateway_id, cert.serial_number))
            if signing_spki is not None:
                self.signing_keys[gateway_id] = signing_spki
        self.saved()
        return cert

    def offer_bundle(
        self, gateway_id: str, bundle: EnrolmentBundle, key: ed25519.Ed25519PrivateKey
    ) -> None:
        """The logistics desk assigns the router to an episode (signed when it is fetched)."""
        with self.lock:
            self.offers[gateway_id] = (bundle, key)
            self.bundles.pop(gateway_id, None)

    def bound_bundle(self, gateway_id: str, cert: x509.Certificate) -> bytes | None:
        """The offered bundle, bound to the certificate's key and the next generation."""
        with self.lock:
            offer = self.offers.get(gateway_id)
            if offer is None:
                return self.bundles.get(gateway_id)
            generation = self.generations.get(gateway_id, 0) + 1
            self.generations[gateway_id] = generation
        bundle, key = offer
        public = cert.public_key()
        assert isinstance(public, ec.EllipticCurvePublicKey)  # the CA issues P-256 keys only
        bound = dataclasses.replace(
            bundle, tls_key_sha256=tls_key_sha256(public), generation=generation
        )
        return sign_bundle(bound, key)

    def release_file(self, sha256: str) -> Path | None:
        if self.releases_dir is None:
            return None
        path = self.releases_dir / sha256
        return path if path.is_file() and not path.is_symlink() else None

    def note_release_fetch(self, gateway_id: str, sha256: str) -> None:
        with self.lock:
            self.release_fetches.append((gateway_id, sha256))
            del self.release_fetches[:-MAX_RELEASE_FETCHES_KEPT]

    def is_revoked(self, serial: int) -> bool:
        with self.lock:
            return any(i.serial == serial and i.revoked_at for i in self.issued)

    def revoke_gateway(self, gateway_id: str) -> int:
        now = datetime.now(UTC)
        with self.lock:
            fresh = [i for i in self.issued if i.gateway_id == gateway_id and not i.revoked_at]
            for i in fresh:
                i.revoked_at = now
        if fresh:
            self.saved()
            self.write_crl()
            if self.on_revoke is not None:
                self.on_revoke()
        return len(fresh)

    def write_crl(self) -> None:
        now = datetime.now(UTC)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self._ca_cert.subject)
            .last_update(now - _BACKDATE)
            .next_update(now + timedelta(days=7))
        )
        with self.lock:
            revoked = [i for i in self.issued if i.revoked_at]
        for i in revoked:
            assert i.revoked_at is not None
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(i.serial)
                .revocation_date(i.revoked_at)
                .build()
            )
        crl = builder.sign(self._ca_key, hashes.SHA256())
        atomic_write(self.crl_path, crl.public_bytes(serialization.Encoding.PEM), 0o644)

    def certs_only(self, certs: list[x509.Certificate]) -> bytes:
        der = pkcs7.serialize_certificates(certs, serialization.Encoding.DER)
        return base64.encodebytes(der)


class _Handler(BaseHTTPRequestHandler):
    server: _EstHttpServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests carry tokens; the rig keeps quiet

    def _send(self, status: int, body: bytes = b"", ctype: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _peer(self) -> x509.Certificate | None:
        conn = self.connection
        der = conn.getpeercert(binary_form=True) if isinstance(conn, ssl.SSLSocket) else None
        return x509.load_der_x509_certificate(der) if der else None

    def _peer_gateway(self) -> tuple[str, x509.Certificate] | None:
        cert = self._peer()
        if cert is None or self.server.authority.is_revoked(cert.serial_number):
            return None
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return (str(cn[0].value), cert) if cn else None

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def do_GET(self) -> None:
        ca = self.server.authority
        if self.path == "/.well-known/est/cacerts":
            self._send(200, ca.certs_only([ca._ca_cert]), "application/pkcs7-mime")
        elif self.path == "/homecare/v1/bundle":
            peer = self._peer_gateway()
            if peer is None:
                self._send(401)
                return
            bundle = ca.bound_bundle(*peer)
            self._send(200, bundle, "application/json") if bundle else self._send(404)
        elif m := _RELEASE_PATH.fullmatch(self.path):
            self._release(m.group(1))
        else:
            self._send(404)

    def _release(self, sha256: str) -> None:
        """Only a router with a valid certificate of ours; streamed, never read whole."""
        peer = self._peer_gateway()
        if peer is None:
            self._send(401)
            return
        ca = self.server.authority
        ca.note_release_fetch(peer[0], sha256)
        path = ca.release_file(sha256)
        if path is None:
            self._send(404)
            return
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            try:
                while chunk := f.read(RELEASE_CHUNK_BYTES):
                    self.wfile.write(chunk)
            except OSError:  # the router hung up; it starts again from scratch
                self.close_connection = True

    def do_POST(self) -> None:
        body = self._body()
        if self.path == "/homecare/v1/revoke":
            self._revoke()
        elif self.path in ("/.well-known/est/simpleenroll", "/.well-known/est/simplereenroll"):
            self._enroll(body)
        else:
            self._send(404)

    def _revoke(self) -> None:
        cert = self._peer()
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME) if cert else []
        if not names:
            self._send(401)
            return
        # Idempotent: a second request (a resumed return) revokes nothing new and still says 200.
        self.server.authority.revoke_gateway(str(names[0].value))
        self._send(200, b"revoked")

    def _enroll(self, body: bytes) -> None:
        ca = self.server.authority
        try:
            csr = x509.load_der_x509_csr(base64.b64decode(b"".join(body.split()), validate=True))
        except (ValueError, binascii.Error):
            self._send(400, b"not a base64 PKCS#10 request")
            return
        if not csr.is_signature_valid:
            self._send(400, b"CSR signature invalid")
            return
        names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        cn = str(names[0].value) if names else ""
        if self.path.endswith("/simpleenroll"):
            gateway = self._token_gateway(cn)
            if gateway is None:
                self._send(401)
                return
        else:
            peer = self._peer_gateway()
            if peer is None or peer[0] != cn:  # RFC 7030 4.2.2: same subject as the current cert
                self._send(401)
                return
            gateway = peer[0]
        cert = ca.issue(csr, gateway)
        self._send(200, ca.certs_only([cert]), "application/pkcs7-mime; smime-type=certs-only")

    def _token_gateway(self, cn: str) -> str | None:
        auth = self.headers.get("Authorization", "")
        token = None
        if auth.startswith("Bearer "):
            token = auth[7:]
        elif auth.startswith("Basic "):
            try:
                user, _, token = base64.b64decode(auth[6:]).decode().partition(":")
            except (ValueError, binascii.Error):
                return None
            if user != cn:
                return None
        return self.server.authority.take_token(token or "", cn)


class _EstHttpServer(ThreadingHTTPServer):
    daemon_threads = True
    authority: EstAuthority


class EstService:
    """Run the EST service on ``host`` (``port`` 0: picked by the kernel) in a background thread."""

    def __init__(self, authority: EstAuthority, host: str = "127.0.0.1", port: int = 0) -> None:
        self.authority = authority
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        pki = authority.pki
        # The broker's certificate (rig CA, SANs localhost/127.0.0.1) serves as the EST server's.
        ctx.load_cert_chain(str(pki.broker_cert), str(pki.broker_key))
        ctx.load_verify_locations(str(pki.ca_cert))
        ctx.verify_mode = ssl.CERT_OPTIONAL  # simpleenroll comes without a client certificate
        self._httpd = _EstHttpServer((host, port), _Handler, bind_and_activate=True)
        self._httpd.authority = authority
        self._httpd.socket = ctx.wrap_socket(self._httpd.socket, server_side=True)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="est-service", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"https://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


if __name__ == "__main__":
    # Run as a program this module is the desk's EST service (provider/desk.py imports this
    # module, so the desk is looked up at run time: no import cycle).
    import importlib
    import sys

    desk = importlib.import_module("provider.desk")
    raise SystemExit(desk.main(["serve-est", *sys.argv[1:]]))
