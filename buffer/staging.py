"""The staging area: stream readings of the open chunk, durable within a second, encrypted.

Small files in a folder beside the outbox (``<outbox>.staging/``), not the outbox database: a
commit every second there would rewrite 4-KiB pages of the records table, its index and the chain
row, plus checkpoints (bench/flash.py measured 12.7 KB written per commit even for a separate
SQLite file with 1-KiB pages).

Flash wear is the budget (issue 17): the staging commit runs every second, all day. So each chunk
is staged in a **slot**, a file preallocated once (``SLOT_BYTES`` of real zeros, not a sparse or
fallocated range: writing into those changes extents) and reused chunk after chunk; a commit
writes its rows as whole 512-byte blocks (``O_DIRECT`` where the filesystem allows it, so no
4-KiB page-cache page is written back for a few hundred bytes) at the next free block, then
``fdatasync``. Inside the preallocated size the file's size and extents never change, so the
fdatasync has no metadata to commit. A sealed chunk's slot is released by zeroing its first block
(no fsync: should a power cut undo it, the chunk is sent again - a duplicate, never a loss) and
the next chunk reuses it. The formats (and the previous one, still read at start-up) are in
buffer/stagingfmt.py.

Nothing here is plaintext: rows are ciphertext under a chunk key that only exists wrapped to the
provider (gateway/seal/staged.py). A released slot keeps its last chunk's ciphertext until the
next chunk overwrites it, as an unlinked file's blocks did; equipment return deletes the folder.
Synchronous; runs on the database thread like the outbox.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from buffer.stagingfmt import (
    BLOCK,
    V1_MAGIC,
    SlotState,
    decode,
    decode_v1,
    decode_v2,
    encode_v2_header,
    encode_v2_unit,
)
from gateway.errors import StoreError
from gateway.seal.staged import CHUNK_ID_LEN, ROWS_VERSION, ChunkHeader

SUFFIX = ".stg"
V1_PREFIX = "chunk-"  # one file per chunk (format version 1, earlier gateway versions)
SLOT_PREFIX = "slot-"
SLOT_BYTES = 512 * 1024  # preallocated per slot: a 256-reading chunk of ~1.3-KB rows, one
# reading a commit (256 units of 3 blocks), fits; a bigger chunk grows the file (and costs
# metadata commits) until it is released
MAX_FILES = 64  # more staging files than this at start-up is not ours to read: refuse loudly
MAX_SLOTS = 8  # slots in use at once: one open chunk, one whose release failed, some margin


# How a filesystem or device says "no direct I/O here" (or "not with 512-byte blocks").
_NO_DIRECT_IO = frozenset({errno.EINVAL, errno.EOPNOTSUPP})


def staging_path(outbox_path: Path) -> Path:
    return outbox_path.with_name(outbox_path.name + ".staging")


@dataclass(frozen=True, slots=True)
class StagedChunk:
    key: int  # the local handle of the chunk (what ``drop`` takes)
    header: ChunkHeader
    rows: tuple[bytes, ...]  # in row order, 0..n-1
    rows_version: int = ROWS_VERSION  # how the rows were deflated (1: a version-1 file)


class StagingCorruptError(StoreError):
    hint = "the damaged staging file is kept for analysis; its stream readings are reported lost"


def _error(action: str, exc: OSError) -> StoreError:
    return StoreError(f"staging {action} failed: {exc}", os_error=type(exc).__name__)


class _Slot:
    """One preallocated slot file and where its current chunk's next unit goes."""

    __slots__ = ("busy", "chunk_id", "end", "fd", "file", "size")

    def __init__(self, file: Path, size: int) -> None:
        self.file = file
        self.size = size
        self.fd: int | None = None
        self.chunk_id = b""
        self.end = 0  # offset of the next unit (a block boundary)
        self.busy = True  # holds a chunk not yet released (or not looked at yet)


class _BlockWriter:
    """Writes whole blocks at block offsets: with ``O_DIRECT`` while the filesystem takes it,
    through the page cache otherwise (tmpfs, or a device whose sectors are bigger than BLOCK)."""

    def __init__(self) -> None:
        self.direct = hasattr(os, "O_DIRECT")

    def open(self, file: Path) -> int:
        flags = os.O_WRONLY | os.O_CLOEXEC
        if self.direct:
            try:
                return os.open(file, flags | os.O_DIRECT)
            except OSError as exc:
                if exc.errno not in _NO_DIRECT_IO:
                    raise
                self.direct = False  # the filesystem has no direct I/O
        return os.open(file, flags)

    def write(self, slot: _Slot, data: bytes, offset: int) -> None:
        assert slot.fd is not None
        assert len(data) % BLOCK == 0
        assert offset % BLOCK == 0
        if self.direct:
            # Direct I/O needs an aligned buffer: anonymous mmap memory is page-aligned.
            buf = mmap.mmap(-1, len(data))
            try:
                buf.write(data)
                written = os.pwrite(slot.fd, buf, offset)
            except OSError as exc:
                if exc.errno not in _NO_DIRECT_IO:
                    raise
                # Sectors bigger than BLOCK (a 4Kn device): the page cache from now on.
                self.direct = False
                os.close(slot.fd)
                slot.fd = None
                slot.fd = self.open(slot.file)
                written = os.pwrite(slot.fd, data, offset)
            finally:
                buf.close()
        else:
            written = os.pwrite(slot.fd, data, offset)
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
            # Slots already there hold what an earlier run left until ``chunks`` looked at them.
            self._slots = {
                f: _Slot(f, f.stat().st_size) for f in sorted(path.glob(f"{SLOT_PREFIX}*{SUFFIX}"))
            }
        except OSError as exc:
            raise _error(f"creation of {path}", exc) from exc
        self._writer = _BlockWriter()
        self._open: dict[int, _Slot] = {}  # key -> the slot of a chunk staged in this run
        self._next_key = 1
        self._found: dict[int, Path] = {}  # chunks left by an earlier run, by key: their file

    def _new_key(self) -> int:
        key, self._next_key = self._next_key, self._next_key + 1
        return key

    @property
    def direct_io(self) -> bool:
        """Whether commits bypass the page cache (``O_DIRECT``) on this filesystem."""
        return self._writer.direct

    def stage(
        self, header: ChunkHeader | None, key: int, first_row: int, rows: Sequence[bytes]
    ) -> int:
        """Append ``rows`` (numbered from ``first_row``) to chunk ``key`` - or, with ``header``,
        to a new chunk in a free slot - durably (fdatasync). Returns the chunk's key."""
        try:
            if header is None:
                slot = self._open[key]
                data, offset = encode_v2_unit(slot.chunk_id, first_row, rows), slot.end
            else:
                # A new chunk: header and first commit in one write and one fdatasync (a flush
                # fewer per chunk). Torn, the header may survive without the commit: a chunk
                # with no rows, reported lost at the next start - none of them was confirmed.
                free = next((s for s in self._slots.values() if not s.busy), None)
                slot = free or self._new_slot()
                head = encode_v2_header(header)
                data = head + encode_v2_unit(header.chunk_id, first_row, rows)
                offset = 0
            # At the next free block, never over a block of an earlier commit: a retry after a
            # failed (partial) write overwrites what that write left, nothing confirmed.
            self._write_synced(slot, data, offset)
            if header is not None:  # only now: a failed new chunk leaves its slot free
                slot.busy, slot.chunk_id, slot.end = True, header.chunk_id, 0
                key = self._new_key()
                self._open[key] = slot
            slot.end = offset + len(data)
            slot.size = max(slot.size, slot.end)
        except OSError as exc:
            raise _error("append", exc) from exc
        return key

    def _write_synced(self, slot: _Slot, data: bytes, offset: int) -> None:
        if slot.fd is None:
            slot.fd = self._writer.open(slot.file)
        self._writer.write(slot, data, offset)
        os.fdatasync(slot.fd)

    def _new_slot(self) -> _Slot:
        if len(self._slots) >= MAX_SLOTS:
            raise OSError(errno.ENOSPC, f"all {MAX_SLOTS} staging slots are in use")
        n = next(i for i in range(MAX_SLOTS + len(self._slots) + 1)
                 if self.path / f"{SLOT_PREFIX}{i}{SUFFIX}" not in self._slots)
        file = self.path / f"{SLOT_PREFIX}{n}{SUFFIX}"
        tmp = file.with_name(file.name + ".new")
        # Real zeros, written once: blocks allocated now are overwritten in place from then on.
        # In page-sized writes: a kernel with large folios caches a file in pieces as big as the
        # writes that filled it, and a later 512-byte change dirties (and writes back) a whole
        # piece - 64 KiB a commit, measured, when the zeros went in 64-KiB writes (the page-cache
        # fallback only; direct I/O does not go through the cache).
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            zeros = bytes(mmap.PAGESIZE)
            for offset in range(0, SLOT_BYTES, len(zeros)):
                os.pwrite(fd, zeros, offset)
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(file)  # a power cut leaves a whole slot or none (a ".new" is ignored)
        dir_fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)  # the new name must survive a power cut too
        finally:
            os.close(dir_fd)
        slot = _Slot(file, SLOT_BYTES)
        slot.busy = False
        self._slots[file] = slot
        return slot

    def drop(self, key: int) -> None:
        """The chunk is sealed in the outbox (durably): its slot is released for the next one
        (a file of the previous format is unlinked). Should a power cut undo the release, the
        chunk is sent again: a duplicate, never a loss."""
        slot = self._open.pop(key, None)
        file = slot.file if slot else self._found.pop(key, None)
        if file is None:
            return
        try:
            if file.name.startswith(V1_PREFIX):
                file.unlink(missing_ok=True)
                return
            slot = slot or self._slots.get(file)
            if slot is None:
                return
            if slot.fd is None:
                slot.fd = self._writer.open(file)
            self._writer.write(slot, bytes(BLOCK), 0)  # no fsync: see above
            slot.busy, slot.chunk_id, slot.end = False, b"", 0
        except OSError as exc:
            raise _error("release", exc) from exc

    def _files(self) -> list[Path]:
        try:
            files = [
                f for f in self.path.glob(f"*{SUFFIX}")
                if f.name.startswith((V1_PREFIX, SLOT_PREFIX))
            ]
            files.sort(key=lambda p: p.stat().st_mtime)
        except OSError as exc:
            raise _error("listing", exc) from exc
        if len(files) > MAX_FILES:
            raise StoreError(
                f"{len(files)} staging files in {self.path}, more than {MAX_FILES}",
                hint="this folder holds only the gateway's own staging files; check what wrote "
                "there",
            )
        return files

    def chunks(self) -> list[StagedChunk]:
        """Every chunk left by an earlier run (an unclean stop), oldest first. A file whose
        header is unreadable comes back with no rows and a zero chunk id."""
        out = []
        ours = {s.file for s in self._open.values()} | set(self._found.values())
        for file in self._files():
            if file in ours:
                continue  # open now, or already reported
            try:
                blob = file.read_bytes()
                mtime_ms = int(file.stat().st_mtime * 1000)
            except OSError as exc:
                raise _error(f"read of {file.name}", exc) from exc
            header: ChunkHeader | None = None
            rows: tuple[bytes, ...] = ()
            rows_version = ROWS_VERSION  # a version-2 file holds version-2 rows
            if blob[: len(V1_MAGIC)] == V1_MAGIC or file.name.startswith(V1_PREFIX):
                rows_version = 1
                decoded = decode_v1(blob)
                if decoded is not None:
                    header, rows = decoded
            else:
                state, header, rows, _ = decode_v2(blob)
                slot = self._slots.setdefault(file, _Slot(file, len(blob)))
                if state is SlotState.FREE:
                    slot.busy = False
                    continue
            key = self._new_key()
            if header is None:  # kept for analysis, out of the way of the next start
                self._slots.pop(file, None)
                stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
                with contextlib.suppress(OSError):
                    file.replace(file.with_name(f"{file.name}.corrupt-{stamp}"))
                header = ChunkHeader(bytes(CHUNK_ID_LEN), mtime_ms, 0, b"")
                out.append(StagedChunk(key, header, ()))
            else:
                self._found[key] = file
                out.append(StagedChunk(key, header, rows, rows_version))
        return out

    def close(self) -> None:
        """Make released slots durable (a clean stop sends no duplicates), close every file."""
        for slot in self._slots.values():
            if slot.fd is not None:
                with contextlib.suppress(OSError):
                    os.fdatasync(slot.fd)
                with contextlib.suppress(OSError):
                    os.close(slot.fd)
                slot.fd = None
        self._open.clear()


def staged_rows_on_disk(path: Path) -> int:
    """Rows staged in the folder, read without writing (tests and diagnostics): readings
    confirmed to their drivers and not yet sealed, or left by an unclean stop."""
    rows = 0
    for file in path.glob(f"*{SUFFIX}"):
        with contextlib.suppress(FileNotFoundError):  # a previous-format file deleted meanwhile
            decoded = decode(file.read_bytes())
            rows += len(decoded[1]) if decoded else 0
    return rows


def open_staging(path: Path) -> tuple[StagingStore, str | None]:
    """Open (or create) the staging folder; if ``path`` is something else (a file in its way),
    it is moved aside (kept for analysis) and replaced. Returns the store and why, if so."""
    try:
        return StagingStore(path), None
    except StagingCorruptError as exc:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        path.replace(path.with_name(f"{path.name}.corrupt-{stamp}"))
        return StagingStore(path), exc.message
