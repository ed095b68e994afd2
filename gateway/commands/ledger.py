"""The command ledger: the highest counter accepted and the commands still running, durable.

The last counter is also written to ``<state_dir>/commands.counter`` (one integer, atomically) at
each accept: the equipment return erases the database with the episode but keeps that file (like
``bundle.generation``), and a new ledger starts from it, so a command signed during one episode
can never be replayed onto the next.

A separate SQLite file (``<state_dir>/commands.db``, WAL, ``synchronous=FULL``) rather than a
table in the outbox: the outbox schema stays as it is, so a software rollback (issue 20, part 2)
never meets an outbox it does not know. The price: the counter is committed here *before* the
"accepted" audit record is sealed into the outbox, not in the same transaction. The order keeps
the promise that matters: a command can never run twice (its counter is durable before it runs),
and a crash anywhere between "accepted" and the outcome leaves a row without an outcome, which
the next start reports as ``interrupted``.

Not thread-safe: the runner calls it from one worker thread at a time (``asyncio.to_thread`` under
its own lock). Holds nothing about the patient: command names, ids, counters, times.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.atomicfile import atomic_write
from gateway.errors import StoreError

LEDGER_FILE = "commands.db"
COUNTER_FILE = "commands.counter"
MAX_KEPT = 1000  # finished commands kept for ``gatewayctl``-side inspection; older ones pruned


@dataclass(frozen=True, slots=True)
class Unfinished:
    counter: int
    command_id: str
    name: str
    accepted_ms: int


class Ledger:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), timeout=5.0, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            with self._db:
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS counter (id INTEGER PRIMARY KEY CHECK (id = 1), "
                    "last INTEGER NOT NULL)"
                )
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS commands (counter INTEGER PRIMARY KEY, "
                    "command_id TEXT NOT NULL, name TEXT NOT NULL, accepted_ms INTEGER NOT NULL, "
                    "outcome TEXT)"
                )
                self._db.execute("INSERT OR IGNORE INTO counter (id, last) VALUES (1, 0)")
                # A ledger erased with an episode (or lost) goes on from the kept counter.
                self._db.execute(
                    "UPDATE counter SET last = ? WHERE id = 1 AND last < ?",
                    (self._kept_counter(), self._kept_counter()),
                )
        except sqlite3.Error as exc:
            raise StoreError(f"command ledger {path}: {exc}") from exc

    @property
    def _counter_file(self) -> Path:
        return self.path.with_name(COUNTER_FILE)

    def _kept_counter(self) -> int:
        try:
            return int(self._counter_file.read_bytes()[:32].decode().strip() or 0)
        except FileNotFoundError:
            return 0
        except (OSError, ValueError):
            # Damaged: the database's own counter stands (it is the same unless it was erased).
            return 0

    def last_counter(self) -> int:
        try:
            (last,) = self._db.execute("SELECT last FROM counter WHERE id = 1").fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"command ledger read: {exc}") from exc
        return int(last)

    def accept(self, counter: int, command_id: str, name: str) -> None:
        """Durably: the counter is used, and the command is running (one transaction)."""
        try:
            with self._db:
                cur = self._db.execute(
                    "UPDATE counter SET last = ? WHERE id = 1 AND last < ?", (counter, counter)
                )
                if cur.rowcount != 1:
                    raise StoreError(
                        f"command counter {counter} is not above the ledger's",
                        hint="a bug: two commands were accepted at once; nothing ran",
                    )
                self._db.execute(
                    "INSERT INTO commands (counter, command_id, name, accepted_ms) "
                    "VALUES (?, ?, ?, ?)",
                    (counter, command_id, name, time.time_ns() // 1_000_000),
                )
                # Inside the transaction: if this write fails, nothing is accepted.
                atomic_write(self._counter_file, f"{counter}\n".encode(), 0o640)
        except sqlite3.Error as exc:
            raise StoreError(f"command ledger commit: {exc}") from exc
        except OSError as exc:
            raise StoreError(f"command counter {self._counter_file}: {exc.strerror}") from exc

    def finish(self, counter: int, outcome: str) -> None:
        try:
            with self._db:
                self._db.execute(
                    "UPDATE commands SET outcome = ? WHERE counter = ?", (outcome, counter)
                )
                self._db.execute(
                    "DELETE FROM commands WHERE outcome IS NOT NULL AND counter <= "
                    "(SELECT max(counter) - ? FROM commands)",
                    (MAX_KEPT,),
                )
        except sqlite3.Error as exc:
            raise StoreError(f"command ledger commit: {exc}") from exc

    def unfinished(self) -> list[Unfinished]:
        try:
            rows = self._db.execute(
                "SELECT counter, command_id, name, accepted_ms FROM commands "
                "WHERE outcome IS NULL ORDER BY counter"
            ).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"command ledger read: {exc}") from exc
        return [Unfinished(int(c), str(i), str(n), int(t)) for c, i, n, t in rows]

    def close(self) -> None:
        self._db.close()
