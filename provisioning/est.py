"""EST client (RFC 7030) plus the provider's two companion calls (bundle, revocation).

- ``simpleenroll`` (4.2.1): POST a base64 PKCS#10 request, authenticated by the one-time
  enrolment token (HTTP Basic with the gateway id as user name, or a bearer token; 3.2.3).
- ``simplereenroll`` (4.2.2): the same, authenticated by the current certificate (TLS client
  auth); the subject must stay the same. We keep the key (renewal, not rekey).
- ``cacerts`` (4.1): used by install-check for the provider's clock (the HTTP ``Date``).
Responses are base64 DER PKCS#7 "certs-only" (4.2.3). 202 means "pending": we honour
``Retry-After`` (capped) a few times, then tell the person to try later.

The server is authenticated against the provider's EST CA only (``[provisioning] est_ca_file``),
never the system trust store: a TLS interceptor must not be able to hand out identities.
The token is secret: it is never logged and never part of an error message.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import re
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

from provisioning.errors import (
    BundleMissingError,
    ProviderIdentityError,
    ProviderUnreachableError,
    TokenRejectedError,
)
from provisioning.keystore import KeyStore

log = structlog.get_logger("provisioning.est")

WELL_KNOWN = "/.well-known/est"
BUNDLE_PATH = "/homecare/v1/bundle"
REVOKE_PATH = "/homecare/v1/revoke"
_PENDING_RETRIES = 3
_RETRY_AFTER_CAP_S = 10.0
AuthKind = Literal["basic", "bearer"]


@dataclass(frozen=True, slots=True)
class EstServer:
    url: str  # https://host:port[/prefix]
    ca_file: Path
    auth: AuthKind = "bearer"
    timeout_s: float = 20.0


@dataclass(frozen=True, slots=True)
class ClientCert:
    cert_file: Path
    key_file: Path


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    content_type: str
    date: datetime | None
    retry_after_s: float | None


# The record-signing public key travels in the CSR and the CA copies it into the certificate, so
# the provider learns which key signs this gateway's records from the certificate it issued.
# A private arc as a placeholder: the provider's own IANA enterprise number replaces it.
SIGNING_KEY_OID = x509.ObjectIdentifier("1.3.6.1.4.1.55555.6.1")


def build_csr(store: KeyStore, gateway_id: str) -> bytes:
    """DER PKCS#10 for the TLS key; CN = gateway id (the broker ACL keys on it)."""
    spki = (
        store.signing_key()
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, gateway_id)]))
        .add_extension(x509.UnrecognizedExtension(SIGNING_KEY_OID, spki), critical=False)
    )
    return store.sign_csr(builder).public_bytes(serialization.Encoding.DER)


def signing_key_of(cert_or_csr: x509.Certificate | x509.CertificateSigningRequest) -> bytes | None:
    """The gateway's record-signing key (SPKI DER) carried by a certificate or request."""
    try:
        ext = cert_or_csr.extensions.get_extension_for_oid(SIGNING_KEY_OID)
    except x509.ExtensionNotFound:
        return None
    value = ext.value
    return value.value if isinstance(value, x509.UnrecognizedExtension) else None


def http_date(text: str | None) -> datetime | None:
    """An HTTP ``Date`` (RFC 9110 5.6.7) as an aware UTC time; None if absent or malformed.

    The header is the provider's to send but the network's to mangle: a bad one means "the
    provider did not say its time", never an uncaught exception in the install check.
    """
    if not text or len(text) > 64:
        return None
    try:
        when = parsedate_to_datetime(text)
    except (ValueError, TypeError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": RFC 5322 says the zone is unknown
        return None
    return when.astimezone(UTC)


def parse_certs_only(body: bytes) -> list[x509.Certificate]:
    """RFC 7030 4.2.3 / 4.1.3: base64 DER PKCS#7 with certificates and nothing else."""
    try:
        der = base64.b64decode(b"".join(body.split()), validate=True)
        certs = pkcs7.load_der_pkcs7_certificates(der)
    except (ValueError, binascii.Error):
        raise ProviderUnreachableError(
            "the enrolment service sent an answer that is not a PKCS#7 certificate list"
        ) from None
    if not certs:
        raise ProviderUnreachableError("the enrolment service sent no certificate")
    return certs


class EstClient:
    def __init__(self, server: EstServer, gateway_id: str) -> None:
        self.server = server
        self.gateway_id = gateway_id
        parts = urlsplit(server.url)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError(f"EST URL must be https://host[:port][/path], got {server.url!r}")
        self._host = parts.hostname
        self._port = parts.port or 443
        self._prefix = parts.path.rstrip("/")

    def _context(self, client: ClientCert | None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.server.ca_file))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if client is not None:
            ctx.load_cert_chain(str(client.cert_file), str(client.key_file))
        return ctx

    def _request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        client: ClientCert | None = None,
    ) -> Answer:
        conn = http.client.HTTPSConnection(
            self._host, self._port, timeout=self.server.timeout_s, context=self._context(client)
        )
        try:
            conn.request(method, self._prefix + path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read(1024 * 1024)
        except ssl.SSLCertVerificationError as exc:
            raise ProviderIdentityError(
                f"the enrolment service at {self._host}:{self._port} is not the provider's "
                f"({exc.verify_message})"
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            raise ProviderUnreachableError(
                f"cannot reach the enrolment service at {self._host}:{self._port}: "
                f"{getattr(exc, 'strerror', None) or type(exc).__name__}"
            ) from None
        finally:
            conn.close()
        date = resp.getheader("Date")
        retry = resp.getheader("Retry-After")
        return Answer(
            status=resp.status,
            body=data,
            content_type=resp.getheader("Content-Type", ""),
            date=http_date(date),
            retry_after_s=float(retry) if retry and re.fullmatch(r"[0-9]{1,6}", retry) else None,
        )

    def _auth_header(self, token: str) -> dict[str, str]:
        if self.server.auth == "basic":
            pair = base64.b64encode(f"{self.gateway_id}:{token}".encode()).decode()
            return {"Authorization": f"Basic {pair}"}
        return {"Authorization": f"Bearer {token}"}

    def _enroll(
        self, op: str, csr_der: bytes, headers: dict[str, str], client: ClientCert | None
    ) -> list[x509.Certificate]:
        headers = {
            **headers,
            "Content-Type": "application/pkcs10",
            "Content-Transfer-Encoding": "base64",
        }
        body = base64.encodebytes(csr_der)
        for _ in range(_PENDING_RETRIES + 1):
            answer = self._request("POST", f"{WELL_KNOWN}/{op}", body, headers, client)
            if answer.status == 200:
                certs = parse_certs_only(answer.body)
                log.info("est.issued", op=op, serial=hex(certs[0].serial_number))
                return certs
            if answer.status == 202:  # RFC 7030 4.2.3: pending manual approval
                time.sleep(min(answer.retry_after_s or 1.0, _RETRY_AFTER_CAP_S))
                continue
            if answer.status in (401, 403):
                log.warning("est.refused", op=op, status=answer.status)
                raise TokenRejectedError(
                    "the provider refused the enrolment token"
                    if client is None
                    else "the provider refused this router's certificate",
                    status=answer.status,
                )
            raise ProviderUnreachableError(
                f"the enrolment service answered {answer.status} to {op}", status=answer.status
            )
        raise ProviderUnreachableError(
            "the enrolment is still waiting for approval at the provider",
            hint="wait a few minutes and run the same command again",
        )

    def simpleenroll(self, csr_der: bytes, token: str) -> list[x509.Certificate]:
        return self._enroll("simpleenroll", csr_der, self._auth_header(token), None)

    def simplereenroll(self, csr_der: bytes, current: ClientCert) -> list[x509.Certificate]:
        return self._enroll("simplereenroll", csr_der, {}, current)

    def provider_time(self) -> datetime | None:
        """The provider's clock (HTTP Date of the cacerts answer), for the install check."""
        return self._request("GET", f"{WELL_KNOWN}/cacerts").date

    def fetch_bundle(self, client: ClientCert) -> bytes:
        answer = self._request("GET", BUNDLE_PATH, client=client)
        if answer.status == 404:
            raise BundleMissingError("the provider has no episode bundle for this router yet")
        if answer.status != 200:
            raise ProviderUnreachableError(
                f"the provider answered {answer.status} when asked for the bundle"
            )
        return answer.body

    def request_revocation(self, client: ClientCert, reason: str) -> None:
        answer = self._request(
            "POST",
            REVOKE_PATH,
            body=reason.encode(),
            headers={"Content-Type": "text/plain"},
            client=client,
        )
        if answer.status != 200:
            raise ProviderUnreachableError(
                f"the provider answered {answer.status} to the revocation request"
            )
