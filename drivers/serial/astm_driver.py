"""ASTM analyser driver: the gateway as E1381 receiver, results confirmed only once durable.

A thin pump between a :class:`~drivers.serial.port.SerialPort` and the sans-I/O
:class:`~drivers.serial.astm_link.AstmLink` (host role, ``HOLD_RECORDS``). Header, patient,
order and comment records are ACKed at once (they hold no reading). A result record (R) is
decoded (:func:`~drivers.serial.astm_results.lab_results`) and its measurements are yielded; the
final frame of that record stays unanswered until :meth:`AstmDriver.committed` has been called for
every one of them - i.e. until they are durable in the outbox - and only then is it ACKed. The
terminator (L), the last frame of the message, therefore goes out after every result of the
message was committed.

If the commit is late the analyser's reply timer (15 s, E1381 6.5.2) ends the transfer and it
sends the message again later: the results are stored twice and de-duplicated upstream by their
identifier, never lost. An unplug or power cycle drops the link state with the port; nothing the
analyser was told was accepted is lost, because nothing was accepted before it was durable. A
refused commit (outbox quota) is answered with NAK, so the analyser keeps the result.

An R record we cannot turn into a measurement (test code not in the table, unit not admitted,
header without a sender) is logged as a typed error (no value in the line) and ACKed: refusing it
would make the analyser resend the same message for ever and block every later result behind it.
So that it is not lost silently, it is first handed to ``report_unusable`` (the daemon seals an
``unusable-result`` gap record for the provider) and ACKed only once that is durable; if even the
gap cannot be stored, the record is answered with NAK and the analyser keeps it.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from drivers.serial.astm_link import (
    AcceptPolicy,
    AstmLink,
    DuplicateFrame,
    Event,
    FrameReceived,
    LinkProblem,
    LinkState,
    LinkTimers,
    MessageComplete,
    Role,
    TransferAborted,
)
from drivers.serial.astm_records import Delimiters, Message, Record, parse_record
from drivers.serial.astm_results import AstmOptions, LabResult, lab_results
from drivers.serial.connection import Backoff, Opener, PortConnection
from drivers.serial.errors import AstmRecordError
from drivers.serial.events import NeedData, SendBytes
from drivers.serial.port import PortSpec, SerialPort
from drivers.serial.port_errors import SerialPortError
from gateway.gaps import UnusableReading
from gateway.model import DeviceId, DeviceIdKind, Measurement, utcnow
from gateway.pipeline.health import DeviceHealth

log = structlog.get_logger("drivers.serial.astm")

LOGGED_PROBLEMS = 10  # link problems logged one by one; after that every 100th


@dataclass(frozen=True, slots=True)
class AstmDriverConfig:
    name: str  # short label from the configuration, e.g. "crp"
    port: PortSpec  # default line: 9600 8N1 (most analysers; check the analyser's LIS settings)
    options: AstmOptions = field(default_factory=AstmOptions)
    timers: LinkTimers = field(default_factory=LinkTimers)
    backoff: Backoff = field(default_factory=Backoff)
    poll_s: float = 0.25  # how often the link timers are looked at when the line is quiet


@dataclass(slots=True)
class _Held:
    """The final frame of an R record, waiting for its measurements to be committed."""

    pending: list[Measurement]
    refused: bool = False


@dataclass(slots=True)
class _MessageContext:
    delimiters: Delimiters | None = None
    header: Record | None = None
    order: Record | None = None


class AstmDriver:
    def __init__(
        self,
        config: AstmDriverConfig,
        *,
        opener: Opener = SerialPort.open,
        monotonic: Callable[[], float] = time.monotonic,
        wallclock: Callable[[], datetime] = utcnow,
        report_unusable: Callable[[UnusableReading], Awaitable[bool]] | None = None,
    ) -> None:
        self.config = config
        self.name = f"serial.astm.{config.name}"
        self.recent_results: deque[LabResult] = deque(maxlen=64)  # for diagnostics and tests
        self.readings = 0
        self.unusable_records = 0
        self.rejected_input = 0  # records and frames refused as malformed (health, status)
        self._last_rejected: datetime | None = None
        self._report_unusable = report_unusable
        self._unreported: list[UnusableReading] = []  # R records of the current frame, unusable
        self._conn = PortConnection(
            config.port, name=self.name, backoff=config.backoff, opener=opener, monotonic=monotonic
        )
        self.progress = self._conn.progress  # the watchdog's view of this driver's loop
        self._monotonic = monotonic
        self._wallclock = wallclock
        self._port: SerialPort | None = None
        self._link: AstmLink | None = None
        self._held: _Held | None = None
        self._device: DeviceId = config.options.fallback_device or DeviceId(
            DeviceIdKind.SERIAL, config.port.path.rsplit("/", 1)[-1]
        )
        self._last_seen: datetime | None = None
        self._log = log.bind(driver=self.name)

    # --- Driver protocol ----------------------------------------------------------------------

    async def measurements(self) -> AsyncIterator[Measurement]:
        while True:
            port = await self._conn.open()
            self._port = port
            try:
                async with contextlib.aclosing(self._session(port)) as session:
                    async for measurement in session:
                        yield measurement
            except SerialPortError as exc:
                if self._held is not None:
                    self._log.info(
                        "serial.astm.unconfirmed_on_loss",
                        hint="the analyser sends the result again",
                    )
                self._conn.lost(exc)
            finally:
                self._port, self._link, self._held = None, None, None
                await port.close()

    async def committed(self, measurements: Sequence[Measurement]) -> None:
        held = self._held
        if held is None:
            return  # a transfer that already ended: the analyser will send it again
        held.pending = [p for p in held.pending if not any(p is m for m in measurements)]
        if not held.pending and self._port is not None:
            self._port.wake()

    async def refused(self, measurements: Sequence[Measurement]) -> None:
        held = self._held
        if held is not None and any(p is m for p in held.pending for m in measurements):
            held.refused = True
            if self._port is not None:
                self._port.wake()

    def health(self) -> list[DeviceHealth]:
        state = self._conn.state
        if state == "connected" and self._link is not None:
            state = (
                "awaiting-commit"
                if self._held
                else ("idle" if self._link.state is LinkState.NEUTRAL else "receiving")
            )
        return [
            DeviceHealth(
                device=str(self._device),
                driver=self.name,
                state=state,
                last_seen=self._last_seen,
                expected_interval_s=None,
                readings=self.readings,
                port=self.config.port.path,
                rejected_input=self.rejected_input,
                last_rejected=self._last_rejected,
            )
        ]

    def _rejected(self) -> None:
        self.rejected_input += 1
        self._last_rejected = self._wallclock()

    # --- one connection -----------------------------------------------------------------------

    async def _session(self, port: SerialPort) -> AsyncGenerator[Measurement, None]:
        link = AstmLink(Role.HOST, policy=AcceptPolicy.HOLD_RECORDS, timers=self.config.timers)
        self._link = link
        context = _MessageContext()
        while True:
            self.progress.turn(within_s=self.config.poll_s)
            data = await port.read(self.config.poll_s)
            now = self._monotonic()
            if data:
                self._last_seen = self._wallclock()
                link.receive_data(data, now)
            else:
                link.tick(now)
            async for measurement in self._events(link, port, context):
                yield measurement
            self._decide(link, self._monotonic())
            async for measurement in self._events(link, port, context):
                yield measurement  # (a decision only makes link bytes; kept for uniformity)

    def _decide(self, link: AstmLink, now: float) -> None:
        held = self._held
        if held is None:
            return
        if held.refused:
            self._held = None
            link.reject(now)
            self._log.warning("serial.astm.result_refused", hint="outbox full; analyser keeps it")
        elif not held.pending:
            self._held = None
            if link.accept(now):
                self._log.info("serial.astm.result_confirmed")
            else:
                self._log.info(
                    "serial.astm.confirm_too_late",
                    hint="the analyser gave up waiting and will send it again",
                )

    async def _events(
        self,
        link: AstmLink,
        port: SerialPort,
        context: _MessageContext,
    ) -> AsyncIterator[Measurement]:
        while not isinstance(event := link.next_event(), NeedData):
            if isinstance(event, SendBytes):
                await port.write(event.data)
            elif isinstance(event, FrameReceived) and event.final and event.record is not None:
                measurements = self._record(event.record, context)
                unusable, self._unreported = self._unreported, []
                if measurements:
                    self._held = _Held(list(measurements))
                elif await self._accounted(unusable):
                    link.accept(self._monotonic())  # no reading in it, or its gap is durable
                else:
                    link.reject(self._monotonic())
                for measurement in measurements:
                    self.readings += 1
                    yield measurement
            else:
                self._note(event, context)

    def _note(self, event: Event, context: _MessageContext) -> None:
        if isinstance(event, LinkProblem):
            self._rejected()
            # Rate-bounded: a line full of noise must not become a log full of noise.
            if self.rejected_input <= LOGGED_PROBLEMS or self.rejected_input % 100 == 0:
                self._log.warning(
                    "serial.astm.link_problem",
                    **{
                        **event.error.fields,
                        "error": event.error.message,
                        "hint": event.error.hint,
                        "rejected": self.rejected_input,
                    },
                )
        elif isinstance(event, TransferAborted):
            self._held = None
            context.delimiters = context.header = context.order = None
            self._log.warning("serial.astm.transfer_aborted", reason=event.reason)
        elif isinstance(event, MessageComplete):  # EOT: the end, or the sender gave up early
            context.delimiters = context.header = context.order = None
            self._log.info(
                "serial.astm.transfer_ended", records=event.records, truncated=event.truncated
            )
        elif isinstance(event, DuplicateFrame):
            self._log.debug("serial.astm.duplicate_frame", frame=event.number)

    async def _accounted(self, unusable: Sequence[UnusableReading]) -> bool:
        """True once every unusable reading is in a durable gap record (or none is reported)."""
        if self._report_unusable is None:
            return True  # a driver used on its own (tests, decode): the log line is all there is
        for reading in unusable:
            if not await self._report_unusable(reading):
                self._log.warning(
                    "serial.astm.unusable_refused", hint="outbox full; analyser keeps it"
                )
                return False
        return True

    def _record(self, text: str, context: _MessageContext) -> list[Measurement]:
        """Measurements of one record; unusable R records are queued in ``_unreported``.

        This is the border between the analyser's bytes and our model: whatever goes wrong in
        turning a record into measurements is the device's typed error here (an unusable record,
        a gap record for an R), never an exception out of the driver."""
        kind = text[:1].upper()
        try:
            return self._parse(kind, text.rstrip("\r"), context)
        except AstmRecordError as exc:
            self._unusable(exc, kind, text)
        except Exception as exc:  # noqa: BLE001 - the border: any decoding failure is the device's
            # A decoder bug met by device input: the record is still accounted for (gap record,
            # then ACK) instead of stopping the line; the type says where to look.
            self._unusable(
                AstmRecordError("record could not be decoded", error_type=type(exc).__name__),
                kind,
                text,
            )
        return []

    def _parse(self, kind: str, text: str, context: _MessageContext) -> list[Measurement]:
        if kind == "H":
            context.delimiters = context.header = context.order = None  # even if this one is bad
            context.delimiters = Delimiters.from_header(text)
            context.header, context.order = parse_record(text, context.delimiters), None
            return []
        delimiters, header = context.delimiters, context.header
        if delimiters is None or header is None:
            raise AstmRecordError(
                "record outside a message (no valid header before it)", record_type=kind
            )
        if kind == "O":
            context.order = parse_record(text, delimiters)
        elif kind == "R":
            record = parse_record(text, delimiters)
            records = (header, *((context.order,) if context.order else ()), record)
            return self._results(Message(delimiters, records))
        return []

    def _results(self, message: Message) -> list[Measurement]:
        batch = lab_results(message, received_at=self._wallclock(), options=self.config.options)
        for error in batch.errors:
            self._unusable(error, "R", message.records[-1].raw)
        for warning in batch.warnings:
            self._log.warning("serial.astm.result_warning", error=warning.message, **warning.fields)
        for lab in batch.results:
            self.recent_results.append(lab)
            self._device = lab.measurement.device
            self._log.info(
                "serial.astm.result_received",
                test=lab.test_code,
                loinc=lab.loinc.code,
                status=lab.result_status,
            )
        return [lab.measurement for lab in batch.results]

    def _unusable(self, error: AstmRecordError, kind: str, text: str) -> None:
        self.unusable_records += 1
        self._rejected()
        # The error's fields first: ours (record_type) win a name clash instead of raising.
        self._log.error(
            "serial.astm.record_unusable",
            **{**error.fields, "record_type": kind, "error": error.message, "hint": error.hint},
        )
        if kind != "R":
            return  # headers, orders, comments: no reading in them (a bad H fails its R records)
        self._unreported.append(
            UnusableReading(
                device=str(self._device),
                source=self.name,
                error=error.message,
                received_at=self._wallclock(),
                raw=text.encode("latin-1", "replace"),  # records come from Latin-1 bytes
                fields=(
                    *((str(k), str(v)) for k, v in sorted(error.fields.items()) if v is not None),
                    ("record_type", kind),
                ),
            )
        )
