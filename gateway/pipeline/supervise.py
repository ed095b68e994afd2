"""Driver supervision: one device's failure ends that device's current run, never the daemon.

Each driver's pump runs under a :class:`DriverSupervisor` (Erlang's one-for-one restart; CONVENTIONS
7). An unexpected exception raised by the *driver* (its reading generator, its ``committed`` or
``refused`` hook) reaches the supervisor as :class:`DriverFailedError`: that run ends, the driver is
started again after a capped, jittered back-off, and an alarm names the device and the error's
*type* (never its message: a message may quote the device's bytes). Other drivers, the writer and
the uplink do not notice. Nothing is lost: a driver confirms to its device only what is durable,
so whatever the failed run had not confirmed is sent again by the device (or, for a live-only
device, was never acknowledged to anyone).

What still stops the daemon (raised past the supervisor, out of the TaskGroup, exit 1 so systemd
restarts us): anything from the ingest writer or the outbox (``writer.enqueue`` and the commit
future). Those are shared by every device; a daemon that cannot store readings must not pretend to
run, and a restart reopens the database and rebuilds the writer from durable state.

While a driver waits out its back-off its loop is *paused* for the watchdog (we hold it on
purpose), not stalled: systemd must not restart the whole daemon over one device.
"""

from __future__ import annotations

import asyncio
import random
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from gateway.errors import GatewayError
from gateway.pipeline.watchdog import PumpMark

log = structlog.get_logger("gateway.supervise")

RESTART_INITIAL_S = 1.0  # back-off before the first restart (grows x2 per failure)
RESTART_MAX_S = 60.0  # cap of the back-off: a device that keeps failing is tried once a minute
RESTART_FLOOR_S = 0.5  # the jitter never brings a restart closer than this (no hot crash loop)
HEALTHY_RUN_S = 300.0  # a run this long without failure resets the back-off and clears the alarm


class DriverFailedError(GatewayError):
    """A driver raised an exception it should have turned into a typed device error.

    Blame: the gateway (a driver bug, or device input its decoder did not guard); the device's
    other readings and every other device keep working."""

    hint = "the gateway restarts the device's driver by itself; send a support bundle if it repeats"

    def __init__(self, driver: str, cause: BaseException) -> None:
        self.error_type = type(cause).__name__
        # Where it was raised (file:line of the innermost frame) tells us the bug without the
        # exception's text, which may quote device bytes.
        frames = traceback.extract_tb(cause.__traceback__)
        self.where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else None
        super().__init__(
            f"driver {driver} failed with {self.error_type}",
            driver=driver,
            error_type=self.error_type,
        )
        self.driver = driver


def restart_delay_s(
    failures: int,
    rng: Callable[[], float] = random.random,
    *,
    initial_s: float = RESTART_INITIAL_S,
    max_s: float = RESTART_MAX_S,
    floor_s: float = RESTART_FLOOR_S,
) -> float:
    """Back-off before restart number ``failures`` (1 = first): full jitter under a cap, floored."""
    ceiling: float = min(max_s, initial_s * 2.0 ** max(0, min(failures - 1, 30)))
    return max(floor_s, min(max_s, ceiling * rng()))


@dataclass(slots=True)
class Supervision:
    """One driver's restart record, as health reports and ``gatewayctl status`` show it."""

    driver: str
    failures: int = 0  # since the daemon started
    consecutive: int = 0  # since the last healthy run (drives the back-off)
    error_type: str | None = None  # of the latest failure
    last_failure: datetime | None = None
    last_failure_mono: float | None = None
    backoff_until_mono: float | None = None

    def alarm_standing(self, now_mono: float) -> bool:
        return self.last_failure_mono is not None and now_mono - self.last_failure_mono < (
            HEALTHY_RUN_S
        )

    def as_json(self, now_mono: float) -> dict[str, Any]:
        backoff = self.backoff_until_mono
        return {
            "failures": self.failures,
            "error_type": self.error_type,
            "last_failure": self.last_failure.isoformat() if self.last_failure else None,
            "state": "restarting" if backoff is not None and backoff > now_mono else "running",
        }


class DriverSupervisor:
    """Runs one driver's pump again and again after driver faults, with back-off."""

    def __init__(
        self,
        driver: str,
        run: Callable[[], Awaitable[None]],
        mark: PumpMark,
        *,
        rng: Callable[[], float] = random.random,
        monotonic: Callable[[], float] = time.monotonic,
        delay: Callable[[int, Callable[[], float]], float] = restart_delay_s,
    ) -> None:
        self.state = Supervision(driver)
        self._run = run
        self._mark = mark
        self._rng = rng
        self._monotonic = monotonic
        self._delay = delay

    async def run(self) -> None:
        """Until the driver ends by itself (a bounded driver) or the task is cancelled.

        Anything but a :class:`DriverFailedError` goes through: the writer's and the outbox's
        failures must stop the daemon (module docstring)."""
        s = self.state
        while True:
            started = self._monotonic()
            try:
                await self._run()
            except DriverFailedError as fault:
                now = self._monotonic()
                if now - started >= HEALTHY_RUN_S:
                    s.consecutive = 0
                s.failures += 1
                s.consecutive += 1
                s.error_type = fault.error_type
                s.last_failure = datetime.now(UTC)
                s.last_failure_mono = now
                wait_s = self._delay(s.consecutive, self._rng)
                s.backoff_until_mono = now + wait_s
                # The type and place only, no traceback: the exception's text may quote what the
                # device sent (a ModelError repeats the bad serial number).
                log.error(  # noqa: TRY400
                    "driver.failed",
                    driver=s.driver,
                    error_type=fault.error_type,
                    where=fault.where,
                    failures=s.failures,
                    restart_in_s=round(wait_s, 2),
                )
                with self._mark.paused(f"restarting after {fault.error_type}"):
                    await asyncio.sleep(wait_s)
                s.backoff_until_mono = None
                log.info("driver.restarted", driver=s.driver, failures=s.failures)
                continue
            return


class Supervisors:
    """Every driver's supervisor: their alarms and their part of the health report."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._all: list[DriverSupervisor] = []
        self._monotonic = monotonic

    def add(self, supervisor: DriverSupervisor) -> DriverSupervisor:
        self._all.append(supervisor)
        return supervisor

    def remove(self, supervisor: DriverSupervisor) -> None:
        """Its driver was stopped on purpose (devices re-bound): no alarm stands for it."""
        if supervisor in self._all:
            self._all.remove(supervisor)

    def failing(self) -> list[str]:
        """``<driver>:<ErrorType>`` for each driver that failed recently: the subjects of the
        ``driver-restarting`` alarm (health.py raises it)."""
        now = self._monotonic()
        return [
            f"{s.state.driver}:{s.state.error_type}"
            for s in self._all
            if s.state.alarm_standing(now)
        ]

    def snapshot(self) -> dict[str, dict[str, Any]]:
        now = self._monotonic()
        return {s.state.driver: s.state.as_json(now) for s in self._all if s.state.failures}
