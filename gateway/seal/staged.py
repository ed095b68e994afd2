"""Staged stream rows: durable within a second, readable only by the provider.

A stream chunk (lane STREAM, ``outbox.stream_chunk_s``) stays open for up to 30 s before it is
sealed as one record. So that an unclean stop loses nothing of it, every commit round also stages
its stream readings on disk - encrypted, because the buffer holds nothing the router can read
back (DESIGN invariant 3), and under a key the router forgets:

* when a chunk opens, a random 256-bit chunk key K is drawn and kept in memory only; K is stored
  *wrapped* to the provider (HPKE single-shot, the suite and key the records use, ``info`` =
  ``STAGED_KEY_CONTEXT`` + chunk id + gateway id), beside the chunk's durable mark;
* each staged row is one reading as a one-Observation FHIR transaction Bundle in canonical JSON,
  deflated (zlib; from rows version 2 on, row 1, 2, ... with row 0's Bundle as the preset
  dictionary: consecutive readings of one stream share almost every byte, so a row shrinks from
  ~1.2 KB to ~100 bytes - what the staging file writes every second) and encrypted with
  AES-256-GCM under K: nonce = 4 zero bytes + the row number
  (64-bit big-endian, 0, 1, 2, ... within the chunk, so never reused under one K), associated data
  = ``STAGED_ROW_CONTEXT`` + chunk id + row number.

After a crash the gateway cannot open its own staged rows (K is gone, only the provider can
unwrap it); it sends them as they are in a STAGED_CHUNK record (docs/wire-format.md section 6.4).
Pure functions and a small class, no I/O.
"""

from __future__ import annotations

import base64
import os
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.errors import VerifyError
from gateway.seal.sealing import ProviderPrivateKey, RecordSealer, SuiteName, hpke_suite

STAGED_KEY_CONTEXT = b"homecare-gateway/staged/v1/key\x00"
STAGED_ROW_CONTEXT = b"homecare-gateway/staged/v1/row\x00"
CHUNK_ID_LEN = 16
KEY_LEN = 32
MAX_ROW_PLAINTEXT_BYTES = 1024 * 1024  # a decompression bomb guard on the provider side
ROWS_VERSION = 2  # how rows are deflated: 1 each alone; 2 rows >= 1 with row 0 as dictionary
MAX_STAGED_ROWS = 4096  # far above a chunk's 256 readings: a bound for the provider's loop
_ROW_NO = struct.Struct(">Q")


def key_info(chunk_id: bytes, gateway_id: str) -> bytes:
    return STAGED_KEY_CONTEXT + chunk_id + gateway_id.encode("ascii")


def row_nonce(row: int) -> bytes:
    return bytes(4) + _ROW_NO.pack(row)


def row_aad(chunk_id: bytes, row: int) -> bytes:
    return STAGED_ROW_CONTEXT + chunk_id + _ROW_NO.pack(row)


@dataclass(frozen=True, slots=True)
class ChunkHeader:
    """What is stored when a chunk opens: its id, since when, and K wrapped to the provider."""

    chunk_id: bytes
    opened_ms: int
    kem_id: int
    wrapped_key: bytes


class ChunkCipher:
    """The open chunk's key K (memory only) and its row counter."""

    __slots__ = ("_aead", "_dictionary", "header", "next_row")

    def __init__(self, header: ChunkHeader, key: bytes) -> None:
        self.header = header
        self._aead = AESGCM(key)
        self.next_row = 0
        self._dictionary: bytes | None = None  # row 0's plaintext (rows version 2)

    @classmethod
    def open(cls, sealer: RecordSealer, opened_ms: int) -> ChunkCipher:
        chunk_id, key = os.urandom(CHUNK_ID_LEN), os.urandom(KEY_LEN)
        wrapped = sealer.wrap_key(key, key_info(chunk_id, sealer.gateway_id))
        return cls(ChunkHeader(chunk_id, opened_ms, sealer.kem_id, wrapped), key)

    def encrypt(self, row: int, plaintext: bytes) -> bytes:
        """Row ``row`` of this chunk. The caller advances ``next_row`` once the rows are
        durable; encrypting the same plaintext again at the same row (a retried commit) gives the
        same bytes, so a retry never reuses a nonce for different data."""
        cid = self.header.chunk_id
        return self._aead.encrypt(row_nonce(row), self._deflate(row, plaintext), row_aad(cid, row))

    def _deflate(self, row: int, plaintext: bytes) -> bytes:
        """Rows version 2: row 0 alone, every later row with row 0 as the preset dictionary."""
        if row == 0:
            self._dictionary = plaintext
            return zlib.compress(plaintext, 6)
        if self._dictionary is None:
            raise ValueError("row 0 of a staged chunk must be encrypted before any other row")
        deflater = zlib.compressobj(6, zdict=self._dictionary)
        return deflater.compress(plaintext) + deflater.flush()


def recovered_body(
    header: ChunkHeader,
    rows: Sequence[bytes],
    lane: int,
    detected: datetime,
    rows_version: int = ROWS_VERSION,
) -> dict[str, Any]:
    """The plaintext (JSON) of a STAGED_CHUNK record: the wrapped key and the rows as stored.
    ``rows_version``: how they were deflated (1: by a gateway of the previous version)."""
    return {
        "type": "staged-chunk",
        "version": rows_version,
        "lane": lane,
        "chunk": header.chunk_id.hex(),
        "opened": datetime.fromtimestamp(header.opened_ms / 1000, UTC).isoformat(),
        "detected": detected.isoformat(),
        "kem": header.kem_id,
        "key": base64.b64encode(header.wrapped_key).decode("ascii"),
        "rows": [base64.b64encode(r).decode("ascii") for r in rows],
    }


def _fail(problem: str, seq: int | None) -> VerifyError:
    return VerifyError(f"staged chunk of record {seq}: {problem}", reason="staged-chunk", seq=seq)


def _b64(node: object, what: str, seq: int | None) -> bytes:
    if not isinstance(node, str):
        raise _fail(f"{what} is not a base64 string", seq)
    try:
        return base64.b64decode(node, validate=True)
    except ValueError:
        raise _fail(f"{what} is not valid base64", seq) from None


def open_rows(
    body: Mapping[str, Any],
    provider_key: ProviderPrivateKey,
    suite: SuiteName,
    gateway_id: str,
    seq: int | None = None,
) -> list[bytes]:
    """Provider side: unwrap K, then decrypt and inflate every row in order (AEAD checked).

    Any problem - the key does not unwrap, a row is altered, missing, reordered or moved from
    another chunk, a row does not inflate - raises ``VerifyError`` with reason ``staged-chunk``.
    """
    version = body.get("version")
    if body.get("type") != "staged-chunk" or type(version) is not int or version not in (1, 2):
        raise _fail("not a version-1 or version-2 staged-chunk body", seq)
    chunk_hex = body.get("chunk")
    try:
        chunk_id = bytes.fromhex(chunk_hex) if isinstance(chunk_hex, str) else b""
    except ValueError:
        chunk_id = b""
    if len(chunk_id) != CHUNK_ID_LEN:
        raise _fail("chunk id is not 16 bytes of hex", seq)
    rows = body.get("rows")
    if not isinstance(rows, list) or not 1 <= len(rows) <= MAX_STAGED_ROWS:
        raise _fail(f"rows must be a list of 1..{MAX_STAGED_ROWS}", seq)
    wrapped = _b64(body.get("key"), "key", seq)
    try:
        key = hpke_suite(suite).decrypt(wrapped, provider_key, info=key_info(chunk_id, gateway_id))
    except (InvalidTag, ValueError):
        raise _fail("the chunk key does not unwrap with the provider key", seq) from None
    if len(key) != KEY_LEN:
        raise _fail("the chunk key is not 32 bytes", seq)
    aead = AESGCM(key)
    out: list[bytes] = []
    for n, node in enumerate(rows):
        ct = _b64(node, f"row {n}", seq)
        try:
            packed = aead.decrypt(row_nonce(n), ct, row_aad(chunk_id, n))
        except InvalidTag:
            raise _fail(f"row {n} does not decrypt (altered, missing or reordered)", seq) from None
        try:
            # Version 2: rows after the first were deflated with row 0 as preset dictionary.
            inflater = (
                zlib.decompressobj(zdict=out[0]) if version == 2 and n else zlib.decompressobj()
            )
            plain = inflater.decompress(packed, MAX_ROW_PLAINTEXT_BYTES)
        except zlib.error:
            raise _fail(f"row {n} does not inflate", seq) from None
        if inflater.unconsumed_tail or not inflater.eof or inflater.unused_data:
            raise _fail(f"row {n} is too large, truncated or has data after it", seq)
        out.append(plain)
    return out
