"""Outbox schema, applied by numbered migrations tracked in ``PRAGMA user_version``.

A migration runs inside one transaction with the version bump, so a power cut leaves either the
old or the new schema, never half of one. Migrations are append-only: never edit a released one.

Forward compatibility (software updates roll back, buffer/schema_facts.py): each migration
names the lowest schema version of software that can still read and write the database after it
(additive changes - a new table, a nullable column - keep the previous floor; a change older
code would misread raises it). The floor is stored in the database (table ``schema_compat``), so
software older than the database opens it when its own version is at least the floor, and
refuses it, typed, when not.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlite_utils

from buffer import schema_facts
from gateway.errors import StoreError


def _v1(db: sqlite_utils.Database) -> None:
    chain, records = db.table("chain"), db.table("records")
    # One row, the chain head: what the next sealed record links to. Kept apart from `records`
    # because acknowledged rows are deleted, yet the chain must go on from the last one.
    chain.create(
        {"id": int, "epoch": int, "seq": int, "head_hash": bytes},
        pk="id",
        not_null={"epoch", "seq", "head_hash"},
    )
    records.create(
        {
            "seq": int,
            "epoch": int,
            "lane": int,
            "kind": int,
            "created_ms": int,
            "size": int,
            "record": bytes,
        },
        pk="seq",
        not_null={"epoch", "lane", "kind", "created_ms", "size", "record"},
    )
    records.create_index(["lane", "seq"], index_name="records_lane_seq")


def _v2(db: sqlite_utils.Database) -> None:
    # One row while a chunk of continuous-stream readings is open in memory (not yet sealed):
    # when it was opened. Cleared in the transaction that stores the sealed chunk, so a row found
    # at start-up means the process stopped uncleanly with readings in that chunk.
    db.table("stream_chunk").create({"id": int, "opened_ms": int}, pk="id", not_null={"opened_ms"})


def _v3(db: sqlite_utils.Database) -> None:
    # One row: the lowest schema version of software that may open this database (see above).
    db.table("schema_compat").create(
        {"id": int, "min_reader": int}, pk="id", not_null={"min_reader"}
    )


# (migration, the reader floor once it has run). Versions 1-2 predate the rule: software of
# schema 2 refuses anything newer, so the floor starts at 3.
MIGRATIONS: list[tuple[Callable[[sqlite_utils.Database], None], int]] = [
    (_v1, 1),
    (_v2, 2),
    (_v3, 3),
]
SCHEMA_VERSION = len(MIGRATIONS)
MIN_READER = max(floor for _, floor in MIGRATIONS)
if (SCHEMA_VERSION, MIN_READER) != (schema_facts.OUTBOX_SCHEMA, schema_facts.OUTBOX_MIN_READER):
    raise ImportError("buffer/schema_facts.py disagrees with buffer/schema.py: update the facts")


def migrate(db: sqlite_utils.Database) -> int:
    """Bring the database to SCHEMA_VERSION; return the version it had before."""
    (current,) = db.execute("PRAGMA user_version").fetchone()
    if current > SCHEMA_VERSION:
        floor = reader_floor(db)
        if floor is None or floor > SCHEMA_VERSION:
            raise StoreError(
                f"outbox schema version {current} is newer than this software ({SCHEMA_VERSION})"
                f" and needs software of schema {floor if floor is not None else current}",
                hint="a newer gateway version wrote this database; upgrade, do not downgrade",
            )
        return int(current)  # forward-compatible: opened as it is, nothing migrated back
    for version in range(current + 1, SCHEMA_VERSION + 1):
        migration, floor = MIGRATIONS[version - 1]
        with db.atomic():  # one transaction: the schema change and the version bump together
            migration(db)
            if version >= 3:
                db.execute(
                    "INSERT OR REPLACE INTO schema_compat (id, min_reader) VALUES (1, ?)",
                    [max(f for _, f in MIGRATIONS[:version])],
                )
            db.execute(f"PRAGMA user_version = {version}")
    return int(current)


def reader_floor(db: sqlite_utils.Database) -> int | None:
    """The lowest software schema version that may open ``db``; None before schema 3."""
    if "schema_compat" not in db.table_names():
        return None
    row = db.execute("SELECT min_reader FROM schema_compat WHERE id = 1").fetchone()
    return None if row is None else int(row[0])
