"""SQLite outbox: sealed records, durable before any device is told "stored".

Synchronous by design: every method runs on the one database thread owned by
:class:`gateway.pipeline.ingest.DatabaseThread`, so nothing here ever blocks the event loop.

Durability: WAL journal with ``synchronous=FULL`` - a transaction that returned from COMMIT has
been fsynced and survives a power cut. Records are appended in group commits (many per
transaction), leased in order without being removed, and deleted only by ``ack`` - which the uplink
calls on the broker's PUBACK. Leases live in memory only: after a crash every unacknowledged
record is simply sent again (the provider de-duplicates; losses are what we must never have).
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

from buffer.schema import migrate
from gateway.errors import StoreError
from gateway.seal import wire

PAGE_SIZE = 1024  # bytes per database page, for databases created from now on


@dataclass(frozen=True, slots=True)
class ChainHead:
    """Where the hash chain stands: the last sealed sequence number and its record hash."""

    epoch: int
    seq: int
    head_hash: bytes


@dataclass(frozen=True, slots=True)
class NewRecord:
    seq: int
    epoch: int
    lane: int
    kind: int
    created_ms: int
    record: bytes


@dataclass(frozen=True, slots=True)
class StoredRecord:
    seq: int
    lane: int
    created_ms: int
    record: bytes


@dataclass(frozen=True, slots=True)
class OutboxStats:
    depth: int  # records not yet acknowledged by the broker
    bytes: int  # their total size
    oldest_created_ms: int | None  # creation time of the oldest one (None when empty)
    in_flight: int  # leased to the uplink, waiting for PUBACK
    head_seq: int
    epoch: int

    def oldest_age_s(self, now_ms: int) -> float | None:
        if self.oldest_created_ms is None:
            return None
        return max(0.0, (now_ms - self.oldest_created_ms) / 1000.0)


def _store_error(action: str, exc: sqlite3.Error) -> StoreError:
    return StoreError(f"outbox {action} failed: {exc}", sqlite_error=type(exc).__name__)


class OutboxCorruptError(StoreError):
    """The database file is damaged (not a database, malformed pages, failed quick_check)."""

    hint = "the damaged file is kept for analysis; the gateway continues with a fresh outbox"


def _is_corruption(exc: sqlite3.Error) -> bool:
    # SQLITE_CORRUPT and SQLITE_NOTADB surface as DatabaseError; OperationalError (locked, I/O,
    # disk full, permissions) is a problem of the environment, not of the file's content.
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError)


class Outbox:
    """The durable queue of sealed records. Not thread-safe: use it from one thread.

    A database without a chain yet starts one at ``new_chain_epoch`` (see buffer.recovery).
    """

    def __init__(self, path: Path, *, new_chain_epoch: int = 1) -> None:
        self.path = path
        self.created_chain = False
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(path), timeout=5.0, check_same_thread=False)
            self._db = sqlite_utils.Database(conn)
            # Small pages for a new database (an existing one keeps its own; it is only set
            # before the first table): every WAL frame is a whole page, and at a home load the
            # outbox writes a few small records a minute, each commit a few pages (docs/
            # performance.md, "Flash": 1-KiB pages write 40 % fewer bytes per record).
            self._db.execute(f"PRAGMA page_size={PAGE_SIZE}")
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"cannot switch {path} to WAL mode (got {mode})")
            # FULL: the WAL is fsynced at every commit, so a commit that returned is on disk.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            migrate(self._db)
            (check,) = self._db.execute("PRAGMA quick_check").fetchone()
            if check != "ok":
                conn.close()
                raise OutboxCorruptError(f"outbox {path} failed its integrity check: {check}")
            if self._db.execute("SELECT 1 FROM chain WHERE id = 1").fetchone() is None:
                with self._db.atomic():
                    self._db.conn.execute(
                        "INSERT INTO chain (id, epoch, seq, head_hash) VALUES (1, ?, 0, ?)",
                        (new_chain_epoch, wire.GENESIS_HASH),
                    )
                self.created_chain = True
        except sqlite3.Error as exc:
            if _is_corruption(exc):
                with contextlib.suppress(Exception):  # the connection may be half-open
                    conn.close()
                raise OutboxCorruptError(f"outbox {path} is damaged: {exc}") from exc
            raise _store_error(f"open of {path}", exc) from exc
        self._in_flight: set[int] = set()
        self._lease_floor: dict[int, int] = {}  # lane -> highest seq leased (rows above: not yet)
        self._head = self._load_head()
        # Sealed bytes held, kept in memory for the capacity policy (read from the event loop
        # as a plain int: a slightly stale value only shifts admission by one batch).
        self.bytes_held = self.stats().bytes

    # -- chain head ---------------------------------------------------------------------------

    def _load_head(self) -> ChainHead:
        row = self._db.execute("SELECT epoch, seq, head_hash FROM chain WHERE id = 1").fetchone()
        if row is None:
            return ChainHead(epoch=1, seq=0, head_hash=wire.GENESIS_HASH)
        return ChainHead(epoch=int(row[0]), seq=int(row[1]), head_hash=bytes(row[2]))

    def head(self) -> ChainHead:
        return self._head

    # -- writing ------------------------------------------------------------------------------

    def append(
        self, records: Sequence[NewRecord], new_head: ChainHead, *, close_stream_chunk: bool = False
    ) -> None:
        """Store sealed records and the new chain head in one durable transaction.

        The records must continue the chain exactly (seq = head + 1, + 2, ...); anything else is
        a bug upstream and is refused before touching the database. ``close_stream_chunk`` clears
        the open-chunk mark in the same transaction (the chunk is among ``records``).
        """
        if not records:
            return
        expected = self._head.seq + 1
        for i, rec in enumerate(records):
            if rec.seq != expected + i or rec.epoch != self._head.epoch:
                raise StoreError(
                    f"record seq {rec.seq} does not continue the chain at {expected + i}",
                    hint="a bug in the ingest pipeline; nothing was written",
                )
        if new_head.seq != records[-1].seq or new_head.epoch != self._head.epoch:
            raise StoreError("new chain head does not match the last record")
        try:
            with self._db.atomic():
                self._db.conn.executemany(
                    "INSERT INTO records (seq, epoch, lane, kind, created_ms, size, record) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        (r.seq, r.epoch, r.lane, r.kind, r.created_ms, len(r.record), r.record)
                        for r in records
                    ],
                )
                self._db.conn.execute(
                    "INSERT INTO chain (id, epoch, seq, head_hash) VALUES (1, ?, ?, ?) "
                    "ON CONFLICT(id) DO UPDATE SET epoch = excluded.epoch, seq = excluded.seq, "
                    "head_hash = excluded.head_hash",
                    (new_head.epoch, new_head.seq, new_head.head_hash),
                )
                if close_stream_chunk:
                    self._db.conn.execute("DELETE FROM stream_chunk")
        except sqlite3.Error as exc:
            raise _store_error("commit", exc) from exc
        self._head = new_head
        self.bytes_held += sum(len(r.record) for r in records)

    def open_stream_chunk(self, opened_ms: int) -> None:
        """Durably note that a chunk of stream readings is open in memory since ``opened_ms``."""
        try:
            with self._db.atomic():
                self._db.conn.execute(
                    "INSERT OR REPLACE INTO stream_chunk (id, opened_ms) VALUES (1, ?)",
                    (opened_ms,),
                )
        except sqlite3.Error as exc:
            raise _store_error("stream chunk mark", exc) from exc

    def stream_chunk_opened_ms(self) -> int | None:
        """When the open (unsealed) stream chunk began, if there is one."""
        row = self._db.execute("SELECT opened_ms FROM stream_chunk WHERE id = 1").fetchone()
        return None if row is None else int(row[0])

    def clear_stream_chunk(self) -> None:
        try:
            with self._db.atomic():
                self._db.conn.execute("DELETE FROM stream_chunk")
        except sqlite3.Error as exc:
            raise _store_error("stream chunk mark", exc) from exc

    # -- reading and acknowledging ------------------------------------------------------------

    def lease(self, max_records: int, max_bytes: int) -> list[StoredRecord]:
        """Take the next records for upload: most urgent lane first, then in sequence order.

        All records of one lease share a lane (lanes may have topics of their own). Leased records
        stay on disk and are not handed out again until released or acked. At least one record is
        returned when any is available, even if it alone exceeds max_bytes.

        Rows already in flight are skipped through the (lane, seq) index, without reading their
        blobs: a per-lane floor remembers the highest seq leased, reset whenever records are
        given back.
        """
        out: list[StoredRecord] = []
        total = 0
        try:
            lanes = [int(r[0]) for r in self._db.execute("SELECT DISTINCT lane FROM records")]
            for lane in sorted(lanes):
                rows = self._db.execute(
                    "SELECT seq, created_ms, record FROM records WHERE lane = ? AND seq > ? "
                    "ORDER BY seq",
                    (lane, self._lease_floor.get(lane, 0)),
                )
                for seq, created_ms, record in rows:
                    if seq in self._in_flight:  # only after a release reset the floor
                        continue
                    if out and (len(out) >= max_records or total + len(record) > max_bytes):
                        break
                    out.append(StoredRecord(int(seq), lane, int(created_ms), bytes(record)))
                    total += len(record)
                rows.close()
                if out:
                    break
        except sqlite3.Error as exc:
            raise _store_error("lease", exc) from exc
        self._in_flight.update(r.seq for r in out)
        if out:
            lane = out[0].lane
            self._lease_floor[lane] = max(self._lease_floor.get(lane, 0), out[-1].seq)
        return out

    def ack(self, seqs: Iterable[int]) -> int:
        """Delete records the broker acknowledged. Returns how many rows were deleted.

        The delete is committed without an fsync of its own (``synchronous=NORMAL`` for this one
        transaction): a power cut may undo it, and then the records are sent again - a duplicate,
        which the provider removes by identifier (invariant 2). The next append's fsync makes it
        durable anyway. Appends stay ``FULL``.
        """
        seq_list = list(seqs)
        deleted = freed = 0
        try:
            self._db.execute("PRAGMA synchronous=NORMAL")
            try:
                with self._db.atomic():
                    for i in range(0, len(seq_list), 500):
                        chunk = seq_list[i : i + 500]
                        marks = ",".join("?" * len(chunk))
                        sizes = self._db.conn.execute(
                            f"DELETE FROM records WHERE seq IN ({marks}) RETURNING size",  # noqa: S608 - only "?" marks
                            chunk,
                        ).fetchall()
                        deleted += len(sizes)
                        freed += sum(int(s) for (s,) in sizes)
            finally:
                self._db.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error as exc:
            raise _store_error("ack", exc) from exc
        self._in_flight.difference_update(seq_list)
        self.bytes_held -= freed
        return deleted

    def pending(self, seqs: Iterable[int]) -> set[int]:
        """Which of these records are still waiting (the others were acknowledged and deleted)."""
        seq_list = list(seqs)
        found: set[int] = set()
        try:
            for i in range(0, len(seq_list), 500):
                chunk = seq_list[i : i + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db.conn.execute(
                    f"SELECT seq FROM records WHERE seq IN ({marks})",  # noqa: S608 - only "?" marks
                    chunk,
                ).fetchall()
                found.update(int(s) for (s,) in rows)
        except sqlite3.Error as exc:
            raise _store_error("pending", exc) from exc
        return found

    def release(self, seqs: Iterable[int]) -> None:
        """Give leased records back (publish failed or connection lost): they go out again."""
        self._in_flight.difference_update(seqs)
        self._lease_floor.clear()  # the given-back rows lie behind the cursor

    def release_all(self) -> None:
        self._in_flight.clear()
        self._lease_floor.clear()

    # -- health -------------------------------------------------------------------------------

    def stats(self) -> OutboxStats:
        try:
            depth, size, oldest = self._db.execute(
                "SELECT count(*), coalesce(sum(size), 0), min(created_ms) FROM records"
            ).fetchone()
        except sqlite3.Error as exc:
            raise _store_error("stats", exc) from exc
        return OutboxStats(
            depth=int(depth),
            bytes=int(size),
            oldest_created_ms=None if oldest is None else int(oldest),
            in_flight=len(self._in_flight),
            head_seq=self._head.seq,
            epoch=self._head.epoch,
        )

    def checkpoint(self) -> int:
        """Fold the write-ahead log into the database file and empty it (before a planned
        power-off: nothing is left to replay, the file alone holds everything). Returns the WAL
        frames that could not be checkpointed (0: all)."""
        try:
            busy, _, left = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as exc:
            raise _store_error("checkpoint", exc) from exc
        return int(left) if busy else 0

    def integrity_ok(self) -> bool:
        try:
            (result,) = self._db.execute("PRAGMA integrity_check").fetchone()
        except sqlite3.Error:
            return False
        return bool(result == "ok")

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # closing twice: nothing left to do
            self._db.conn.close()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def inspect(path: Path) -> OutboxStats:
    """Read the statistics of an outbox without writing to it (for the technician CLI).

    Opened read-only, so a technician can look while the daemon runs; it never migrates or
    creates anything.
    """
    if not path.exists():
        raise StoreError(f"no outbox at {path}", hint="check outbox.path / gateway.state_dir")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
        # Root (gatewayctl) reads a file the service account can write: no function the file's
        # schema names (a view, a trigger) runs unless SQLite marks it innocuous.
        conn.execute("PRAGMA trusted_schema = OFF")
        try:
            depth, size, oldest = conn.execute(
                "SELECT count(*), coalesce(sum(size), 0), min(created_ms) FROM records"
            ).fetchone()
            row = conn.execute("SELECT epoch, seq FROM chain WHERE id = 1").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise _store_error(f"read of {path}", exc) from exc
    epoch, head = (int(row[0]), int(row[1])) if row else (1, 0)
    return OutboxStats(
        depth=int(depth),
        bytes=int(size),
        oldest_created_ms=None if oldest is None else int(oldest),
        in_flight=0,
        head_seq=head,
        epoch=epoch,
    )
