"""A throwaway PKI for the simulated rig, the demo and the tests.

NEVER USE THIS FOR PRODUCTION. Every private key is written unencrypted to disk, the CA key sits
next to the certificates it signs, and nothing here is audited, revocable or backed by hardware.
Real routers get their identity through enrolment against the provider's PKI.

Layout written by :func:`create_rig_pki` (directories 0700, private keys 0600)::

    ca.crt ca.key                         test CA (ECDSA P-256)
    broker.crt broker.key                 mosquitto server certificate (serverAuth)
    gateways/<id>/client.crt client.key   MQTT client certificate, CN = gateway id (clientAuth)
    gateways/<id>/identity.key .pub       Ed25519 record-signing key (PKCS8 / SPKI PEM)
    provider/client.crt client.key        CN = provider-verifier (clientAuth)
    provider/hpke.key hpke.pub            X25519 provider encryption key (PKCS8 / SPKI PEM)
    provider/hpke-mlkem768.key .pub       with pq=True: ML-KEM-768 (PKCS8 / SPKI PEM, see below)

ML-KEM-768 keys use the encodings of RFC 9935 (ML-KEM in X.509), which cryptography >= 47 reads
and writes: the private key is PKCS8 PEM holding only the 64-byte seed (the ``seed [0]`` choice of
``ML-KEM-PrivateKey``, OID 2.16.840.1.101.3.4.4.2), the public key is SubjectPublicKeyInfo PEM
with the 1184-byte encapsulation key.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mlkem, x25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.errors import ProvisioningError

PROVIDER_CN = "provider-verifier"
# The id becomes a directory name, a certificate CN and an MQTT topic level (the broker ACL
# substitutes it for %u), so path separators and the MQTT wildcards + and # must never get in.
_GATEWAY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Reissue a certificate that would expire within a day, so a reused demo directory keeps working.
_RENEW_MARGIN = timedelta(days=1)
# Back-date notBefore: the rig's network namespaces and the host may disagree on the clock a little.
_BACKDATE = timedelta(minutes=5)
_PRIVATE_MODE = 0o600
_PUBLIC_MODE = 0o644
_DIR_MODE = 0o700


@dataclass(frozen=True, slots=True)
class GatewayFiles:
    gateway_id: str
    client_cert: Path
    client_key: Path
    identity_key: Path
    identity_pub: Path


@dataclass(frozen=True, slots=True)
class RigPki:
    directory: Path
    ca_cert: Path
    ca_key: Path
    broker_cert: Path
    broker_key: Path
    provider_cert: Path
    provider_key: Path
    hpke_key: Path
    hpke_pub: Path
    gateway_ids: tuple[str, ...]
    hpke_mlkem768_key: Path | None = None
    hpke_mlkem768_pub: Path | None = None

    def gateway(self, gateway_id: str) -> GatewayFiles:
        if gateway_id not in self.gateway_ids:
            raise KeyError(f"gateway {gateway_id!r} is not part of this rig PKI")
        return _gateway_files(self.directory, gateway_id)


def _gateway_files(directory: Path, gateway_id: str) -> GatewayFiles:
    base = directory / "gateways" / gateway_id
    return GatewayFiles(
        gateway_id=gateway_id,
        client_cert=base / "client.crt",
        client_key=base / "client.key",
        identity_key=base / "identity.key",
        identity_pub=base / "identity.pub",
    )


def create_rig_pki(
    directory: Path,
    *,
    gateway_ids: Sequence[str],
    broker_hosts: Sequence[str] = ("localhost", "127.0.0.1"),
    valid_days: int = 30,
    pq: bool = False,
) -> RigPki:
    """Create (or reuse, completing what is missing) the rig PKI in ``directory``.

    Files that are present, parse, match their partner key and chain to the current CA are left
    untouched, so a second call is a no-op and the broker and gateways keep their identities.
    """
    ids = tuple(dict.fromkeys(gateway_ids))  # de-duplicate, keep order
    for gw in ids:
        if not _GATEWAY_ID.fullmatch(gw) or gw == PROVIDER_CN:
            raise ProvisioningError(f"unusable gateway id {gw!r} for the rig PKI", gateway_id=gw)
    if not broker_hosts or valid_days < 2:
        raise ProvisioningError("the rig PKI needs a broker host and at least 2 days of validity")
    for sub in (directory, directory / "gateways", directory / "provider"):
        sub.mkdir(parents=True, exist_ok=True)
        sub.chmod(_DIR_MODE)

    ca_key, ca_cert = _ensure_ca(directory, valid_days)
    issue = _Issuer(ca_key, ca_cert, valid_days)
    pki = RigPki(
        directory=directory,
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        broker_cert=directory / "broker.crt",
        broker_key=directory / "broker.key",
        provider_cert=directory / "provider" / "client.crt",
        provider_key=directory / "provider" / "client.key",
        hpke_key=directory / "provider" / "hpke.key",
        hpke_pub=directory / "provider" / "hpke.pub",
        gateway_ids=ids,
        hpke_mlkem768_key=directory / "provider" / "hpke-mlkem768.key" if pq else None,
        hpke_mlkem768_pub=directory / "provider" / "hpke-mlkem768.pub" if pq else None,
    )
    server, client = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH
    sans = [_san(host) for host in broker_hosts]
    issue.ensure((pki.broker_cert, pki.broker_key), "rig broker", server, sans)
    issue.ensure((pki.provider_cert, pki.provider_key), PROVIDER_CN, client)
    _ensure_pair(pki.hpke_key, pki.hpke_pub, x25519.X25519PrivateKey)
    if pki.hpke_mlkem768_key is not None and pki.hpke_mlkem768_pub is not None:
        try:
            _ensure_pair(pki.hpke_mlkem768_key, pki.hpke_mlkem768_pub, mlkem.MLKEM768PrivateKey)
        except UnsupportedAlgorithm as exc:
            raise ProvisioningError(
                "this cryptography/OpenSSL build has no ML-KEM-768", hint="use pq=False"
            ) from exc
    for gw in ids:
        files = _gateway_files(directory, gw)
        files.client_cert.parent.mkdir(exist_ok=True)
        files.client_cert.parent.chmod(_DIR_MODE)
        issue.ensure((files.client_cert, files.client_key), gw, client)
        _ensure_pair(files.identity_key, files.identity_pub, ed25519.Ed25519PrivateKey)
    return pki


def _san(host: str) -> x509.GeneralName:
    # TLS clients match an address against iPAddress SANs only (RFC 6125 section 6.2.1 / RFC 5280),
    # so an address written as a dNSName would not verify.
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write via a temporary file and rename, so a crash never leaves half a key behind."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    # O_EXCL with the final mode: a private key is never readable by others, not even briefly.
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as out:
        os.fchmod(out.fileno(), mode)  # the umask may have taken bits off a public file's mode
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(path)


def _private_pem(key: Any) -> bytes:
    encoding, fmt = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8
    return bytes(key.private_bytes(encoding, fmt, serialization.NoEncryption()))


def _public_pem(key: Any) -> bytes:
    encoding, fmt = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    return bytes(key.public_bytes(encoding, fmt))


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _try_load(path: Path, loader: Callable[[bytes], Any]) -> Any | None:
    """Anything unreadable counts as absent: this PKI is throwaway and simply regenerates it."""
    try:
        return loader(path.read_bytes())
    except (OSError, ValueError, TypeError, UnsupportedAlgorithm):
        return None


def _load_private_pem(data: bytes) -> Any:
    return serialization.load_pem_private_key(data, password=None)


def _same_key(a: Any, b: Any) -> bool:
    return _public_pem(a) == _public_pem(b)


def _ensure_pair(key_path: Path, pub_path: Path, kind: Any) -> None:
    """``kind`` is a private key class with a ``generate()`` (Ed25519, X25519, ML-KEM-768)."""
    key = _try_load(key_path, _load_private_pem)
    pub = _try_load(pub_path, serialization.load_pem_public_key)
    if isinstance(key, kind) and pub is not None and _same_key(pub, key.public_key()):
        return
    key = kind.generate()
    _write(key_path, _private_pem(key), _PRIVATE_MODE)
    _write(pub_path, _public_pem(key.public_key()), _PUBLIC_MODE)


def _fresh(cert: x509.Certificate) -> bool:
    return cert.not_valid_after_utc - _RENEW_MARGIN > datetime.now(UTC)


def _sign(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey],
    valid_days: int,
    extensions: Sequence[tuple[x509.ExtensionType, bool]],
) -> x509.Certificate:
    issuer_name, issuer_key = issuer
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + timedelta(days=valid_days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,  # ECDHE-ECDSA handshakes sign with the leaf key
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _ensure_ca(
    directory: Path, valid_days: int
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _try_load(directory / "ca.key", _load_private_pem)
    cert = _try_load(directory / "ca.crt", x509.load_pem_x509_certificate)
    if (
        isinstance(key, ec.EllipticCurvePrivateKey)
        and isinstance(cert, x509.Certificate)
        and _fresh(cert)
        and _same_key(cert.public_key(), key.public_key())
    ):
        return key, cert
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "homecare-gateway devpki"),
            x509.NameAttribute(NameOID.COMMON_NAME, "rig test CA - NOT FOR PRODUCTION"),
        ]
    )
    # pathLen 0: this CA only ever signs end-entity certificates.
    basic = x509.BasicConstraints(ca=True, path_length=0)
    extensions = [(basic, True), (_key_usage(ca=True), True)]
    cert = _sign(name, key, (name, key), valid_days, extensions)
    _write(directory / "ca.key", _private_pem(key), _PRIVATE_MODE)
    _write(directory / "ca.crt", _cert_pem(cert), _PUBLIC_MODE)
    return key, cert


@dataclass(frozen=True, slots=True)
class _Issuer:
    ca_key: ec.EllipticCurvePrivateKey
    ca_cert: x509.Certificate
    valid_days: int

    def _reusable(self, cert_path: Path, key_path: Path, cn: str, sans: set[Any]) -> bool:
        cert = _try_load(cert_path, x509.load_pem_x509_certificate)
        key = _try_load(key_path, _load_private_pem)
        if not (isinstance(cert, x509.Certificate) and isinstance(key, ec.EllipticCurvePrivateKey)):
            return False
        try:
            cert.verify_directly_issued_by(self.ca_cert)  # a regenerated CA invalidates all leaves
            have = set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
        except x509.ExtensionNotFound:
            have = set()
        except (ValueError, TypeError, InvalidSignature):
            return False
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return (
            bool(names)
            and names[0].value == cn
            and _fresh(cert)
            and _same_key(cert.public_key(), key.public_key())
            and sans <= have
        )

    def ensure(
        self,
        files: tuple[Path, Path],
        cn: str,
        usage: x509.ObjectIdentifier,
        sans: Sequence[x509.GeneralName] = (),
    ) -> None:
        cert_path, key_path = files
        if self._reusable(cert_path, key_path, cn, set(sans)):
            return
        key = ec.generate_private_key(ec.SECP256R1())
        extensions: list[tuple[x509.ExtensionType, bool]] = [
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (_key_usage(ca=False), True),
            (x509.ExtendedKeyUsage([usage]), False),
            # OpenSSL's strict verification (Python 3.13 default) wants an AKI on every leaf.
            (x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()), False),
        ]
        if sans:
            extensions.append((x509.SubjectAlternativeName(list(sans)), False))
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        cert = _sign(subject, key, (self.ca_cert.subject, self.ca_key), self.valid_days, extensions)
        _write(key_path, _private_pem(key), _PRIVATE_MODE)
        _write(cert_path, _cert_pem(cert), _PUBLIC_MODE)
