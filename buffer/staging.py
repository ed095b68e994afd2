"""The staging area: stream readings of the open chunk, durable within a second, encrypted.

One small append-only file per open chunk, in a folder beside the outbox
(``<outbox>.staging/``), written with ``fdatasync`` - not the outbox database: a commit every
second there would rewrite 4-KiB pages of the records table, its index and the chain row, plus
checkpoints (bench/flash.py measured 12.7 KB written per commit even for a separate SQLite file
with 1-KiB pages; an append is 5.2 KB, one page of the page cache, the floor for any fsync).

File layout (all integers big-endian)::

    header  magic "HCS1", version 1, chunk id (16), opened_ms (8), KEM id (2),
            wrapped-key length (2), wrapped key, CRC-32 of everything before it (4)
    frames  length L (4), row number (8), L bytes (the encrypted row), CRC-32 of the frame (4)

Rows are appended in whole commits and each commit is fdatasynced before its readings are
confirmed, so a power cut can only tear the frames of a commit that was never confirmed: reading
stops at the first frame that is short, fails its CRC or breaks the row numbering. Nothing here is
plaintext: rows are ciphertext under a chunk key that only exists wrapped to the provider
(gateway/seal/staged.py). A sealed chunk's file is simply unlinked (no rewrite, no secure delete:
the key is gone). Synchronous; runs on the database thread like the outbox.
"""

from __future__ import annotations

import contextlib
import os
import struct
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import StoreError
from gateway.seal.staged import CHUNK_ID_LEN, ChunkHeader

MAGIC = b"HCS1"
VERSION = 1
SUFFIX = ".stg"
MAX_ROW_BYTES = 1024 * 1024  # a frame claiming more is damage, not a row
MAX_FILES = 64  # more chunk files than this at start-up is not ours to read: refuse loudly
_HEAD = struct.Struct(">4sB16sQHH")
_FRAME = struct.Struct(">IQ")
_CRC = struct.Struct(">I")


def staging_path(outbox_path: Path) -> Path:
    return outbox_path.with_name(outbox_path.name + ".staging")


@dataclass(frozen=True, slots=True)
class StagedChunk:
    key: int  # the local handle of the chunk (what ``drop`` takes)
    header: ChunkHeader
    rows: tuple[bytes, ...]  # in row order, 0..n-1


class StagingCorruptError(StoreError):
    hint = "the damaged staging file is kept for analysis; its stream readings are reported lost"


def _error(action: str, exc: OSError) -> StoreError:
    return StoreError(f"staging {action} failed: {exc}", os_error=type(exc).__name__)


def encode_header(header: ChunkHeader) -> bytes:
    head = _HEAD.pack(
        MAGIC, VERSION, header.chunk_id, header.opened_ms, header.kem_id,
        len(header.wrapped_key),
    ) + header.wrapped_key
    return head + _CRC.pack(zlib.crc32(head))


def encode_frames(first_row: int, rows: Sequence[bytes]) -> bytes:
    out = []
    for i, data in enumerate(rows):
        frame = _FRAME.pack(len(data), first_row + i) + data
        out.append(frame + _CRC.pack(zlib.crc32(frame)))
    return b"".join(out)


def decode(blob: bytes) -> tuple[ChunkHeader, tuple[bytes, ...]] | None:
    """A chunk file's header and its whole rows; None when even the header is unreadable."""
    if len(blob) < _HEAD.size:
        return None
    magic, version, chunk_id, opened_ms, kem_id, key_len = _HEAD.unpack_from(blob)
    end = _HEAD.size + key_len
    if magic != MAGIC or version != VERSION or len(blob) < end + _CRC.size:
        return None
    if _CRC.unpack_from(blob, end)[0] != zlib.crc32(blob[:end]):
        return None
    header = ChunkHeader(bytes(chunk_id), opened_ms, kem_id, bytes(blob[_HEAD.size : end]))
    rows: list[bytes] = []
    pos = end + _CRC.size
    while pos + _FRAME.size <= len(blob):  # bounded: every pass moves pos forward
        length, row = _FRAME.unpack_from(blob, pos)
        stop = pos + _FRAME.size + length
        if length > MAX_ROW_BYTES or stop + _CRC.size > len(blob) or row != len(rows):
            break  # a torn (never confirmed) tail, or damage: what came before stands
        if _CRC.unpack_from(blob, stop)[0] != zlib.crc32(blob[pos:stop]):
            break
        rows.append(bytes(blob[pos + _FRAME.size : stop]))
        pos = stop + _CRC.size
    return header, tuple(rows)


def _write_all(fd: int, data: bytes, offset: int) -> None:
    written = os.pwrite(fd, data, offset)
    if written != len(data):
        raise OSError(f"short write: {written} of {len(data)} bytes")


class StagingStore:
    """Not thread-safe: used from the database thread only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if path.exists() and not path.is_dir():
            raise StagingCorruptError(f"staging folder {path} is not a folder")
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise _error(f"creation of {path}", exc) from exc
        self._open: dict[int, tuple[int, int, Path]] = {}  # key -> (fd, good size, file)
        self._next_key = 1
        self._found: dict[int, Path] = {}  # files left by an earlier run, by key

    def _new_key(self) -> int:
        key, self._next_key = self._next_key, self._next_key + 1
        return key

    def stage(
        self, header: ChunkHeader | None, key: int, first_row: int, rows: Sequence[bytes]
    ) -> int:
        """Append ``rows`` (numbered from ``first_row``) to chunk ``key`` - or, with ``header``,
        to a new chunk file - durably (fdatasync). Returns the chunk's key."""
        try:
            if header is not None:
                key = self._create(header)
            fd, good, file = self._open[key]
            data = encode_frames(first_row, rows)
            try:
                # At the last good size, not O_APPEND: a retry after a failed (partial) write
                # overwrites what that write left instead of leaving it between two commits.
                _write_all(fd, data, good)
                os.fdatasync(fd)
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, good)
                raise
            self._open[key] = (fd, good + len(data), file)
        except OSError as exc:
            raise _error("append", exc) from exc
        return key

    def _create(self, header: ChunkHeader) -> int:
        file = self.path / f"chunk-{header.chunk_id.hex()}{SUFFIX}"
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            head = encode_header(header)
            _write_all(fd, head, 0)
            os.fdatasync(fd)
            # The new name must survive a power cut too.
            dir_fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                file.unlink()
            raise
        key = self._new_key()
        self._open[key] = (fd, len(head), file)
        return key

    def drop(self, key: int) -> None:
        """The chunk is sealed in the outbox (durably): its file is no longer needed. Should the
        unlink be undone by a power cut, the chunk is sent again: a duplicate, never a loss."""
        entry = self._open.pop(key, None)
        file = entry[2] if entry else self._found.pop(key, None)
        if entry:
            with contextlib.suppress(OSError):
                os.close(entry[0])
        if file is None:
            return
        try:
            file.unlink(missing_ok=True)
        except OSError as exc:
            raise _error("delete", exc) from exc

    def chunks(self) -> list[StagedChunk]:
        """Every chunk file left by an earlier run (an unclean stop), oldest first. A file whose
        header is unreadable comes back with no rows and a zero chunk id."""
        try:
            files = sorted(self.path.glob(f"chunk-*{SUFFIX}"), key=lambda p: p.stat().st_mtime)
        except OSError as exc:
            raise _error("listing", exc) from exc
        if len(files) > MAX_FILES:
            raise StoreError(
                f"{len(files)} chunk files in {self.path}, more than {MAX_FILES}",
                hint="this folder holds only the gateway's own staging files; check what wrote "
                "there",
            )
        out = []
        for file in files:
            if any(file == f for _, _, f in self._open.values()):
                continue  # ours, open now
            try:
                decoded = decode(file.read_bytes())
                mtime_ms = int(file.stat().st_mtime * 1000)
            except OSError as exc:
                raise _error(f"read of {file.name}", exc) from exc
            key = self._new_key()
            if decoded is None:  # kept for analysis, out of the way of the next start
                stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
                with contextlib.suppress(OSError):
                    file.replace(file.with_name(f"{file.name}.corrupt-{stamp}"))
                header = ChunkHeader(bytes(CHUNK_ID_LEN), mtime_ms, 0, b"")
                out.append(StagedChunk(key, header, ()))
            else:
                self._found[key] = file
                out.append(StagedChunk(key, decoded[0], decoded[1]))
        return out

    def close(self) -> None:
        for fd, _, _ in self._open.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._open.clear()


def open_staging(path: Path) -> tuple[StagingStore, str | None]:
    """Open (or create) the staging folder; if ``path`` is something else (a file in its way),
    it is moved aside (kept for analysis) and replaced. Returns the store and why, if so."""
    try:
        return StagingStore(path), None
    except StagingCorruptError as exc:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        path.replace(path.with_name(f"{path.name}.corrupt-{stamp}"))
        return StagingStore(path), exc.message
