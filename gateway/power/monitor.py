"""The power monitor the daemon runs: polls upsd, reports, seals events, starts the clean stop.

Every ``poll_interval_s`` it reads the UPS (gateway.power.client). What it knows goes into the
health report (``power``: state, charge, runtime, low battery, self-test; alarms), the debounced
supply changes (gateway.power.tracker) become sealed EVENT records on the ALARM lane, and a low
battery - on battery with the UPS's LB flag or less runtime left than ``low_runtime_s``, in
:data:`LOW_CONFIRM_READINGS` readings in a row - calls ``on_low_battery`` once: the daemon then
stops cleanly and asks the system to power off (gateway/daemon/main.py).

Before powering off, the daemon has the monitor write a marker (:data:`MARKER_NAME` in the state
directory). The next start reads it: its health reports say ``previous_stop: power-cut-shutdown``
and the outage goes on from the time in the marker, so "mains restored" carries the whole outage.
The marker is removed once the first health report that says so is sealed.

No UPS configured: the state is ``unknown`` with the reason "no UPS configured"; never a guess.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import structlog

from gateway import alarms
from gateway.atomicfile import atomic_write
from gateway.errors import GatewayError
from gateway.power import client, nut
from gateway.power.tracker import DebounceRule, PowerEvent, PowerTracker, Supply

log = structlog.get_logger("gateway.power")

MARKER_NAME = "power-shutdown.json"
MARKER_MAX_BYTES = 4096
LOW_CONFIRM_READINGS = 2  # one odd runtime estimate must not power the router off
MAX_PENDING_EVENTS = 64  # events waiting to be sealed (the outbox refused them); then oldest goes
NO_UPS = "no UPS configured"

Query = Callable[[str, int, str, float], Awaitable[nut.UpsReading]]
SealEvent = Callable[[dict[str, Any]], Awaitable[int]]


@dataclass(frozen=True, slots=True)
class UpsSettings:
    """``[power]`` as the monitor needs it (gateway/config/power.py validates the table)."""

    host: str
    port: int
    ups: str
    low_runtime_s: float
    poll_interval_s: float = 2.0
    timeout_s: float = 5.0
    rule: DebounceRule = field(default_factory=DebounceRule)

    @property
    def name(self) -> str:
        return f"{self.ups}@{self.host}:{self.port}"


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None


def _dec(value: float | None) -> Decimal | None:
    """Numbers for a sealed record: canonical JSON has no floats (gateway/seal/cjson.py)."""
    return None if value is None else Decimal(repr(round(value, 3)))


def read_marker(path: Path) -> dict[str, Any] | None:
    """The previous power-cut shutdown's marker, or None (absent or unreadable: said in the log)."""
    try:
        raw = path.read_bytes()[: MARKER_MAX_BYTES + 1]
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("power.marker_unreadable", path=str(path), error=exc.strerror)
        return None
    data = _marker_of(raw)
    if data is None:
        log.warning("power.marker_unusable", path=str(path))
    return data


def _marker_of(raw: bytes) -> dict[str, Any] | None:
    if len(raw) > MARKER_MAX_BYTES:
        return None
    try:
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("reason") != "power-cut-shutdown":
            return None
        datetime.fromisoformat(str(data["at"]))
        if data.get("outage_started") is not None:
            datetime.fromisoformat(str(data["outage_started"]))
    except (ValueError, KeyError, TypeError):
        return None
    return data


class PowerMonitor:
    def __init__(
        self,
        settings: UpsSettings | None,
        *,
        state_dir: Path,
        seal_event: SealEvent,
        on_low_battery: Callable[[], None],
        query: Query = client.query,
        monotonic: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self._marker = state_dir / MARKER_NAME
        self._seal = seal_event
        self._on_low_battery = on_low_battery
        self._query = query
        self._monotonic = monotonic
        self._now = now
        self.previous_stop = read_marker(self._marker)
        outage = (self.previous_stop or {}).get("outage_started")
        rule = settings.rule if settings else DebounceRule()
        self.tracker = PowerTracker(
            rule, outage_since=datetime.fromisoformat(outage) if outage else None
        )
        self.reading: nut.UpsReading | None = None
        self.checked_at: datetime | None = None
        self.error: str | None = None
        self._low_readings = 0
        self.stopping_on_battery = False
        self._pending: deque[dict[str, Any]] = deque()
        self.sealed_events = 0
        self.dropped_events = 0  # events the outbox refused until the queue was full

    # -- what the health report and gatewayctl status read --------------------------------------

    @property
    def state(self) -> str:
        if self.settings is None:
            return "unknown"
        if self.error is not None:
            return "unreachable"
        if self.reading is None:
            return "unchecked"
        if self.reading.battery_low(self.settings.low_runtime_s):
            return "battery-low"
        on_battery = self.reading.on_battery
        if on_battery is None:
            return "unknown"
        return "battery" if on_battery else "mains"

    def snapshot(self) -> dict[str, Any]:
        snap: dict[str, Any] = {"state": self.state}
        if self.settings is None:
            snap["reason"] = NO_UPS
        else:
            r = self.reading
            snap.update(
                ups=self.settings.name,
                checked_at=_iso(self.checked_at),
                error=self.error,
                on_battery=r.on_battery if r else None,
                low_battery=r.low_battery if r else None,
                charge_pct=r.charge_pct if r else None,
                runtime_s=r.runtime_s if r else None,
                low_runtime_s=_dec(self.settings.low_runtime_s),
                self_test=str(r.self_test) if r else None,
                self_test_result=r.test_result if r else None,
                outage_since=_iso(self.tracker.outage_since),
                flapping=self.tracker.flapping,
                blips=self.tracker.blips,
                events_waiting=len(self._pending),
                events_dropped=self.dropped_events,
            )
            if r is not None and r.on_battery is None:
                snap["reason"] = "the UPS reports neither on-line nor on-battery"
        if self.previous_stop is not None:
            snap["previous_stop"] = {
                "reason": "power-cut-shutdown",
                "at": self.previous_stop.get("at"),
                "outage_started": self.previous_stop.get("outage_started"),
            }
        return snap

    def alarms(self) -> list[str]:
        if self.settings is None:
            return []
        out = []
        if self.error is not None:
            out.append(alarms.UPS_UNREACHABLE)
        state = self.state
        if state == "battery-low":
            out.append(alarms.POWER_BATTERY_LOW)
        elif self.tracker.supply is Supply.BATTERY:
            # Only a confirmed outage (tracker rule 1): a blip shows in the state, not as alarm.
            out.append(alarms.POWER_ON_BATTERY)
        if self.tracker.flapping:
            out.append(alarms.POWER_FLAPPING)
        if self.reading is not None and self.reading.self_test is nut.SelfTest.FAILED:
            out.append(alarms.UPS_SELF_TEST_FAILED)
        return out

    # -- the loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        if self.settings is None:
            log.info("power.not_configured")
            return
        while not self.stopping_on_battery:
            try:
                await self.poll_once()
            except Exception:
                log.exception("power.poll_failed")
            await asyncio.sleep(self.settings.poll_interval_s)

    async def poll_once(self) -> None:
        s = self.settings
        if s is None:
            return
        try:
            reading = await self._query(s.host, s.port, s.ups, s.timeout_s)
        except nut.UpsError as exc:
            if self.error != exc.message:
                log.warning("power.ups_unreachable", ups=s.name, error=exc.message)
            self.error = exc.message
            return
        if self.error is not None:
            log.info("power.ups_reachable", ups=s.name)
        self.error = None
        mono, wall = self._monotonic(), self._now()
        previous = self.state
        self.reading, self.checked_at = reading, wall
        if self.state != previous:
            log.info("power.state", state=self.state, previous=previous)
        events = self.tracker.observe(reading.on_battery, mono, wall)
        self._low_readings = self._low_readings + 1 if reading.battery_low(s.low_runtime_s) else 0
        stop = self._low_readings >= LOW_CONFIRM_READINGS and not self.stopping_on_battery
        if stop:
            events += self.tracker.confirm_battery_now(mono, wall)
        for e in events:
            self._keep(self._body(e, reading))
        await self._seal_pending()
        if stop:
            self.stopping_on_battery = True
            log.warning(
                "power.battery_low_stopping",
                ups=s.name,
                runtime_s=reading.runtime_s,
                charge_pct=reading.charge_pct,
                low_battery_flag=reading.low_battery,
            )
            self._on_low_battery()

    def _keep(self, body: dict[str, Any]) -> None:
        if len(self._pending) == MAX_PENDING_EVENTS:
            # The outbox has refused events for a long time: the oldest gives way, counted.
            dropped = self._pending.popleft()
            self.dropped_events += 1
            log.error("power.event_dropped", power_event=dropped["event"])
        self._pending.append(body)

    async def _seal_pending(self) -> None:
        while self._pending:
            body = self._pending[0]
            try:
                seq = await self._seal(body)
            except GatewayError as exc:
                # Kept and retried at the next reading: the event is late, not lost.
                log.error("power.event_not_sealed", power_event=body["event"], error=exc.message)  # noqa: TRY400
                return
            self._pending.popleft()
            self.sealed_events += 1
            log.warning("power.event", power_event=body["event"], seq=seq)

    def _body(self, e: PowerEvent, reading: nut.UpsReading | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": "event",
            "version": 1,
            "event": e.event,
            "time": e.at.isoformat(),
            "ups": self.settings.name if self.settings else None,
            "charge_pct": reading.charge_pct if reading else None,
            "runtime_s": reading.runtime_s if reading else None,
        }
        if e.event == "mains-restored":
            body["outage_s"] = _dec(e.outage_s)
            body["outage_started"] = _iso(e.outage_started)
        if e.outages_in_window is not None:
            body["outages_in_window"] = e.outages_in_window
            body["window_s"] = _dec(self.tracker.rule.window_s)
        if e.outages_not_sealed is not None:
            body["outages_not_sealed"] = e.outages_not_sealed
            body["supply"] = str(e.supply) if e.supply else None
        return body

    # -- the clean stop -----------------------------------------------------------------------

    def shutdown_body(self) -> dict[str, Any]:
        """The last record before powering off: "shutting-down-on-battery"."""
        r, s = self.reading, self.settings
        return {
            "type": "event",
            "version": 1,
            "event": "shutting-down-on-battery",
            "time": self._now().isoformat(),
            "ups": s.name if s else None,
            "charge_pct": r.charge_pct if r else None,
            "runtime_s": r.runtime_s if r else None,
            "low_runtime_s": _dec(s.low_runtime_s) if s else None,
            "low_battery_flag": r.low_battery if r else None,
            "outage_started": _iso(self.tracker.outage_since),
        }

    def write_marker(self) -> None:
        """Blocking (run in a thread): the marker the next start reports (durable, atomic)."""
        r = self.reading
        data = {
            "reason": "power-cut-shutdown",
            "at": self._now().isoformat(),
            "outage_started": _iso(self.tracker.outage_since),
            "runtime_s": str(r.runtime_s) if r and r.runtime_s is not None else None,
            "charge_pct": str(r.charge_pct) if r and r.charge_pct is not None else None,
        }
        atomic_write(self._marker, json.dumps(data).encode("utf-8"))

    async def reported(self) -> None:
        """The first health report since start is sealed: the marker has done its job."""
        if self.previous_stop is not None:
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(self._marker.unlink)
