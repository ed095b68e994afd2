"""Pulse-oximeter driver (Nonin data format 2 or Contec CMS50D+): stream -> reducer -> readings.

The device streams several samples a second. The driver decodes them (the protocol's sans-I/O
decoder), reduces them (:class:`~drivers.serial.reducer.OximetryReducer`: one SpO2 + pulse pair per
reporting interval, plus an immediate pair whenever the status changes or a desaturation starts,
deepens or ends) and yields those as measurements. ``supplemental`` says why a pair was reported
("interval", "desaturation", "status-change", ...), which keeps an event reading and the interval
reading of the same second apart in the provider's de-duplication.

Oximeters have no clock: ``received_at`` is the gateway's time of the sample (an interval reading:
the interval's end), placed on the wall clock from the monotonic time the bytes arrived, and never
equal to the previous reading's (:class:`~gateway.model.ReceptionStamps`: samples of one read share
their arrival time, and two equal status changes in it must not share an identifier). They keep
no records either, so ``committed()`` has nothing to confirm. Liveness is in :meth:`health`:
"streaming", "sensor-off", "no-data" (connected but nothing valid for ``no_data_s``), or the
port's state ("unplugged", "busy", ...).
"""

from __future__ import annotations

import contextlib
import enum
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog

from drivers.serial.cms50 import Cms50Decoder
from drivers.serial.connection import Backoff, Opener, PortConnection
from drivers.serial.nonin import NoninDecoder
from drivers.serial.oximetry import NO_SIGNAL, OximetrySample, to_measurements
from drivers.serial.port import LineSettings, Parity, PortSpec, SerialPort
from drivers.serial.port_errors import SerialPortError
from drivers.serial.reducer import OximetryReading, OximetryReducer, Reason, ReducerConfig
from gateway.model import DeviceId, Measurement, ReceptionStamps, utcnow
from gateway.pipeline.health import DeviceHealth
from gateway.pipeline.ingest import Lane

STATE_LOG_S = 1.0  # state changes are logged at most once a second (the latest in health)
log = structlog.get_logger("drivers.serial.oximeter")

ERROR_REPORT_S = 60.0  # frame errors are counted and logged at most this often


class OximeterProtocol(enum.StrEnum):
    NONIN = "nonin"
    CMS50 = "cms50"

    @property
    def line(self) -> LineSettings:
        """The device's fixed line settings (Nonin 9600 8N1, CMS50D+ 19200 8O1)."""
        if self is OximeterProtocol.NONIN:
            return LineSettings(9600)
        return LineSettings(19200, parity=Parity.ODD)


@dataclass(frozen=True, slots=True)
class OximeterDriverConfig:
    name: str  # short label from the configuration, e.g. "spo2"
    protocol: OximeterProtocol
    port: PortSpec  # build it with ``line=protocol.line`` unless the device was reconfigured
    device: DeviceId  # the serial number on the oximeter's label (the stream carries none)
    reducer: ReducerConfig = field(default_factory=ReducerConfig)
    no_data_s: float = 10.0
    backoff: Backoff = field(default_factory=Backoff)
    poll_s: float = 0.25


class OximeterDriver:
    def __init__(
        self,
        config: OximeterDriverConfig,
        *,
        opener: Opener = SerialPort.open,
        monotonic: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.config = config
        self.name = f"serial.{config.protocol}.{config.name}"
        self.source = f"serial.{config.protocol}"
        self.readings = 0
        self.frame_errors = 0
        self._conn = PortConnection(
            config.port, name=self.name, backoff=config.backoff, opener=opener, monotonic=monotonic
        )
        self.progress = self._conn.progress  # the watchdog's view of this driver's loop
        self._monotonic = monotonic
        self._wallclock = wallclock
        self._stamps = ReceptionStamps()
        self._last_sample: OximetrySample | None = None
        self._last_sample_mono: float | None = None
        self._last_seen: datetime | None = None
        self._last_rejected: datetime | None = None  # of the latest frame error
        self._state_logged_mono = float("-inf")
        self._state_changes = 0  # state changes not logged since the last state line
        self._connected_mono: float | None = None
        self._reported_errors = 0
        self._error_report_mono = 0.0
        self._state = "connecting"
        self._log = log.bind(driver=self.name, device=str(config.device))

    # --- Driver protocol ----------------------------------------------------------------------

    async def measurements(self) -> AsyncIterator[Measurement]:
        reducer = OximetryReducer(self.config.reducer)  # kept over reconnects: same patient
        while True:
            port = await self._conn.open()
            self._connected_mono = self._monotonic()
            try:
                async with contextlib.aclosing(self._session(port, reducer)) as session:
                    async for measurement in session:
                        yield measurement
            except SerialPortError as exc:
                self._conn.lost(exc)
            finally:
                self._connected_mono = None
                await port.close()
                self._update_state()

    async def committed(self, measurements: Sequence[Measurement]) -> None:
        """Nothing to confirm: a streaming oximeter keeps no records."""

    def health(self) -> list[DeviceHealth]:
        return [
            DeviceHealth(
                device=str(self.config.device),
                driver=self.name,
                state=self.state(),
                last_seen=self._last_seen,
                expected_interval_s=self.config.reducer.interval_s,
                readings=self.readings,
                port=self.config.port.path,
                rejected_input=self.frame_errors,
                last_rejected=self._last_rejected,
            )
        ]

    def state(self) -> str:
        if self._connected_mono is None:
            return self._conn.state
        now = self._monotonic()
        since = (
            self._last_sample_mono if self._last_sample_mono is not None else (self._connected_mono)
        )
        if now - max(since, self._connected_mono) > self.config.no_data_s:
            return "no-data"
        if self._last_sample is None:
            return "connected"
        return "sensor-off" if self._last_sample.flags & NO_SIGNAL else "streaming"

    # --- one connection -----------------------------------------------------------------------

    async def _session(
        self,
        port: SerialPort,
        reducer: OximetryReducer,
    ) -> AsyncGenerator[Measurement, None]:
        decoder = (
            NoninDecoder() if self.config.protocol is OximeterProtocol.NONIN else Cms50Decoder()
        )
        while True:
            self.progress.turn(within_s=self.config.poll_s)
            data = await port.read(self.config.poll_s)
            now = self._monotonic()
            due: list[tuple[OximetryReading, bytes]] = []
            try:
                items = decoder.feed(data, now) if data else []
            except Exception as exc:  # noqa: BLE001 - the border: the device's bytes, not a crash
                # The framers never raise on bad bytes (property-tested); should one, the bytes
                # are dropped as a frame error and the framer starts afresh.
                decoder = (
                    NoninDecoder()
                    if self.config.protocol is OximeterProtocol.NONIN
                    else Cms50Decoder()
                )
                self._log.error("serial.oximeter.decoder_failed", error_type=type(exc).__name__)
                items = []
                self.frame_errors += 1
                self._last_rejected = self._wallclock()
            for item in items:
                if isinstance(item, OximetrySample):
                    self._last_sample, self._last_sample_mono = item, now
                    self._last_seen = self._wallclock()
                    due += [
                        (r, b"" if r.reason is Reason.INTERVAL else item.raw)
                        for r in reducer.feed(item)
                    ]
                else:
                    self.frame_errors += 1
                    self._last_rejected = self._wallclock()
            due += [(r, b"") for r in reducer.tick(now)]
            self._update_state()
            self._report_errors(now)
            for reading, raw in due:
                for measurement in self._measurements(reading, raw, now):
                    self.readings += 1
                    yield measurement

    @staticmethod
    def lane_of(m: Measurement) -> Lane:
        """Interval readings are the stream; every event reading (a desaturation starting,
        deepening or ending, the sensor coming off or back, artifact, out of track, low
        perfusion, the device's sensor alarm) is an alarm condition and never waits."""
        return Lane.STREAM if m.supplemental == Reason.INTERVAL.value else Lane.ALARM

    def _measurements(
        self,
        reading: OximetryReading,
        raw: bytes,
        now: float,
    ) -> tuple[Measurement, Measurement]:
        # No log line per event reading: "a desaturation now" is itself clinical (DESIGN inv. 3).
        received_at = self._stamps.stamp(
            self._wallclock() - timedelta(seconds=max(0.0, now - reading.time_s))
        )
        return to_measurements(
            reading,
            device=self.config.device,
            received_at=received_at,
            source=self.source,
            raw=raw,
            supplemental=reading.reason.value,
        )

    def _update_state(self) -> None:
        state = self.state()
        if state != self._state:
            # At most one line a second: a device flapping between states (noise that sometimes
            # looks like a packet) must not become a log flood; health shows the state as of now.
            now = self._monotonic()
            if now - self._state_logged_mono >= STATE_LOG_S:
                self._log.info(
                    "serial.oximeter.state",
                    state=state,
                    previous=self._state,
                    changes=self._state_changes + 1,
                )
                self._state_logged_mono, self._state_changes = now, 0
            else:
                self._state_changes += 1
            self._state = state

    def _report_errors(self, now: float) -> None:
        new = self.frame_errors - self._reported_errors
        if new and now - self._error_report_mono >= ERROR_REPORT_S:
            self._log.warning(
                "serial.oximeter.bad_bytes",
                errors=new,
                hint="line noise or wrong line settings; the framer resynchronises",
            )
            self._reported_errors, self._error_report_mono = self.frame_errors, now
