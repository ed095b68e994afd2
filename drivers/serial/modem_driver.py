"""Cellular-modem driver: polls the AT port for link status; yields no measurements.

Every ``poll_interval_s`` it runs the 3GPP TS 27.007 status commands one after the other through
the sans-I/O :class:`~drivers.serial.modem_at.AtSession` and folds the answers - and any URC that
arrives in between, such as ``+CEREG: 1`` - into the latest
:class:`~drivers.serial.modem_status.ModemStatus` (:meth:`ModemDriver.status`), which health
reports and ``gatewayctl status`` show. ``ERROR`` / ``+CME ERROR`` for one command (an LTE-only
modem asked for ``AT+C5GREG?``) is noted and the round goes on. A command that gets no final
result code in time makes the modem "not-answering" and ends the round (the next round is tried
at the next interval): a hung modem costs one timeout per round, never the event loop. The last
status is kept meanwhile; ``snapshot()`` says how old it is.

``measurements()`` never yields; it polls until cancelled, so the daemon's ``pump`` can run it
like any other driver.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from drivers.serial.connection import Backoff, Opener, PortConnection
from drivers.serial.errors import AtResponseError
from drivers.serial.events import NeedData, SendBytes
from drivers.serial.modem_at import (
    STATUS_COMMANDS,
    AtCommand,
    AtSession,
    CommandCompleted,
    CommandFailed,
    CommandTimedOut,
    StrayLine,
    UnsolicitedResult,
)
from drivers.serial.modem_status import ModemStatus, ModemStatusTracker, sim_problem
from drivers.serial.port import LineSettings, PortSpec, SerialPort
from drivers.serial.port_errors import SerialPortError
from gateway.model import DeviceId, DeviceIdKind, Measurement, utcnow
from gateway.pipeline.health import DeviceHealth

log = structlog.get_logger("drivers.serial.modem")

MODEM_LINE = LineSettings(115200)  # USB modems ignore the rate; a UART modem is usually 115200


@dataclass(frozen=True, slots=True)
class ModemDriverConfig:
    port: PortSpec  # the AT port, e.g. /dev/homecare/modem-at (not the one ModemManager uses)
    name: str = "wan"
    poll_interval_s: float = 30.0
    command_timeout_s: float | None = None  # None: each command's own (5 s, AT+COPS? 10 s)
    commands: tuple[AtCommand, ...] = STATUS_COMMANDS
    backoff: Backoff = field(default_factory=Backoff)


class ModemDriver:
    def __init__(
        self,
        config: ModemDriverConfig,
        *,
        opener: Opener = SerialPort.open,
        monotonic: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.config = config
        self.name = f"serial.modem.{config.name}"
        self.device = DeviceId(DeviceIdKind.SERIAL, f"modem-{config.name}")
        self.rounds = 0
        self.failed_commands = 0
        self.rejected_input = 0  # lines that were no answer (stray, malformed, over a cap)
        self._last_rejected: datetime | None = None
        self._conn = PortConnection(
            config.port, name=self.name, backoff=config.backoff, opener=opener, monotonic=monotonic
        )
        self.progress = self._conn.progress  # the watchdog's view of this driver's loop
        self._monotonic = monotonic
        self._wallclock = wallclock
        self._tracker = ModemStatusTracker()
        self._answering: bool | None = None  # None: not asked yet on this connection
        self._updated_at: datetime | None = None  # last answer of any kind
        self._sim: str | None = None  # a SIM problem a command reported (+CME ERROR: 10...)
        self._sim_from: AtCommand | None = None  # ... until that command succeeds or it registers
        self._commands = {self._timed(c): c for c in config.commands}
        self._log = log.bind(driver=self.name)

    def _timed(self, command: AtCommand) -> AtCommand:
        timeout_s = self.config.command_timeout_s
        return command if timeout_s is None else dataclasses.replace(command, timeout_s=timeout_s)

    # --- what others read ---------------------------------------------------------------------

    def status(self) -> ModemStatus:
        """The latest link status (kept while the modem does not answer; see :meth:`state`)."""
        return self._tracker.status

    def state(self) -> str:
        if self._conn.state != "connected":
            return self._conn.state
        if self._answering is None:
            return "connected"
        return "answering" if self._answering else "not-answering"

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready view for the control socket / ``gatewayctl status``."""
        status = self.status()
        return {
            "state": self.state(),
            "updated_at": self._updated_at.isoformat() if self._updated_at else None,
            "registered": status.registered,
            "rssi_dbm": status.rssi_dbm,
            "operator": status.operator,
            "access_technology": status.access_technology.name
            if status.access_technology
            else None,
            "pdp_addresses": [a for pdp in status.pdp_addresses for a in pdp.addresses],
            "registration": status.registration,
            "sim": self._sim,
        }

    def health(self) -> list[DeviceHealth]:
        return [
            DeviceHealth(
                device=str(self.device),
                driver=self.name,
                state=self.state(),
                last_seen=self._updated_at,
                expected_interval_s=None,
                readings=0,
                rssi_dbm=self.status().rssi_dbm,
                port=self.config.port.path,
                rejected_input=self.rejected_input,
                last_rejected=self._last_rejected,
            )
        ]

    def _rejected(self) -> None:
        self.rejected_input += 1
        self._last_rejected = self._wallclock()

    # --- Driver protocol ----------------------------------------------------------------------

    async def measurements(self) -> AsyncIterator[Measurement]:
        """Never yields: polls the modem until cancelled."""
        never: tuple[Measurement, ...] = ()
        await self.run()
        for measurement in never:
            yield measurement

    async def committed(self, measurements: Sequence[Measurement]) -> None:
        """Nothing to confirm: the modem produces no measurements."""

    async def run(self) -> None:
        while True:
            port = await self._conn.open()
            self._answering = None
            try:
                await self._session(port)
            except SerialPortError as exc:
                self._conn.lost(exc)
            finally:
                await port.close()

    # --- one connection -----------------------------------------------------------------------

    async def _session(self, port: SerialPort) -> None:
        session = AtSession()
        todo: list[AtCommand] = []
        next_round = self._monotonic()
        while True:
            now = self._monotonic()
            if not todo and not session.busy and now >= next_round:
                todo = list(self._commands)
                next_round = now + self.config.poll_interval_s
                session.submit(todo[0], now)
            wait_s = max(0.01, min(0.25, next_round - now))
            self.progress.turn(within_s=wait_s)
            data = await port.read(wait_s)
            now = self._monotonic()
            if data:
                session.receive_data(data, now)
            else:
                session.tick(now)
            while not isinstance(event := session.next_event(), NeedData):
                if isinstance(event, SendBytes):
                    await port.write(event.data)
                    continue
                if isinstance(event, CommandCompleted | CommandFailed | CommandTimedOut):
                    if todo and event.command == todo[0]:
                        todo.pop(0)
                    if isinstance(event, CommandTimedOut):
                        todo = []  # a modem that does not answer one will not answer the rest
                    elif todo:
                        session.submit(todo[0], now)
                    else:
                        self.rounds += 1
                self._on_event(event)

    def _note_sim(self, event: CommandFailed | CommandCompleted | UnsolicitedResult) -> None:
        """A SIM error is shown until the command that reported it succeeds (or it registers)."""
        if isinstance(event, CommandFailed):
            if (problem := sim_problem(event.error)) is not None:
                # By its configured value, as completed commands are compared below.
                self._sim = problem
                self._sim_from = self._commands.get(event.command, event.command)
        elif isinstance(event, CommandCompleted) and event.command == self._sim_from:
            self._sim = self._sim_from = None

    def _on_event(self, event: object) -> None:
        if isinstance(event, CommandTimedOut):
            if self._answering is not False:
                self._log.warning(
                    "serial.modem.not_answering",
                    command=event.command.text,
                    hint="switch the modem off and on; check its USB connection",
                )
            self._answering = False
            return
        if isinstance(event, CommandCompleted | CommandFailed):  # a URC is not an answer
            if self._answering is False:
                self._log.info("serial.modem.answering_again")
            self._answering = True
        if isinstance(event, CommandCompleted | CommandFailed | UnsolicitedResult):
            self._updated_at = self._wallclock()
        if isinstance(event, CommandFailed):
            self.failed_commands += 1
            self._note_sim(event)
            self._log.debug(
                "serial.modem.command_failed", command=event.command.text, final=event.final
            )
        elif isinstance(event, CommandCompleted | UnsolicitedResult):
            if isinstance(event, CommandCompleted):  # the tracker knows the commands by value
                event = CommandCompleted(
                    self._commands.get(event.command, event.command), event.lines
                )
            try:
                self._note_sim(event)
                if self._tracker.apply(event).registered:
                    self._sim = self._sim_from = None  # on the network: the SIM works
            except AtResponseError as exc:
                self._rejected()
                self._log.warning("serial.modem.bad_response", error=exc.message, **exc.fields)
        elif isinstance(event, StrayLine):
            self._rejected()
            if self.rejected_input <= 10 or self.rejected_input % 100 == 0:  # rate-bounded
                self._log.debug(
                    "serial.modem.stray_line", length=len(event.line), rejected=self.rejected_input
                )
