"""A damaged outbox is moved aside (kept), replaced, and the chain restarts in a new epoch."""

from __future__ import annotations

from pathlib import Path

from buffer.outbox import ChainHead, NewRecord, Outbox
from buffer.recovery import epoch_marker, open_outbox


def fill(box: Outbox, n: int) -> None:
    head = box.head()
    recs = [NewRecord(head.seq + i, head.epoch, 1, 1, 0, b"r" * 4000) for i in range(1, n + 1)]
    box.append(recs, ChainHead(head.epoch, head.seq + n, bytes(32)))


def test_first_start_creates_epoch_1_and_its_marker(tmp_path: Path) -> None:
    box, replaced = open_outbox(tmp_path / "outbox.db")
    assert replaced is None
    assert box.head().epoch == 1
    assert epoch_marker(tmp_path / "outbox.db").read_text().strip() == "1"


def test_reopening_a_healthy_outbox_keeps_its_epoch_and_records(tmp_path: Path) -> None:
    box, _ = open_outbox(tmp_path / "outbox.db")
    fill(box, 3)
    box.close()
    again, replaced = open_outbox(tmp_path / "outbox.db")
    assert replaced is None
    assert (again.head().epoch, again.head().seq, again.stats().depth) == (1, 3, 3)


def test_garbage_file_is_moved_aside_and_a_new_epoch_begins(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    box, _ = open_outbox(path)
    fill(box, 2)
    box.close()
    (tmp_path / "outbox.db-wal").unlink(missing_ok=True)
    path.write_bytes(b"this is not a database" * 200)
    box, replaced = open_outbox(path)
    assert replaced is not None
    assert (replaced.previous_epoch, replaced.new_epoch) == (1, 2)
    assert box.head() == ChainHead(2, 0, bytes(32))
    kept = [tmp_path / name for name in replaced.moved_to]
    assert kept
    assert kept[0].read_bytes().startswith(b"this is not a database")  # kept, not deleted
    assert epoch_marker(path).read_text().strip() == "2"


def test_damaged_pages_are_detected_by_the_start_up_check(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    box, _ = open_outbox(path)
    fill(box, 20)
    box.close()  # checkpoints the WAL into the main file
    data = bytearray(path.read_bytes())
    page = 4096
    for offset in range(3 * page, min(len(data), 6 * page), 7):  # scribble over b-tree pages
        data[offset] = 0xFF
    path.write_bytes(bytes(data))
    box, replaced = open_outbox(path)
    assert replaced is not None
    assert box.head().epoch == 2
    assert box.stats().depth == 0


def test_a_deleted_database_with_a_marker_left_also_starts_a_new_epoch(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    box, _ = open_outbox(path)
    box.close()
    for f in tmp_path.glob("outbox.db*"):
        if not f.name.endswith(".epoch"):
            f.unlink()
    box, replaced = open_outbox(path)
    assert replaced is not None
    assert replaced.reason == "outbox file missing"
    assert box.head().epoch == 2
