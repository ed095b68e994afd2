"""The staging file: stream readings of the open chunk, durable within a second, encrypted.

A small SQLite file of its own beside the outbox (``<outbox>.staging``), so that a commit every
second does not rewrite the outbox's 4-KiB pages, indexes and chain row: 1-KiB pages, WAL with
``synchronous=FULL`` (a row returned from ``stage`` survives a power cut), a short WAL
(checkpoint every 32 pages, the file kept at most 64 KiB), and no ``secure_delete``: the rows
are ciphertext under chunk keys the router no longer holds once a chunk is closed
(gateway/seal/staged.py), so overwriting them on delete would only add flash wear.

Rows are only ever appended and, once their chunk is sealed in the outbox, deleted with their
chunk. What is found here at start-up is what an unclean stop left: the writer sends it as
STAGED_CHUNK records. Synchronous; runs on the database thread like the outbox.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import StoreError
from gateway.seal.staged import ChunkHeader

PAGE_SIZE = 1024
WAL_AUTOCHECKPOINT_PAGES = 32
JOURNAL_SIZE_LIMIT = 64 * 1024
SCHEMA_VERSION = 1


def staging_path(outbox_path: Path) -> Path:
    return outbox_path.with_name(outbox_path.name + ".staging")


@dataclass(frozen=True, slots=True)
class StagedChunk:
    key: int  # the local row id of the chunk (what ``drop`` takes)
    header: ChunkHeader
    rows: tuple[bytes, ...]  # in row order, 0..n-1


class StagingCorruptError(StoreError):
    hint = "the damaged staging file is kept for analysis; its stream readings are reported lost"


def _error(action: str, exc: sqlite3.Error) -> StoreError:
    return StoreError(f"staging {action} failed: {exc}", sqlite_error=type(exc).__name__)


def _schema(conn: sqlite3.Connection) -> None:
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"staging schema version {version} is newer than this software ({SCHEMA_VERSION})",
            hint="a newer gateway version wrote this file; upgrade, do not downgrade",
        )
    if version == SCHEMA_VERSION:
        return
    with conn:  # IF NOT EXISTS: a stop between the tables and the version bump is harmless
        conn.execute(
            "CREATE TABLE IF NOT EXISTS chunk (id INTEGER PRIMARY KEY, chunk_id BLOB NOT NULL, "
            "opened_ms INTEGER NOT NULL, kem_id INTEGER NOT NULL, wrapped_key BLOB NOT NULL)"
        )
        # No index: one leaf page (and its overflow) per append; recovery reads a few chunks.
        conn.execute(
            "CREATE TABLE IF NOT EXISTS row (id INTEGER PRIMARY KEY, chunk INTEGER NOT NULL, "
            "n INTEGER NOT NULL, data BLOB NOT NULL)"
        )
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


class StagingStore:
    """Not thread-safe: used from the database thread only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(path), timeout=5.0, check_same_thread=False,
                                   isolation_level=None)
            # Before the first table: the page size of a new file (an existing one keeps its own).
            conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"cannot switch {path} to WAL mode (got {mode})")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA secure_delete=OFF")
            conn.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
            conn.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
            conn.isolation_level = "DEFERRED"  # implicit transactions again, for `with conn`
            _schema(conn)
            (check,) = conn.execute("PRAGMA quick_check").fetchone()
            if check != "ok":
                conn.close()
                raise StagingCorruptError(f"staging file {path} failed its check: {check}")
        except sqlite3.DatabaseError as exc:
            with contextlib.suppress(Exception):
                conn.close()
            if isinstance(exc, sqlite3.OperationalError):
                raise _error(f"open of {path}", exc) from exc
            raise StagingCorruptError(f"staging file {path} is damaged: {exc}") from exc
        self._conn = conn

    def open_chunk(self, header: ChunkHeader) -> int:
        """Not yet durable on its own: the first ``stage`` commits it with the first rows."""
        cur = self._conn.execute(
            "INSERT INTO chunk (chunk_id, opened_ms, kem_id, wrapped_key) VALUES (?, ?, ?, ?)",
            (header.chunk_id, header.opened_ms, header.kem_id, header.wrapped_key),
        )
        return int(cur.lastrowid or 0)

    def stage(
        self, header: ChunkHeader | None, key: int, first_row: int, rows: Sequence[bytes]
    ) -> int:
        """Append ``rows`` (numbered from ``first_row``) to chunk ``key`` - or, with ``header``,
        to a new chunk written in the same transaction - durably. Returns the chunk's key."""
        try:
            with self._conn:
                if header is not None:
                    key = self.open_chunk(header)
                self._conn.executemany(
                    "INSERT INTO row (chunk, n, data) VALUES (?, ?, ?)",
                    [(key, first_row + i, data) for i, data in enumerate(rows)],
                )
        except sqlite3.Error as exc:
            raise _error("append", exc) from exc
        return key

    def drop(self, key: int) -> None:
        """The chunk is sealed in the outbox (durably): its rows are no longer needed."""
        try:
            with self._conn:
                self._conn.execute("DELETE FROM row WHERE chunk = ?", (key,))
                self._conn.execute("DELETE FROM chunk WHERE id = ?", (key,))
        except sqlite3.Error as exc:
            raise _error("delete", exc) from exc

    def chunks(self) -> list[StagedChunk]:
        """Every chunk left by an unclean stop, oldest first, with its rows in order."""
        try:
            heads = self._conn.execute(
                "SELECT id, chunk_id, opened_ms, kem_id, wrapped_key FROM chunk ORDER BY id"
            ).fetchall()
            out = []
            for key, chunk_id, opened_ms, kem_id, wrapped in heads:
                rows = self._conn.execute(
                    "SELECT n, data FROM row WHERE chunk = ? ORDER BY n", (key,)
                ).fetchall()
                # Rows are appended in order in whole transactions: numbering has no holes.
                # Should it have one (a bug), stop there: the provider rejects a hole anyway.
                kept = []
                for expected, (n, data) in enumerate(rows):
                    if n != expected:
                        break
                    kept.append(bytes(data))
                header = ChunkHeader(bytes(chunk_id), int(opened_ms), int(kem_id), bytes(wrapped))
                out.append(StagedChunk(int(key), header, tuple(kept)))
        except sqlite3.Error as exc:
            raise _error("read", exc) from exc
        return out

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()


def open_staging(path: Path) -> tuple[StagingStore, str | None]:
    """Open (or create) the staging file; a damaged one is moved aside (kept for analysis) and
    replaced. Returns the store and, if it was replaced, why."""
    try:
        return StagingStore(path), None
    except StagingCorruptError as exc:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        for suffix in ("", "-wal", "-shm"):
            src = path.with_name(path.name + suffix)
            if src.exists():
                src.replace(path.with_name(f"{path.name}.corrupt-{stamp}{suffix}"))
        return StagingStore(path), exc.message
