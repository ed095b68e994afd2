"""The on-disk formats of the staging files (buffer/staging.py): pure encoders and decoders.

These files never leave the router; what goes on the wire is the STAGED_CHUNK record built from
them (docs/wire-format.md 6.4). Both versions are read, so a router that upgrades with staged
chunks present sends them after the restart. All integers are big-endian; CRC is CRC-32 (zlib).

**Version 1** (``chunk-<id hex>.stg``, one append-only file per chunk, unlinked once sealed)::

    header  magic "HCS1", version 1, chunk id (16), opened_ms (8), KEM id (2),
            wrapped-key length (2), wrapped key, CRC of everything before it (4)
    frames  length L (4), row number (8), L bytes (the encrypted row), CRC of the frame (4)

**Version 2** (``slot-<n>.stg``, a preallocated file reused chunk after chunk; written in whole
``BLOCK``-byte blocks, so a commit never rewrites a block that holds an earlier, confirmed
commit, and - with the file's blocks already allocated - an fdatasync changes no metadata)::

    header  at offset 0, padded with zeros to a whole block:
            magic "HCS2", version 2, chunk id (16), opened_ms (8), KEM id (2),
            wrapped-key length (2), wrapped key, CRC of everything before it (4)
    units   one per staging commit, each at the next block boundary after the one before,
            zero-padded to a whole block:
            magic "HCU2", chunk id (16), first row number (8), row count (2), payload length (4),
            CRC of the header fields and the payload (4), payload = for each row: length L (4),
            L bytes (the encrypted row)

The file version also says how its rows were deflated (gateway/seal/staged.py, "rows version"):
a version-1 file holds version-1 rows, a version-2 file version-2 rows; recovery sends each in a
STAGED_CHUNK body of that version.

A slot whose first block begins with a zero magic (``FREE``) holds no chunk: its last chunk was
sealed and the slot released. Stale units of an earlier chunk that lie beyond the current one
carry that chunk's id and are never taken for the current chunk's (the "generation" is the
chunk id, 16 random bytes). Reading stops at the first unit that is short, has another chunk id,
fails its CRC or does not continue the row numbering: only the commit being written when the
power was cut can be torn, and none of its readings had been confirmed.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from enum import Enum

from gateway.seal.staged import ChunkHeader

MAX_ROW_BYTES = 1024 * 1024  # a row claiming more is damage, not a row
MAX_ROWS_PER_UNIT = 4096  # a commit stages at most one chunk (<= 256 readings): far above
BLOCK = 512  # the logical sector size of eMMC and SD cards: the unit of an O_DIRECT write

V1_MAGIC = b"HCS1"
V2_MAGIC = b"HCS2"
UNIT_MAGIC = b"HCU2"
_HEAD = struct.Struct(">4sB16sQHH")  # both versions: magic, version, id, opened, kem, key length
_FRAME_V1 = struct.Struct(">IQ")
_UNIT = struct.Struct(">4s16sQHI")  # magic, chunk id, first row, row count, payload length
_LEN = struct.Struct(">I")
_CRC = struct.Struct(">I")


class SlotState(Enum):
    FREE = "free"  # released: no chunk in it
    CHUNK = "chunk"  # a readable header (rows may be none)
    DAMAGED = "damaged"  # neither: kept for analysis, its readings reported lost


def padded(n: int) -> int:
    """``n`` rounded up to a whole block."""
    return -(-n // BLOCK) * BLOCK


def _encode_header(magic: bytes, version: int, header: ChunkHeader) -> bytes:
    head = _HEAD.pack(
        magic, version, header.chunk_id, header.opened_ms, header.kem_id, len(header.wrapped_key)
    ) + header.wrapped_key
    return head + _CRC.pack(zlib.crc32(head))


def _decode_header(blob: bytes, magic: bytes, version: int) -> tuple[ChunkHeader, int] | None:
    """The header and the offset just after it; None when it is not a valid one."""
    if len(blob) < _HEAD.size:
        return None
    got_magic, got_version, chunk_id, opened_ms, kem_id, key_len = _HEAD.unpack_from(blob)
    end = _HEAD.size + key_len
    if got_magic != magic or got_version != version or len(blob) < end + _CRC.size:
        return None
    if _CRC.unpack_from(blob, end)[0] != zlib.crc32(blob[:end]):
        return None
    header = ChunkHeader(bytes(chunk_id), opened_ms, kem_id, bytes(blob[_HEAD.size : end]))
    return header, end + _CRC.size


# -- version 1 (read at start-up; written only by earlier versions and by tests) -------------


def encode_v1_header(header: ChunkHeader) -> bytes:
    return _encode_header(V1_MAGIC, 1, header)


def encode_v1_frames(first_row: int, rows: Sequence[bytes]) -> bytes:
    out = []
    for i, data in enumerate(rows):
        frame = _FRAME_V1.pack(len(data), first_row + i) + data
        out.append(frame + _CRC.pack(zlib.crc32(frame)))
    return b"".join(out)


def decode_v1(blob: bytes) -> tuple[ChunkHeader, tuple[bytes, ...]] | None:
    """A version-1 chunk file's header and its whole rows; None when the header is unreadable."""
    decoded = _decode_header(blob, V1_MAGIC, 1)
    if decoded is None:
        return None
    header, pos = decoded
    rows: list[bytes] = []
    while pos + _FRAME_V1.size <= len(blob):  # bounded: every pass moves pos forward
        length, row = _FRAME_V1.unpack_from(blob, pos)
        stop = pos + _FRAME_V1.size + length
        if length > MAX_ROW_BYTES or stop + _CRC.size > len(blob) or row != len(rows):
            break  # a torn (never confirmed) tail, or damage: what came before stands
        if _CRC.unpack_from(blob, stop)[0] != zlib.crc32(blob[pos:stop]):
            break
        rows.append(bytes(blob[pos + _FRAME_V1.size : stop]))
        pos = stop + _CRC.size
    return header, tuple(rows)


# -- version 2 ------------------------------------------------------------------------------


def encode_v2_header(header: ChunkHeader) -> bytes:
    """The slot header, zero-padded to whole blocks."""
    head = _encode_header(V2_MAGIC, 2, header)
    return head + bytes(padded(len(head)) - len(head))


def encode_v2_unit(chunk_id: bytes, first_row: int, rows: Sequence[bytes]) -> bytes:
    """One staging commit, zero-padded to whole blocks."""
    payload = b"".join(_LEN.pack(len(r)) + r for r in rows)
    head = _UNIT.pack(UNIT_MAGIC, chunk_id, first_row, len(rows), len(payload))
    unit = head + _CRC.pack(zlib.crc32(head + payload)) + payload
    return unit + bytes(padded(len(unit)) - len(unit))


def _v2_unit(blob: bytes, pos: int, chunk_id: bytes, next_row: int) -> list[bytes] | None:
    """The rows of the unit at ``pos`` if it is a whole unit of this chunk continuing at
    ``next_row``; None otherwise (the end of the chunk's units)."""
    if pos + _UNIT.size + _CRC.size > len(blob):
        return None
    magic, unit_chunk, first, count, length = _UNIT.unpack_from(blob, pos)
    start = pos + _UNIT.size + _CRC.size
    if (
        magic != UNIT_MAGIC
        or unit_chunk != chunk_id
        or first != next_row
        or count > MAX_ROWS_PER_UNIT
        or start + length > len(blob)
    ):
        return None
    payload = blob[start : start + length]
    crc = _CRC.unpack_from(blob, pos + _UNIT.size)[0]
    if crc != zlib.crc32(blob[pos : pos + _UNIT.size] + payload):
        return None
    rows, at = [], 0
    for _ in range(count):  # the CRC held: a length that overruns is a bug, not a tear
        if at + _LEN.size > len(payload):
            return None
        (n,) = _LEN.unpack_from(payload, at)
        if n > MAX_ROW_BYTES or at + _LEN.size + n > len(payload):
            return None
        rows.append(bytes(payload[at + _LEN.size : at + _LEN.size + n]))
        at += _LEN.size + n
    return rows if at == len(payload) else None


def decode_v2(blob: bytes) -> tuple[SlotState, ChunkHeader | None, tuple[bytes, ...], int]:
    """A slot's state, its chunk's header and rows, and the offset where its next unit goes."""
    if len(blob) < len(V2_MAGIC) or blob[: len(V2_MAGIC)] == bytes(len(V2_MAGIC)):
        return SlotState.FREE, None, (), 0
    decoded = _decode_header(blob, V2_MAGIC, 2)
    if decoded is None:
        return SlotState.DAMAGED, None, (), 0
    header, end = decoded
    pos = padded(end)
    rows: list[bytes] = []
    while (unit := _v2_unit(blob, pos, header.chunk_id, len(rows))) is not None:
        rows.extend(unit)  # bounded: every unit moves pos forward by at least one block
        pos = padded(pos + _UNIT.size + _CRC.size + sum(_LEN.size + len(r) for r in unit))
    return SlotState.CHUNK, header, tuple(rows), pos


def decode(blob: bytes) -> tuple[ChunkHeader, tuple[bytes, ...]] | None:
    """A staging file of either version: its chunk's header and rows; None when it holds no
    readable chunk (a released slot, or damage)."""
    if blob[: len(V1_MAGIC)] == V1_MAGIC:
        return decode_v1(blob)
    state, header, rows, _ = decode_v2(blob)
    return (header, rows) if state is SlotState.CHUNK and header is not None else None
