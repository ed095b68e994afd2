"""``ClockSync.offset_for``: which clock stamped a reading, around the moment we set it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from drivers.ble.clock_sync import ClockSync

WRITTEN = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


def at(minutes: float) -> datetime:
    """A naive device wall-clock reading ``minutes`` after the write, in UTC digits."""
    return (WRITTEN + minutes * MIN).replace(tzinfo=None)


def test_without_a_write_every_reading_gets_the_measured_offset() -> None:
    assert ClockSync(-5 * MIN).offset_for(at(-600)) == -5 * MIN
    assert ClockSync(None).offset_for(at(0)) is None


def test_a_slow_clock_set_at_connect_old_and_new_readings_are_told_apart() -> None:
    sync = ClockSync(-5 * MIN, WRITTEN, timedelta(0))
    assert sync.offset_for(at(-60)) == -5 * MIN  # an hour before: the old, slow clock
    assert sync.offset_for(at(-3)) is None  # old: 2 min after the write; new: before it
    assert sync.offset_for(at(+3)) == timedelta(0)  # only the new clock can have made it


def test_a_fast_clock_makes_readings_just_after_the_write_ambiguous() -> None:
    sync = ClockSync(+5 * MIN, WRITTEN, timedelta(0))
    assert sync.offset_for(at(+3)) is None  # old clock 2 min before, or new clock 3 min after
    assert sync.offset_for(at(-30)) == 5 * MIN
    assert sync.offset_for(at(+30)) == timedelta(0)


def test_an_unset_clock_that_we_set_only_trusts_readings_after_the_write() -> None:
    sync = ClockSync(None, WRITTEN, timedelta(0))
    assert sync.offset_for(at(+1)) == timedelta(0)
    assert sync.offset_for(at(-120)) is None
