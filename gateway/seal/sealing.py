"""Sealing: sign and encrypt one record to the provider, and open it again on the provider side.

Encrypt-then-sign: the plaintext is (optionally) compressed, encrypted with HPKE base mode
(RFC 9180, single-shot, ``info`` = context prefix + record header) to the provider's public key,
and the header plus ciphertext are signed with the gateway's Ed25519 identity key. Anyone holding
the gateway's public key can check a record's integrity and the hash chain without being able to
read it; only the provider's private key opens it. The router keeps nothing it can decrypt.
"""

from __future__ import annotations

import enum
import zlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import ed25519, mlkem, x25519

from gateway.errors import SealError, VerifyError
from gateway.seal import wire

KDF_HKDF_SHA256 = 0x0001  # RFC 9180 section 7.2
AEAD_AES_256_GCM = 0x0002  # RFC 9180 section 7.3
# Plaintexts shorter than this are stored as they are: deflate would only add bytes.
COMPRESS_MIN_BYTES = 64
MAX_PLAINTEXT_BYTES = 16 * 1024 * 1024  # a decompression bomb guard on the provider side


class SuiteName(enum.StrEnum):
    """The HPKE suites a deployment can choose in its configuration (``provider.suite``)."""

    X25519 = "x25519"  # DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM
    MLKEM768_X25519 = "mlkem768-x25519"  # post-quantum hybrid KEM, same KDF and AEAD


# KEM ids as registered for HPKE: 0x0020 in RFC 9180; 0x647A for the ML-KEM-768 + X25519 hybrid
# (draft-ietf-hpke-pq, the construction pyca/cryptography implements as KEM.MLKEM768_X25519).
KEM_IDS = {SuiteName.X25519: 0x0020, SuiteName.MLKEM768_X25519: 0x647A}
_KEMS = {SuiteName.X25519: hpke.KEM.X25519, SuiteName.MLKEM768_X25519: hpke.KEM.MLKEM768_X25519}

ProviderPublicKey = x25519.X25519PublicKey | hpke.MLKEM768X25519PublicKey
ProviderPrivateKey = x25519.X25519PrivateKey | hpke.MLKEM768X25519PrivateKey


def suite_for_kem(kem_id: int) -> SuiteName | None:
    for name, kid in KEM_IDS.items():
        if kid == kem_id:
            return name
    return None


def hpke_suite(name: SuiteName) -> hpke.Suite:
    return hpke.Suite(_KEMS[name], hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


def provider_public_key(
    x25519_key: x25519.X25519PublicKey, mlkem_key: mlkem.MLKEM768PublicKey | None = None
) -> ProviderPublicKey:
    """The recipient key: X25519 alone, or the ML-KEM-768 + X25519 hybrid when ML-KEM is set."""
    if mlkem_key is None:
        return x25519_key
    return hpke.MLKEM768X25519PublicKey(mlkem_key, x25519_key)


def provider_private_key(
    x25519_key: x25519.X25519PrivateKey, mlkem_key: mlkem.MLKEM768PrivateKey | None = None
) -> ProviderPrivateKey:
    if mlkem_key is None:
        return x25519_key
    return hpke.MLKEM768X25519PrivateKey(mlkem_key, x25519_key)


def _suite_name_of_public(key: ProviderPublicKey) -> SuiteName:
    if isinstance(key, x25519.X25519PublicKey):
        return SuiteName.X25519
    return SuiteName.MLKEM768_X25519


class RecordSealer:
    """Seals plaintexts into records for one gateway identity and one provider key.

    Stateless apart from its keys: the caller (the outbox writer) owns the chain head and passes
    the sequence number and previous hash, so a failed commit can simply be retried.
    """

    def __init__(
        self,
        gateway_id: str,
        signing_key: ed25519.Ed25519PrivateKey,
        provider_key: ProviderPublicKey,
    ) -> None:
        self.gateway_id = gateway_id
        self._signing_key = signing_key
        self._provider_key = provider_key
        self.suite_name = _suite_name_of_public(provider_key)
        self._suite = hpke_suite(self.suite_name)

    @property
    def kem_id(self) -> int:
        return KEM_IDS[self.suite_name]

    def wrap_key(self, key: bytes, info: bytes) -> bytes:
        """``key`` encrypted to the provider (HPKE single-shot, this sealer's suite): the
        router can store it and never read it back (gateway/seal/staged.py)."""
        return self._suite.encrypt(key, self._provider_key, info=info)

    def seal(
        self,
        plaintext: bytes,
        *,
        kind: wire.RecordKind,
        lane: int,
        epoch: int,
        seq: int,
        prev_hash: bytes,
        created_ms: int,
    ) -> bytes:
        flags = 0
        body = plaintext
        if len(plaintext) >= COMPRESS_MIN_BYTES:
            packed = zlib.compress(plaintext, 6)
            if len(packed) < len(plaintext):
                body, flags = packed, wire.FLAG_ZLIB
        try:
            header = wire.RecordHeader(
                kind=kind,
                lane=lane,
                flags=flags,
                kem_id=KEM_IDS[self.suite_name],
                kdf_id=KDF_HKDF_SHA256,
                aead_id=AEAD_AES_256_GCM,
                epoch=epoch,
                seq=seq,
                created_ms=created_ms,
                prev_hash=prev_hash,
                gateway_id=self.gateway_id,
            )
        except ValueError as exc:
            raise SealError(f"cannot build record header: {exc}") from exc
        ciphertext = self._suite.encrypt(body, self._provider_key, info=header.hpke_info())
        signature = self._signing_key.sign(
            wire.SIGNING_CONTEXT + wire.signed_part(header, ciphertext)
        )
        return wire.assemble(header, ciphertext, signature)


@dataclass(frozen=True, slots=True)
class OpenedRecord:
    header: wire.RecordHeader
    plaintext: bytes
    record_hash: bytes
    size: int


def verify_signature(parts: wire.RecordParts, gateway_key: ed25519.Ed25519PublicKey) -> None:
    try:
        gateway_key.verify(parts.signature, wire.SIGNING_CONTEXT + parts.signed_bytes)
    except InvalidSignature:
        raise VerifyError(
            f"signature does not verify for gateway {parts.header.gateway_id} "
            f"seq {parts.header.seq}",
            reason="bad-signature",
            gateway_id=parts.header.gateway_id,
            seq=parts.header.seq,
        ) from None


def open_record(
    record: bytes,
    provider_key: ProviderPrivateKey,
    gateway_key: ed25519.Ed25519PublicKey,
) -> OpenedRecord:
    """Verify and decrypt one record. Any altered byte raises ``VerifyError``."""
    parts = wire.parse_record(record)
    hdr = parts.header
    verify_signature(parts, gateway_key)
    suite_name = suite_for_kem(hdr.kem_id)
    expected = (
        SuiteName.X25519
        if isinstance(provider_key, x25519.X25519PrivateKey)
        else SuiteName.MLKEM768_X25519
    )
    if (
        suite_name is not expected
        or hdr.kdf_id != KDF_HKDF_SHA256
        or hdr.aead_id != AEAD_AES_256_GCM
    ):
        raise VerifyError(
            f"record uses HPKE suite {hdr.kem_id:#06x}/{hdr.kdf_id:#06x}/{hdr.aead_id:#06x}, "
            f"this receiver is set up for {expected}",
            reason="suite-mismatch",
            seq=hdr.seq,
        )
    try:
        body = hpke_suite(expected).decrypt(parts.ciphertext, provider_key, info=hdr.hpke_info())
    except (InvalidTag, ValueError):
        raise VerifyError(
            f"record {hdr.seq} does not decrypt with the provider key",
            reason="decrypt-failed",
            seq=hdr.seq,
        ) from None
    if hdr.flags & wire.FLAG_ZLIB:
        body = _inflate(body, hdr.seq)
    elif len(body) > MAX_PLAINTEXT_BYTES:
        raise VerifyError(
            f"record {hdr.seq}: plaintext over {MAX_PLAINTEXT_BYTES} bytes",
            reason="plaintext-too-large",
            seq=hdr.seq,
        )
    return OpenedRecord(header=hdr, plaintext=body, record_hash=parts.record_hash, size=len(record))


def _inflate(body: bytes, seq: int) -> bytes:
    """One complete zlib stream (RFC 1950), nothing after it, at most MAX_PLAINTEXT_BYTES out."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(body, MAX_PLAINTEXT_BYTES)
    except zlib.error:
        raise VerifyError(
            f"record {seq}: compressed plaintext is corrupt", reason="bad-compression", seq=seq
        ) from None
    if inflater.unconsumed_tail:
        raise VerifyError(
            f"record {seq}: plaintext over {MAX_PLAINTEXT_BYTES} bytes",
            reason="plaintext-too-large",
            seq=seq,
        )
    if not inflater.eof:
        raise VerifyError(
            f"record {seq}: compressed plaintext is truncated", reason="bad-compression", seq=seq
        )
    if inflater.unused_data:
        raise VerifyError(
            f"record {seq}: {len(inflater.unused_data)} bytes after the compressed plaintext",
            reason="bad-compression",
            seq=seq,
        )
    return out
