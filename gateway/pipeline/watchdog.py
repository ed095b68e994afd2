"""systemd watchdog policy: ping only while every critical loop shows progress.

A free-running timer would keep pinging while a driver, the outbox writer or the uplink is
wedged, and systemd would never restart the service. Every critical loop therefore keeps a
:class:`LoopMark`: each turn records the time and how long the loop may now legitimately wait
before its next turn (a serial read of 0.25 s, a reconnect back-off of 30 s, a simulated device's
interval). A loop is *stalled* when it is more than ``stall_s`` past that promise. The daemon's
watchdog task asks :meth:`LoopWatch.stalled` before each ``WATCHDOG=1`` and withholds the ping
while any loop is stalled, so systemd restarts the service after WatchdogSec (nothing is lost:
the outbox is durable and devices keep what was not confirmed).

A driver loop the gateway pauses on purpose (the outbox quota is reached and the pump stops
pulling readings, possibly for hours of an outage) is *paused*, never stalled: an async
generator that nobody pulls cannot turn, and that is our doing, not the driver's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass


class LoopMark:
    """One loop's last turn and the longest wait it announced for the next one.

    The owner calls :meth:`turn` at the top of each iteration, with ``within_s`` when it is
    about to wait longer than usual (a back-off sleep). Times are ``time.monotonic()``, which
    is also asyncio's loop clock.
    """

    __slots__ = ("_clock", "due", "last_turn")

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.last_turn = clock()
        self.due = self.last_turn  # the next turn is promised by then (plus the stall margin)

    def turn(self, within_s: float = 0.0) -> None:
        self.last_turn = self._clock()
        self.due = self.last_turn + max(0.0, within_s)


@dataclass(frozen=True, slots=True)
class LoopState:
    """What the watchdog and ``gatewayctl status`` know of one loop at one moment."""

    name: str
    age_s: float  # since the loop's last turn
    overdue_s: float  # past the wait it announced (<= 0: on time)
    paused: str | None  # why the gateway holds it on purpose (no stall while paused)

    def stalled(self, stall_s: float) -> bool:
        return self.paused is None and self.overdue_s > stall_s

    def as_json(self, stall_s: float) -> dict[str, object]:
        return {
            "age_s": round(self.age_s, 1),
            "stalled": self.stalled(stall_s),
            "paused": self.paused,
        }


Probe = Callable[[float], LoopState]


class LoopWatch:
    """Every critical loop of the daemon, by name; read by the watchdog and by status."""

    def __init__(self, stall_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_s = stall_s
        self._clock = clock
        self._probes: dict[str, Probe] = {}

    def add(self, name: str, probe: Probe) -> None:
        if name in self._probes:
            raise ValueError(f"loop {name!r} is watched already")
        self._probes[name] = probe

    def remove(self, name: str) -> None:
        """A loop that ended on purpose (a device unbound, drivers replaced): no longer watched."""
        self._probes.pop(name, None)

    def add_last_progress(self, name: str, last_progress: Callable[[], float]) -> None:
        """A loop that only records the time of its last turn (the writer, the uplink)."""

        def probe(now: float) -> LoopState:
            age = now - last_progress()
            return LoopState(name, age, age, None)

        self.add(name, probe)

    def states(self) -> list[LoopState]:
        now = self._clock()
        return [probe(now) for probe in self._probes.values()]

    def stalled(self) -> list[str]:
        return sorted(s.name for s in self.states() if s.stalled(self.stall_s))

    def snapshot(self) -> dict[str, dict[str, object]]:
        return {s.name: s.as_json(self.stall_s) for s in self.states()}


class PumpMark:
    """A driver loop as its pump sees it: pulling from the driver, busy handing over, or paused.

    While the pump awaits the driver's next reading, the driver's own :class:`LoopMark` decides
    (a driver without one is trusted while pulling: it cannot be judged). While the pump hands a
    reading to the writer, the writer's own mark is watched instead. While the pump waits for
    outbox space, the loop is paused on purpose. ``driver.committed()`` taking longer than the
    stall margin is a stall of the driver (an ACK write or a record-pointer update that hangs).
    """

    __slots__ = ("_clock", "_committing_since", "_driver_mark", "_paused", "_pulling_since")

    def __init__(self, driver_mark: LoopMark | None, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._driver_mark = driver_mark
        self._pulling_since: float | None = None
        self._paused: str | None = None
        self._committing_since: float | None = None

    @contextmanager
    def pulling(self) -> Iterator[None]:
        self._pulling_since = self._clock()
        try:
            yield
        finally:
            self._pulling_since = None

    @contextmanager
    def paused(self, reason: str) -> Iterator[None]:
        self._paused = reason
        try:
            yield
        finally:
            self._paused = None

    @contextmanager
    def committing(self) -> Iterator[None]:
        self._committing_since = self._clock()
        try:
            yield
        finally:
            self._committing_since = None

    def probe(self, name: str) -> Probe:
        return lambda now: self.state(name, now)

    def state(self, name: str, now: float) -> LoopState:
        if self._committing_since is not None:
            age = now - self._committing_since
            return LoopState(name, age, age, None)
        if self._paused is not None:
            return LoopState(name, 0.0, 0.0, self._paused)
        mark = self._driver_mark
        if self._pulling_since is None or mark is None:
            return LoopState(name, 0.0, 0.0, None)  # handing over (the writer is watched)
        # A generator that was not pulled could not turn: count from when pulling resumed.
        last = max(mark.last_turn, self._pulling_since)
        due = max(mark.due, self._pulling_since)
        return LoopState(name, now - last, now - due, None)
