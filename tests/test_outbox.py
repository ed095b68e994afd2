"""Outbox: chain continuity, in-order leases, delete only on ack, survival across reopen."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from buffer import schema_facts
from buffer.outbox import ChainHead, NewRecord, Outbox, inspect
from buffer.schema import MIN_READER, SCHEMA_VERSION
from gateway.errors import StoreError
from gateway.seal import wire


def append_n(box: Outbox, n: int, lane: int = 1, size: int = 10) -> list[int]:
    head = box.head()
    recs = []
    prev = head.head_hash
    for i in range(1, n + 1):
        body = bytes([i % 256]) * size
        recs.append(NewRecord(head.seq + i, head.epoch, lane, 1, 1000 + i, body))
        prev = wire.record_hash(body)
    box.append(recs, ChainHead(head.epoch, head.seq + n, prev))
    return [r.seq for r in recs]


@pytest.fixture
def box(tmp_path: Path) -> Outbox:
    return Outbox(tmp_path / "outbox.db")


def test_new_outbox_starts_at_genesis(box: Outbox) -> None:
    assert box.head() == ChainHead(1, 0, wire.GENESIS_HASH)
    assert box.stats().depth == 0


def test_database_uses_wal_and_full_sync(box: Outbox) -> None:
    conn = sqlite3.connect(box.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert box._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_append_refuses_a_gap_in_the_chain(box: Outbox) -> None:
    with pytest.raises(StoreError):
        box.append([NewRecord(2, 1, 1, 1, 0, b"x")], ChainHead(1, 2, bytes(32)))
    assert box.stats().depth == 0


def test_lease_is_in_lane_then_sequence_order_and_not_repeated(box: Outbox) -> None:
    append_n(box, 3, lane=2)
    append_n(box, 2, lane=0)
    first = box.lease(max_records=3, max_bytes=10_000)
    assert [(r.lane, r.seq) for r in first] == [(0, 4), (0, 5)]  # a lease never mixes lanes
    second = box.lease(max_records=10, max_bytes=10_000)
    assert [(r.lane, r.seq) for r in second] == [(2, 1), (2, 2), (2, 3)]
    assert box.lease(10, 10_000) == []


def test_lease_respects_max_bytes_but_always_returns_one(box: Outbox) -> None:
    append_n(box, 3, size=100)
    assert [r.seq for r in box.lease(10, 250)] == [1, 2]
    box.release_all()
    assert [r.seq for r in box.lease(10, 5)] == [1]


def test_rows_are_deleted_only_by_ack(box: Outbox) -> None:
    append_n(box, 4)
    leased = box.lease(2, 10_000)
    assert box.stats().depth == 4
    box.release([r.seq for r in leased])  # publish failed: the same records go out again
    assert [r.seq for r in box.lease(2, 10_000)] == [1, 2]
    assert box.ack([1, 2]) == 2
    stats = box.stats()
    assert stats.depth == 2
    assert stats.oldest_created_ms == 1003


def test_ack_of_unknown_or_repeated_seqs_is_harmless(box: Outbox) -> None:
    append_n(box, 2)
    assert box.ack([1]) == 1
    assert box.ack([1, 99]) == 0
    assert box.stats().depth == 1


def test_reopen_keeps_records_and_chain_head_but_not_leases(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    box = Outbox(path)
    append_n(box, 5)
    head = box.head()
    box.lease(3, 10_000)
    box.ack([1])
    box.close()
    again = Outbox(path)
    assert again.head() == head
    assert [r.seq for r in again.lease(10, 10_000)] == [2, 3, 4, 5]
    assert again.integrity_ok()


def test_chain_continues_after_everything_was_acked(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    box = Outbox(path)
    append_n(box, 3)
    box.ack([1, 2, 3])
    box.close()
    again = Outbox(path)
    assert again.head().seq == 3
    assert append_n(again, 1) == [4]


def test_refuses_a_database_from_a_newer_version(tmp_path: Path) -> None:
    """A newer database whose reader floor is above our schema is refused, typed."""
    path = tmp_path / "o.db"
    Outbox(path).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.execute("UPDATE schema_compat SET min_reader = 99")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        Outbox(path)


def test_opens_a_newer_database_that_declares_us_a_compatible_reader(tmp_path: Path) -> None:
    """Forward compatibility (software update rolled back): a database a newer version migrated
    additively (floor <= our schema) opens, keeps its records, and is not migrated back."""
    path = tmp_path / "o.db"
    box = Outbox(path)
    append_n(box, 2)
    box.close()
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE future_thing (id INTEGER PRIMARY KEY, note TEXT)")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    again = Outbox(path)
    assert again.head().seq == 2
    assert append_n(again, 1) == [3]
    again.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    conn.close()


def test_schema_facts_match_the_migrations() -> None:
    """The literals releases declare (buffer/schema_facts.py) are the migrations' own figures."""
    assert (schema_facts.OUTBOX_SCHEMA, schema_facts.OUTBOX_MIN_READER) == (
        SCHEMA_VERSION,
        MIN_READER,
    )


def test_unopenable_path_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(StoreError):
        Outbox(tmp_path / "dir.db")


def test_ack_commits_without_its_own_fsync_and_appends_stay_full(box: Outbox) -> None:
    append_n(box, 3)
    box.lease(3, 10_000)
    statements: list[str] = []
    box._db.conn.set_trace_callback(statements.append)
    assert box.ack([1, 2]) == 2
    box._db.conn.set_trace_callback(None)
    order = [" ".join(t.split()[:2]) if t[0] == "P" else t.split()[0] for t in statements]
    delete = order.index("DELETE")
    assert order[:delete].count("PRAGMA synchronous=NORMAL") == 1  # the delete is not fsynced
    assert "COMMIT" in order[delete:]
    assert order[-1] == "PRAGMA synchronous=FULL"  # FULL again for appends
    assert box._db.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_release_puts_records_back_in_front_of_newer_ones(box: Outbox) -> None:
    append_n(box, 4)
    assert [r.seq for r in box.lease(2, 10_000)] == [1, 2]
    assert [r.seq for r in box.lease(1, 10_000)] == [3]
    box.release([1, 2])  # 3 stays in flight
    append_n(box, 1)
    assert [r.seq for r in box.lease(10, 10_000)] == [1, 2, 4, 5]
    box.ack([3])
    assert box.lease(10, 10_000) == []


def test_lease_after_acks_continues_behind_the_in_flight_ones(box: Outbox) -> None:
    append_n(box, 6, lane=2)
    assert [r.seq for r in box.lease(2, 10_000)] == [1, 2]
    assert [r.seq for r in box.lease(2, 10_000)] == [3, 4]
    box.ack([1, 2])
    append_n(box, 1, lane=0)
    assert [r.seq for r in box.lease(5, 10_000)] == [7]  # a more urgent lane first
    assert [r.seq for r in box.lease(5, 10_000)] == [5, 6]


def test_checkpoint_folds_the_wal_into_the_database_before_a_power_off(tmp_path: Path) -> None:
    """After checkpoint() the database file alone holds every record (the WAL is empty)."""
    box = Outbox(tmp_path / "outbox.db")
    append_n(box, 20)
    wal = tmp_path / "outbox.db-wal"
    assert wal.stat().st_size > 0
    assert box.checkpoint() == 0
    assert wal.stat().st_size == 0
    box.close()
    conn = sqlite3.connect(tmp_path / "outbox.db")
    try:
        assert conn.execute("SELECT count(*) FROM records").fetchone()[0] == 20
    finally:
        conn.close()


def test_root_reads_the_services_outbox_with_an_untrusted_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16: gatewayctl (root) opens a file the service account can write; the schema's
    views and triggers may then call only innocuous functions (PRAGMA trusted_schema=OFF)."""
    path = tmp_path / "outbox.db"
    Outbox(path).close()
    settings: list[int] = []

    class Probe(sqlite3.Connection):
        def close(self) -> None:
            settings.append(self.execute("PRAGMA trusted_schema").fetchone()[0])
            super().close()

    real = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: real(*a, factory=Probe, **k))
    inspect(path)
    assert settings == [0]
