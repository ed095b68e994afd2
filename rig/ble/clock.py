"""A device's own wall clock: set to some zone, off by some offset, drifting, or never set.

Health devices keep a naive local wall clock (GATT Date Time has no zone). ``now()`` is what the
device would stamp a reading with: the true UTC time, plus the zone it was set to, plus its error
(a fixed offset and a drift in parts per million since the clock was last set). An unset clock
(a fresh battery) reports ``None``, which the encoders send as year 0 ("unknown").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class DeviceClock:
    zone: timedelta = timedelta(0)  # the UTC offset the clock was set in
    offset: timedelta = timedelta(0)  # error when last set (+: runs ahead)
    drift_ppm: float = 0.0  # further error per elapsed second, in parts per million
    unset: bool = False
    utc_now: Callable[[], datetime] = _utc_now
    monotonic: Callable[[], float] = time.monotonic
    _set_at: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self._set_at = self.monotonic()

    def error(self) -> timedelta:
        """How far the clock is off its zone's true time right now."""
        elapsed_s = self.monotonic() - self._set_at
        return self.offset + timedelta(seconds=elapsed_s * self.drift_ppm / 1e6)

    def now(self) -> datetime | None:
        """The device's wall clock, naive, whole seconds; None when never set."""
        if self.unset:
            return None
        wall = self.utc_now() + self.zone + self.error()
        return wall.replace(tzinfo=None, microsecond=0)

    def set(self, wall: datetime | None) -> None:
        """A collector wrote Current Time: the clock now reads ``wall`` (None: stays unset)."""
        if wall is None:
            return
        true_wall = (self.utc_now() + self.zone).replace(tzinfo=None)
        self.offset = wall - true_wall
        self.unset = False
        self._set_at = self.monotonic()
