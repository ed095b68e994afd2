"""Mains lost / mains restored, debounced: the pure state machine behind the power events.

The rule (docs/operations.md repeats it for the command centre):

1. **Confirm.** A change of supply (mains -> battery or back) counts only once the UPS has
   reported it for ``confirm_s`` without interruption. Shorter blips change nothing and are only
   counted (``blips`` in the health report).
2. **Events.** A confirmed change to battery seals "mains-lost" (time = the first on-battery
   reading); a confirmed change back seals "mains-restored" with the outage length (first
   on-battery reading to first on-mains reading).
3. **Rate limit.** At most ``max_outages`` outages per ``window_s`` are sealed one by one. The
   next confirmed outage inside the window seals one "power-flapping" event instead and further
   outages are only counted; once a whole window passes without an outage, one
   "power-flapping-ended" event carries how many outages were not sealed one by one and the supply
   now. So a flapping UPS costs at most ``2 * max_outages + 2`` events per window.

Times: monotonic seconds for every interval, timezone-aware UTC for what the events say.
An outage carried over a restart (the marker of a power-cut shutdown) is measured in UTC.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from datetime import datetime


class Supply(enum.StrEnum):
    MAINS = "mains"
    BATTERY = "battery"


@dataclass(frozen=True, slots=True)
class DebounceRule:
    confirm_s: float = 10.0
    window_s: float = 600.0
    max_outages: int = 3

    def __post_init__(self) -> None:
        if self.confirm_s < 0 or self.window_s <= 0 or self.max_outages < 1:
            raise ValueError("confirm_s >= 0, window_s > 0 and max_outages >= 1")


@dataclass(frozen=True, slots=True)
class PowerEvent:
    event: str  # mains-lost, mains-restored, power-flapping, power-flapping-ended
    at: datetime
    outage_s: float | None = None  # mains-restored: how long the mains was gone
    outage_started: datetime | None = None  # mains-restored: when it went
    outages_not_sealed: int | None = None  # power-flapping-ended
    outages_in_window: int | None = None  # power-flapping
    supply: Supply | None = None  # power-flapping-ended: the supply now


class PowerTracker:
    def __init__(
        self,
        rule: DebounceRule,
        *,
        outage_since: datetime | None = None,
    ) -> None:
        """``outage_since``: an outage carried over from before a power-cut shutdown."""
        self.rule = rule
        self.supply: Supply | None = Supply.BATTERY if outage_since else None
        self._candidate: Supply | None = None
        self._candidate_mono = 0.0
        self._candidate_wall: datetime | None = None
        self.outage_since: datetime | None = outage_since
        self._outage_mono: float | None = None  # None: started before this process
        self._outage_sealed = outage_since is not None  # its mains-lost went out before
        self._outages: deque[float] = deque()  # monotonic starts of confirmed outages
        self.flapping = False
        self._not_sealed = 0
        self.blips = 0

    def observe(self, on_battery: bool | None, mono: float, wall: datetime) -> list[PowerEvent]:
        """One UPS reading (None: the UPS did not say); the events it confirms."""
        events = self._flapping_over(mono, wall)
        if on_battery is None:
            return events
        seen = Supply.BATTERY if on_battery else Supply.MAINS
        if seen == self.supply:
            if self._candidate is not None:
                self.blips += 1
            self._candidate = None
            return events
        if self.supply is None and seen is Supply.MAINS:
            self.supply = Supply.MAINS  # the first reading: on mains, nothing happened
            return events
        if self._candidate is not seen:
            self._candidate, self._candidate_mono, self._candidate_wall = seen, mono, wall
        if mono - self._candidate_mono >= self.rule.confirm_s:
            events += self._confirm(mono)
        return events

    def confirm_battery_now(self, mono: float, wall: datetime) -> list[PowerEvent]:
        """The battery is low: whatever the debounce says, the mains is gone (seal it now)."""
        if self.supply is Supply.BATTERY:
            return []
        if self._candidate is not Supply.BATTERY:
            self._candidate, self._candidate_mono, self._candidate_wall = (
                Supply.BATTERY,
                mono,
                wall,
            )
        return self._confirm(mono)

    def _confirm(self, mono: float) -> list[PowerEvent]:
        new, since_mono, since_wall = self._candidate, self._candidate_mono, self._candidate_wall
        if new is None or since_wall is None:
            return []
        self._candidate = None
        self.supply = new
        if new is Supply.BATTERY:
            return self._outage_began(since_mono, since_wall)
        started, started_mono, sealed = self.outage_since, self._outage_mono, self._outage_sealed
        self.outage_since, self._outage_mono, self._outage_sealed = None, None, False
        if started is None or not sealed:
            return []
        outage_s = (
            since_mono - started_mono
            if started_mono is not None
            else (since_wall - started).total_seconds()
        )
        return [
            PowerEvent(
                "mains-restored",
                since_wall,
                outage_s=round(max(0.0, outage_s), 1),
                outage_started=started,
            )
        ]

    def _outage_began(self, mono: float, wall: datetime) -> list[PowerEvent]:
        self.outage_since, self._outage_mono = wall, mono
        self._prune(mono)
        self._outages.append(mono)
        if len(self._outages) <= self.rule.max_outages and not self.flapping:
            self._outage_sealed = True
            return [PowerEvent("mains-lost", wall)]
        self._outage_sealed = False
        self._not_sealed += 1
        if self.flapping:
            return []
        self.flapping = True
        return [PowerEvent("power-flapping", wall, outages_in_window=len(self._outages))]

    def _prune(self, mono: float) -> None:
        while self._outages and mono - self._outages[0] > self.rule.window_s:
            self._outages.popleft()

    def _flapping_over(self, mono: float, wall: datetime) -> list[PowerEvent]:
        if not self.flapping:
            return []
        self._prune(mono)
        if self._outages:
            return []
        self.flapping = False
        not_sealed, self._not_sealed = self._not_sealed, 0
        # From here on the current outage (if any) counts as reported: its end is sealed.
        self._outage_sealed = self.supply is Supply.BATTERY
        return [
            PowerEvent(
                "power-flapping-ended", wall, outages_not_sealed=not_sealed, supply=self.supply
            )
        ]
