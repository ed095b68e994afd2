"""Byte layout of sealed records and upload batches (pure codec, no crypto, no I/O).

Normative description: docs/wire-format.md. All integers are unsigned big-endian.

Sealed record::

    0   4  magic "HCR1"
    4   1  format version (1)
    5   1  kind      (RecordKind)
    6   1  lane      (0 = most urgent)
    7   1  flags     (bit 0: plaintext is zlib-compressed)
    8   2  HPKE KEM id  (RFC 9180 / IANA registry)
    10  2  HPKE KDF id
    12  2  HPKE AEAD id
    14  4  chain epoch
    18  8  sequence number (1, 2, 3 ... within an epoch)
    26  8  created at, milliseconds since the Unix epoch (gateway clock, UTC)
    34 32  previous record hash (SHA-256 of the whole previous record; zeros for sequence 1)
    66  1  gateway id length L (1..64)
    67  L  gateway id (ASCII)
    +0  4  ciphertext length N
    +4  N  HPKE single-shot output: enc || AEAD ciphertext
    +N 64  Ed25519 signature

The *header* is bytes 0 .. 67+L. It is the HPKE ``info`` (after a domain-separation prefix), so
the ciphertext cannot be moved under another header. The signature covers the prefix
``SIGNING_CONTEXT`` followed by every byte before the signature.

Upload batch (one MQTT message)::

    0  4  magic "HCB1"
    4  1  version (1)
    5  2  record count C (1..65535)
    then C times: 4-byte length, record bytes
"""

from __future__ import annotations

import enum
import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.errors import VerifyError

RECORD_MAGIC = b"HCR1"
BATCH_MAGIC = b"HCB1"
FORMAT_VERSION = 1
HPKE_INFO_CONTEXT = b"homecare-gateway/record/v1/hpke\x00"
SIGNING_CONTEXT = b"homecare-gateway/record/v1/sig\x00"
SIGNATURE_LEN = 64
HASH_LEN = 32
GENESIS_HASH = bytes(HASH_LEN)
MAX_GATEWAY_ID = 64
FLAG_ZLIB = 0x01
KNOWN_FLAGS = FLAG_ZLIB  # every other flag bit is reserved: a record with one set is refused
HEALTH_LANE = 3  # health records travel alone in this lane, on the health topic
MAX_LANE = 3  # lanes 0 alarm, 1 spot, 2 stream chunk, 3 health

_FIXED = struct.Struct(">4sBBBBHHHIQQ32sB")  # up to and including the gateway id length
_LEN = struct.Struct(">I")


class RecordKind(enum.IntEnum):
    """What the plaintext of a record is (docs/wire-format.md, "Plaintext")."""

    OBSERVATIONS = 1  # FHIR R4 transaction Bundle of PHD Observations
    HEALTH = 2  # gateway health report (JSON)
    GAP = 3  # readings the gateway could not accept (JSON)
    EVENT = 4  # lifecycle / alarm event (JSON)
    STAGED_CHUNK = 5  # a stream chunk recovered after an unclean stop (JSON, staged rows inside)


@dataclass(frozen=True, slots=True)
class RecordHeader:
    kind: RecordKind
    lane: int
    flags: int
    kem_id: int
    kdf_id: int
    aead_id: int
    epoch: int
    seq: int
    created_ms: int
    prev_hash: bytes
    gateway_id: str

    def __post_init__(self) -> None:
        gid = self.gateway_id.encode("ascii", errors="replace")
        if not (1 <= len(gid) <= MAX_GATEWAY_ID) or not self.gateway_id.isascii():
            raise ValueError("gateway id must be 1..64 ASCII characters")
        if len(self.prev_hash) != HASH_LEN:
            raise ValueError("prev_hash must be 32 bytes")
        if not (0 <= self.lane <= 255 and 0 <= self.flags <= 255):
            raise ValueError("lane and flags are single bytes")
        if self.seq < 1 or self.seq >= 2**64 or not (0 <= self.epoch < 2**32):
            raise ValueError("sequence numbers start at 1 and fit 64 bits; epoch fits 32 bits")
        if not (0 <= self.created_ms < 2**64):
            raise ValueError("created_ms must fit 64 bits")

    def encode(self) -> bytes:
        gid = self.gateway_id.encode("ascii")
        return (
            _FIXED.pack(
                RECORD_MAGIC,
                FORMAT_VERSION,
                int(self.kind),
                self.lane,
                self.flags,
                self.kem_id,
                self.kdf_id,
                self.aead_id,
                self.epoch,
                self.seq,
                self.created_ms,
                self.prev_hash,
                len(gid),
            )
            + gid
        )

    def hpke_info(self) -> bytes:
        return HPKE_INFO_CONTEXT + self.encode()


@dataclass(frozen=True, slots=True)
class RecordParts:
    """A record split into its parts, before any cryptographic check."""

    header: RecordHeader
    header_bytes: bytes
    ciphertext: bytes
    signature: bytes
    signed_bytes: bytes  # everything the signature covers, without the context prefix
    record_hash: bytes


def record_hash(record: bytes) -> bytes:
    """The chain hash of a record: SHA-256 over all its bytes, signature included."""
    return hashlib.sha256(record).digest()


def assemble(header: RecordHeader, ciphertext: bytes, signature: bytes) -> bytes:
    if len(signature) != SIGNATURE_LEN:
        raise ValueError("Ed25519 signatures are 64 bytes")
    return header.encode() + _LEN.pack(len(ciphertext)) + ciphertext + signature


def signed_part(header: RecordHeader, ciphertext: bytes) -> bytes:
    return header.encode() + _LEN.pack(len(ciphertext)) + ciphertext


def _malformed(problem: str) -> VerifyError:
    return VerifyError(f"malformed record: {problem}", reason="malformed")


def parse_record(record: bytes) -> RecordParts:
    """Split a record into header, ciphertext and signature; raise VerifyError if malformed."""
    if len(record) < _FIXED.size + 1 + _LEN.size + SIGNATURE_LEN:
        raise _malformed(f"{len(record)} bytes is shorter than any record")
    (magic, version, kind, lane, flags, kem, kdf, aead, epoch, seq, created, prev, gid_len) = (
        _FIXED.unpack_from(record, 0)
    )
    if magic != RECORD_MAGIC:
        raise _malformed("bad magic")
    if version != FORMAT_VERSION:
        raise VerifyError(f"unsupported record format version {version}", reason="version")
    try:
        record_kind = RecordKind(kind)
    except ValueError:
        raise VerifyError(f"unknown record kind {kind}", reason="unknown-kind") from None
    if lane > MAX_LANE:
        raise VerifyError(f"unknown lane {lane}", reason="unknown-lane")
    if (record_kind is RecordKind.HEALTH) != (lane == HEALTH_LANE):
        raise VerifyError(
            f"a record of kind {record_kind.name.lower()} cannot travel in lane {lane}",
            reason="kind-lane-mismatch",
        )
    if flags & ~KNOWN_FLAGS:
        raise VerifyError(f"reserved flag bits set ({flags:#04x})", reason="reserved-flags")
    if not (1 <= gid_len <= MAX_GATEWAY_ID):
        raise _malformed(f"gateway id length {gid_len}")
    hdr_end = _FIXED.size + gid_len
    if len(record) < hdr_end + _LEN.size + SIGNATURE_LEN:
        raise _malformed("truncated header")
    gid_bytes = record[_FIXED.size : hdr_end]
    if not gid_bytes.isascii() or not gid_bytes.decode("ascii").isprintable():
        raise _malformed("gateway id is not printable ASCII")
    (ct_len,) = _LEN.unpack_from(record, hdr_end)
    ct_start = hdr_end + _LEN.size
    if len(record) != ct_start + ct_len + SIGNATURE_LEN:
        raise _malformed("length field does not match the record size")
    try:
        header = RecordHeader(
            kind=record_kind,
            lane=lane,
            flags=flags,
            kem_id=kem,
            kdf_id=kdf,
            aead_id=aead,
            epoch=epoch,
            seq=seq,
            created_ms=created,
            prev_hash=prev,
            gateway_id=gid_bytes.decode("ascii"),
        )
    except ValueError as exc:
        raise _malformed(str(exc)) from None
    return RecordParts(
        header=header,
        header_bytes=record[:hdr_end],
        ciphertext=record[ct_start : ct_start + ct_len],
        signature=record[ct_start + ct_len :],
        signed_bytes=record[: ct_start + ct_len],
        record_hash=record_hash(record),
    )


def encode_batch(records: Sequence[bytes]) -> bytes:
    if not (1 <= len(records) <= 0xFFFF):
        raise ValueError("a batch holds 1..65535 records")
    out = [BATCH_MAGIC, struct.pack(">BH", FORMAT_VERSION, len(records))]
    for rec in records:
        out.append(_LEN.pack(len(rec)))
        out.append(rec)
    return b"".join(out)


def decode_batch(payload: bytes) -> list[bytes]:
    """Split an upload batch into its records; raise VerifyError if the framing is broken."""
    if len(payload) < 7 or payload[:4] != BATCH_MAGIC:
        raise VerifyError("malformed batch: bad magic or too short", reason="malformed-batch")
    version, count = struct.unpack_from(">BH", payload, 4)
    if version != FORMAT_VERSION:
        raise VerifyError(f"unsupported batch version {version}", reason="version")
    pos, records = 7, []
    for _ in range(count):
        if pos + 4 > len(payload):
            raise VerifyError("malformed batch: truncated length", reason="malformed-batch")
        (n,) = _LEN.unpack_from(payload, pos)
        pos += 4
        if pos + n > len(payload):
            raise VerifyError("malformed batch: truncated record", reason="malformed-batch")
        records.append(payload[pos : pos + n])
        pos += n
    if pos != len(payload) or not records:
        raise VerifyError("malformed batch: trailing bytes or no records", reason="malformed-batch")
    return records

