"""Outbox schema, applied by numbered migrations tracked in ``PRAGMA user_version``.

A migration runs inside one transaction with the version bump, so a power cut leaves either the
old or the new schema, never half of one. Migrations are append-only: never edit a released one.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlite_utils

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


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_v1, _v2]
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(db: sqlite_utils.Database) -> int:
    """Bring the database to SCHEMA_VERSION; return the version it had before."""
    (current,) = db.execute("PRAGMA user_version").fetchone()
    if current > SCHEMA_VERSION:
        raise StoreError(
            f"outbox schema version {current} is newer than this software ({SCHEMA_VERSION})",
            hint="a newer gateway version wrote this database; upgrade, do not downgrade",
        )
    for version in range(current + 1, SCHEMA_VERSION + 1):
        with db.atomic():  # one transaction: the schema change and the version bump together
            MIGRATIONS[version - 1](db)
            db.execute(f"PRAGMA user_version = {version}")
    return int(current)
