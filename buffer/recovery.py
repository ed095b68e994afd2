"""Opening the outbox at start-up, and what happens when its file is damaged.

A damaged database is never deleted: it is moved aside (with its WAL and shared-memory files)
under a timestamped name, kept for analysis, and the gateway continues at once with a fresh outbox.
The fresh outbox starts a new chain epoch, so the provider sees a clean break instead of a fork:
the epoch counter lives in a small marker file next to the database, because the damaged
database cannot be trusted to say which epoch it was in. The caller seals an EVENT record that
says what happened, and raises an alarm.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from buffer.outbox import Outbox, OutboxCorruptError
from gateway.atomicfile import atomic_write

log = structlog.get_logger("buffer.recovery")


@dataclass(frozen=True, slots=True)
class Replacement:
    reason: str
    moved_to: tuple[str, ...]  # file names of the damaged files, kept in the same folder
    previous_epoch: int
    new_epoch: int


def epoch_marker(path: Path) -> Path:
    return path.with_name(path.name + ".epoch")


def _read_marker(marker: Path) -> int:
    try:
        return int(marker.read_text().strip())
    except (FileNotFoundError, ValueError):
        return 0


def _write_marker(marker: Path, epoch: int) -> None:
    atomic_write(marker, f"{epoch}\n".encode(), mode=0o644)


def _move_aside(path: Path) -> tuple[str, ...]:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    moved = []
    for suffix in ("", "-wal", "-shm"):
        src = path.with_name(path.name + suffix)
        if src.exists():
            dst = path.with_name(f"{path.name}.corrupt-{stamp}{suffix}")
            src.replace(dst)
            moved.append(dst.name)
    return tuple(moved)


def open_outbox(path: Path) -> tuple[Outbox, Replacement | None]:
    """Open (or create) the outbox; a damaged one is moved aside and replaced."""
    marker = epoch_marker(path)
    last_epoch = _read_marker(marker)
    replacement: Replacement | None = None
    try:
        box = Outbox(path, new_chain_epoch=last_epoch + 1)
    except OutboxCorruptError as exc:
        moved = _move_aside(path)
        log.error(  # noqa: TRY400 - the message is the diagnosis
            "outbox.corrupt_moved_aside", error=exc.message, moved_to=list(moved)
        )
        box = Outbox(path, new_chain_epoch=last_epoch + 1)
        replacement = Replacement(exc.message, moved, last_epoch, box.head().epoch)
    if box.created_chain and last_epoch and replacement is None:
        # The database vanished (deleted by hand?) while its marker stayed: a new epoch too.
        replacement = Replacement("outbox file missing", (), last_epoch, box.head().epoch)
    if box.head().epoch != last_epoch:
        _write_marker(marker, box.head().epoch)
    return box, replacement
