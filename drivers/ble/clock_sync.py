"""One connection's view of a device clock: the coincident timestamp before and after we set it.

PHD IG (STU2, "Time" / coincident timestamp): per connection the gateway relates the device's
clock to its own, then keeps, maps or flags each device timestamp. When the device lets us write
Current Time (0x2A2B, Write is optional in CTS), we set it on connect, so readings made from then
on carry our time. But readings stored *before* the write (a backlog burst that follows the
subscription) were stamped by the old clock: they need the old offset. ``ClockSync.offset_for``
decides per timestamp which clock made it:

- ``before`` (device minus gateway, measured before the write) places a timestamp in gateway
  time at ``t - before``; if that is not after the write, the old clock made it;
- ``after`` (measured after the write) places it at ``t - after``; if that is not before the
  write, the new clock made it;
- both plausible (the old clock ran ahead) or neither (the old clock was behind and the
  timestamp falls in the gap) -> ``None``: the caller flags the time UNSYNCED and keeps the
  device's digits. Never replaced by reception time.

Pure: no bleak, no I/O. ``before`` / ``after`` are None when not measured (no Current Time, or
its date unknown - an unset clock).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

# How far a reading's placement may fall on the "wrong" side of the write and still count as
# made by that clock: the write and the reads around it take a connection interval or two.
SLACK = timedelta(seconds=2)


@dataclass(frozen=True, slots=True)
class ClockSync:
    """The coincident timestamps of one connection (see the module docstring)."""

    before: timedelta | None  # device wall clock minus gateway UTC, before any write
    written_at: datetime | None = None  # gateway UTC when we set the clock; None: not set
    after: timedelta | None = None  # the same difference after the write

    @property
    def written(self) -> bool:
        return self.written_at is not None

    def offset_for(self, device_time: datetime) -> timedelta | None:
        """The offset of the clock that stamped ``device_time`` (naive device wall clock), or
        None when it cannot be told (the caller flags the time untrusted)."""
        if self.written_at is None:
            return self.before
        stamp = device_time.replace(tzinfo=None)
        written = self.written_at.astimezone(UTC).replace(tzinfo=None)
        old = self.before is not None and stamp - self.before <= written + SLACK
        new = self.after is not None and stamp - self.after >= written - SLACK
        if old and not new:
            return self.before
        if new and not old:
            return self.after
        return None

    def summary(self) -> dict[str, object]:
        """For the log: offsets in whole seconds, no clinical content."""
        def secs(offset: timedelta | None) -> int | None:
            return None if offset is None else round(offset.total_seconds())

        return {"offset_before_s": secs(self.before), "clock_written": self.written,
                "offset_after_s": secs(self.after)}
