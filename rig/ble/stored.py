"""Virtual devices with stored records behind a Record Access Control Point: a glucose meter
(records keyed by sequence number, measurement + optional context) and a CGM sensor (records
keyed by time offset, also notified live while subscribed).

The RACP procedure as GLS / CGMS define it: the collector enables indications on the RACP and
notifications on the measurement characteristic, writes a request; the device notifies the
selected records in key order and closes with a Response Code (or answers Number of Stored
Records) by indication. A write without RACP indications enabled fails with ATT error 0xFD
(CCCD improperly configured); a second request while one runs fails with 0xFE (procedure
already in progress) - except Abort, which stops the transfer after the record in flight and
is answered Success. A link lost mid-transfer ends the procedure; the records stay stored, so
"report >= last + 1" after reconnecting delivers the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar

from drivers.ble.cgm import (
    CGM_MEASUREMENT_UUID,
    CGM_SESSION_START_TIME_UUID,
    CgmMeasurement,
    CgmRecord,
    CgmSessionStartTime,
    DstOffset,
)
from drivers.ble.glucose import (
    FLAG_CONCENTRATION,
    FLAG_CONTEXT_FOLLOWS,
    FLAG_MOL_PER_L,
    FLAG_SENSOR_STATUS,
    FLAG_TIME_OFFSET,
    GLUCOSE_MEASUREMENT_UUID,
    GlucoseMeasurement,
    GlucoseType,
    SampleLocation,
)
from drivers.ble.glucose_context import GLUCOSE_CONTEXT_UUID, GlucoseContext
from drivers.ble.racp import RACP_UUID, OpCode, Operator, RacpRequest, ResponseCode
from gateway.errors import GatewayError
from rig.ble.errors import AttError, LinkLostError
from rig.ble.gatt import (
    ATT_CCCD_IMPROPERLY_CONFIGURED,
    ATT_PROCEDURE_IN_PROGRESS,
    Characteristic,
    Service,
)
from rig.ble.peripheral import Peripheral
from rig.ble.racp_server import Outcome, RecordStore, StoredRecord, respond

GLUCOSE_SERVICE_UUID = 0x1808
GLUCOSE_FEATURE_UUID = 0x2A51
CGM_SERVICE_UUID = 0x181F
CGM_FEATURE_UUID = 0x2AA8
CGM_STATUS_UUID = 0x2AA9
CGM_SESSION_RUN_TIME_UUID = 0x2AAB


class StoredRecordsDevice(Peripheral):
    """A peripheral with a RecordStore and the RACP procedure around it."""

    record_uuid: ClassVar[int]

    def __init__(self, address: str, **kwargs: Any) -> None:
        super().__init__(address, **kwargs)
        self.store = RecordStore()
        self._transfer: asyncio.Task[None] | None = None
        self._abort = False

    def racp_characteristic(self) -> Characteristic:
        return Characteristic(RACP_UUID, ("write", "indicate"), write=self._racp_write,
                              secure=self.requires_bond)

    def on_disconnect(self) -> None:
        super().on_disconnect()
        self._transfer = None
        self._abort = False

    def _racp_write(self, value: bytes, _with_response: bool) -> None:
        if self.link is None or not self.link.subscribed(RACP_UUID):
            raise AttError(ATT_CCCD_IMPROPERLY_CONFIGURED, "RACP indications not enabled")
        busy = self._transfer is not None and not self._transfer.done()
        try:
            request = RacpRequest.decode(value)
        except GatewayError:
            op = OpCode(value[0]) if value else OpCode.REPORT_STORED_RECORDS
            self._answer(respond(op, ResponseCode.INVALID_OPERATOR))
            return
        if request.op_code == OpCode.ABORT_OPERATION:
            if request.operator != Operator.NULL or request.operand:
                self._answer(respond(OpCode.ABORT_OPERATION, ResponseCode.INVALID_OPERATOR))
            else:
                self._abort = busy
                self.spawn(self._abort_transfer(), link_scoped=True, name="racp-abort")
            return
        if busy:
            raise AttError(ATT_PROCEDURE_IN_PROGRESS, "a RACP procedure is running")
        self._transfer = self.spawn(self._run(self.store.handle(request)), link_scoped=True,
                                    name="racp")

    def _answer(self, response: bytes) -> None:
        self.spawn(self._run(Outcome((), response)), link_scoped=True, name="racp-answer")

    async def _run(self, outcome: Outcome) -> None:
        with contextlib.suppress(LinkLostError):
            for record in outcome.records:
                if self._abort:
                    return  # _abort_transfer answers
                for uuid16, payload in record.values:
                    await self.send_record(uuid16, payload, counts=uuid16 == self.record_uuid)
            await self.send_record(RACP_UUID, outcome.response, counts=False)

    async def _abort_transfer(self) -> None:
        running = self._transfer
        if running is not None and not running.done():
            await asyncio.wait([running])
        self._abort = False
        with contextlib.suppress(LinkLostError):
            await self.send_record(RACP_UUID, respond(OpCode.ABORT_OPERATION,
                                                      ResponseCode.SUCCESS), counts=False)


class GlucoseMeter(StoredRecordsDevice):
    kind = "glucose-meter"
    default_name = "Glucose Meter"
    record_uuid = GLUCOSE_MEASUREMENT_UUID

    def __init__(self, address: str, *, first_sequence: int = 1, mol_per_l: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(address, **kwargs)
        self.next_sequence = first_sequence
        self.mol_per_l = mol_per_l

    def profile_services(self) -> tuple[Service, ...]:
        secure = self.requires_bond
        return (Service(GLUCOSE_SERVICE_UUID, (
            Characteristic(GLUCOSE_MEASUREMENT_UUID, ("notify",), secure=secure),
            Characteristic(GLUCOSE_CONTEXT_UUID, ("notify",), secure=secure),
            Characteristic(GLUCOSE_FEATURE_UUID, ("read",), read=lambda: bytes(2)),
            self.racp_characteristic(),
        )),)

    def measure(self, concentration: Decimal | str, *,
                sample_type: GlucoseType = GlucoseType.CAPILLARY_PLASMA,
                location: SampleLocation = SampleLocation.FINGER,
                sensor_status: int | None = None, context: GlucoseContext | None = None,
                when: datetime | None = None) -> GlucoseMeasurement:
        """Store a reading (kg/L, or mol/L with ``mol_per_l``) under the next sequence number."""
        sequence = self.next_sequence
        self.next_sequence = (sequence + 1) & 0xFFFF
        flags = FLAG_TIME_OFFSET | FLAG_CONCENTRATION | (FLAG_MOL_PER_L if self.mol_per_l else 0) \
            | (FLAG_SENSOR_STATUS if sensor_status is not None else 0) \
            | (FLAG_CONTEXT_FOLLOWS if context is not None else 0)
        value = GlucoseMeasurement(flags, sequence, when or self.clock.now(), 0,
                                   Decimal(str(concentration)), sample_type, location,
                                   sensor_status)
        values = [(GLUCOSE_MEASUREMENT_UUID, self._maybe_malformed(value.encode()))]
        if context is not None:
            linked = dataclasses.replace(context, sequence_number=sequence)
            values.append((GLUCOSE_CONTEXT_UUID, linked.encode()))
        self.store.add(StoredRecord(sequence, tuple(values)))
        return value

    def fill(self, count: int) -> list[GlucoseMeasurement]:
        """Store ``count`` readings, 90..(90+count-1) mg/dL as kg/L (a test's backlog)."""
        return [self.measure(Decimal(90 + i).scaleb(-5)) for i in range(count)]


class CgmSensor(StoredRecordsDevice):
    """A CGM session: each ``measure`` is stored under its time offset (minutes since the
    session start) and notified live to a subscribed collector."""

    kind = "cgm"
    default_name = "CGM"
    record_uuid = CGM_MEASUREMENT_UUID

    def __init__(self, address: str, *, interval_min: int = 5, **kwargs: Any) -> None:
        super().__init__(address, **kwargs)
        self.interval_min = interval_min
        self.next_offset = 0
        self.session_start = self.clock.now()

    def profile_services(self) -> tuple[Service, ...]:
        secure = self.requires_bond
        # CGM Feature: no optional features, type ISF (9) at subcutaneous tissue (5), no CRC.
        feature = bytes(3) + bytes((0x59,)) + b"\xff\xff"
        return (Service(CGM_SERVICE_UUID, (
            Characteristic(CGM_MEASUREMENT_UUID, ("notify",), secure=secure),
            Characteristic(CGM_FEATURE_UUID, ("read",), read=lambda: feature),
            Characteristic(CGM_STATUS_UUID, ("read",),
                           read=lambda: self.next_offset.to_bytes(2, "little") + bytes(3)),
            Characteristic(CGM_SESSION_START_TIME_UUID, ("read", "write"),
                           read=self._read_start, write=self._write_start),
            Characteristic(CGM_SESSION_RUN_TIME_UUID, ("read",),
                           read=lambda: (14 * 24).to_bytes(2, "little")),
            self.racp_characteristic(),
        )),)

    def _read_start(self) -> bytes:
        quarters = self.clock.zone // timedelta(minutes=15)
        return CgmSessionStartTime(self.session_start, quarters, DstOffset.STANDARD_TIME).encode()

    def _write_start(self, value: bytes, _with_response: bool) -> None:
        with contextlib.suppress(GatewayError):
            self.session_start = CgmSessionStartTime.decode(value).start

    def measure(self, glucose_mg_dl: Decimal | str | int, *, offset_min: int | None = None
                ) -> CgmRecord:
        offset = self.next_offset if offset_min is None else offset_min
        self.next_offset = offset + self.interval_min
        record = CgmRecord(0, Decimal(str(glucose_mg_dl)), offset)
        payload = self._maybe_malformed(CgmMeasurement((record,)).encode())
        self.store.add(StoredRecord(offset, ((CGM_MEASUREMENT_UUID, payload),)))
        self.send_raw(CGM_MEASUREMENT_UUID, payload)
        return record
