"""Glucose Service 0x1808: Glucose Measurement 0x2A18, and ``GlucoseJoiner`` that pairs each
measurement with its Glucose Measurement Context 0x2A34 by sequence number.

Measurement (GATT Specification Supplement): flags uint8 (bit 0 Time Offset; bit 1 Glucose
Concentration, Type and Sample Location; bit 2 concentration units 0 = kg/L, 1 = mol/L; bit 3
Sensor Status Annunciation; bit 4 Context Information Follows; bits 5-7 RFU), uint16 sequence
number, Date Time base time, [sint16 time offset, minutes], [SFLOAT concentration, uint8 type (low
nibble) / sample location (high nibble)], [uint16 sensor status annunciation].

Units (UCUM): kg/L is reported as mg/dL (1 kg/L = 10^5 mg/dL) and mol/L as mmol/L (10^3), the
units clinicians, LOINC (41653-7 / 14743-9) and gateway.fhir.codes use. Both are powers of ten,
so the
conversion only moves the decimal point: 0.00120 kg/L (SFLOAT mantissa 120, exponent -5) is
120 mg/dL with the same three significant digits, no rounding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import ClassVar

from drivers.ble.gatt_time import read_date_time, write_date_time
from drivers.ble.glucose_context import GlucoseContext
from drivers.ble.ieee11073 import Numeric, shift
from drivers.ble.measure import Reading
from drivers.ble.wire import OpenIntEnum, Reader, Writer, bit_names, check_presence
from gateway.errors import ModelError
from gateway.fhir import codes
from gateway.model import AbsentReason, MeasurementStatus

GLUCOSE_MEASUREMENT_UUID = 0x2A18

# Glucose codes not in gateway.fhir.codes
# (IEEE 11073-10101 / -10417, partition 2, 2 * 65536 + term).
MDC_CONC_GLU_GEN = 160020  # 2::28948 glucose, sample type not stated
MDC_CONC_GLU_VENOUS_WHOLEBLOOD = 160192  # 2::29120
MDC_CONC_GLU_VENOUS_PLASMA = 160196  # 2::29124
MDC_CONC_GLU_ARTERIAL_WHOLEBLOOD = 160200  # 2::29128
MDC_CONC_GLU_ARTERIAL_PLASMA = 160204  # 2::29132
MDC_CONC_GLU_CONTROL = 160208  # 2::29136 control solution
MDC_CONC_GLU_UNDETERMINED_WHOLEBLOOD = 160364  # 2::29292
MDC_CONC_GLU_UNDETERMINED_PLASMA = 160368  # 2::29296

FLAG_TIME_OFFSET = 1 << 0
FLAG_CONCENTRATION = 1 << 1
FLAG_MOL_PER_L = 1 << 2
FLAG_SENSOR_STATUS = 1 << 3
FLAG_CONTEXT_FOLLOWS = 1 << 4
KNOWN_FLAGS = 0x1F


class GlucoseType(OpenIntEnum):
    CAPILLARY_WHOLE_BLOOD = 1
    CAPILLARY_PLASMA = 2
    VENOUS_WHOLE_BLOOD = 3
    VENOUS_PLASMA = 4
    ARTERIAL_WHOLE_BLOOD = 5
    ARTERIAL_PLASMA = 6
    UNDETERMINED_WHOLE_BLOOD = 7
    UNDETERMINED_PLASMA = 8
    INTERSTITIAL_FLUID = 9
    CONTROL_SOLUTION = 10


class SampleLocation(OpenIntEnum):
    FINGER = 1
    ALTERNATE_SITE_TEST = 2
    EARLOBE = 3
    CONTROL_SOLUTION = 4
    NOT_AVAILABLE = 15


_TYPE_CODE = {
    GlucoseType.CAPILLARY_WHOLE_BLOOD: codes.MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD,
    GlucoseType.CAPILLARY_PLASMA: codes.MDC_CONC_GLU_CAPILLARY_PLASMA,
    GlucoseType.VENOUS_WHOLE_BLOOD: MDC_CONC_GLU_VENOUS_WHOLEBLOOD,
    GlucoseType.VENOUS_PLASMA: MDC_CONC_GLU_VENOUS_PLASMA,
    GlucoseType.ARTERIAL_WHOLE_BLOOD: MDC_CONC_GLU_ARTERIAL_WHOLEBLOOD,
    GlucoseType.ARTERIAL_PLASMA: MDC_CONC_GLU_ARTERIAL_PLASMA,
    GlucoseType.UNDETERMINED_WHOLE_BLOOD: MDC_CONC_GLU_UNDETERMINED_WHOLEBLOOD,
    GlucoseType.UNDETERMINED_PLASMA: MDC_CONC_GLU_UNDETERMINED_PLASMA,
    GlucoseType.INTERSTITIAL_FLUID: codes.MDC_CONC_GLU_ISF,
    GlucoseType.CONTROL_SOLUTION: MDC_CONC_GLU_CONTROL,
}

SENSOR_STATUS_NAMES = {
    0: "device_battery_low", 1: "sensor_malfunction", 2: "sample_size_insufficient",
    3: "strip_insertion_error", 4: "strip_type_incorrect", 5: "result_too_high",
    6: "result_too_low", 7: "sensor_temperature_too_high", 8: "sensor_temperature_too_low",
    9: "sensor_read_interrupted", 10: "general_device_fault", 11: "time_fault",
}
# Bits 1-10: the meter doubts its own result. Bit 11: its clock is wrong, so is the time stamp.
_QUESTIONABLE_BITS = 0b111_1111_1110
STATUS_TIME_FAULT = 1 << 11


def mdc_for_type(sample_type: GlucoseType | None) -> int:
    return MDC_CONC_GLU_GEN if sample_type is None else _TYPE_CODE.get(sample_type,
                                                                      MDC_CONC_GLU_GEN)


@dataclass(frozen=True, slots=True)
class GlucoseMeasurement:
    """A parsed 0x2A18 value; ``flags`` as sent, concentration in the transmitted unit."""

    SOURCE: ClassVar[str] = "ble.glucose"

    flags: int
    sequence_number: int
    base_time: datetime | None  # None: the meter sent an unknown date
    time_offset_min: int | None = None
    concentration: Numeric | None = None  # kg/L or mol/L (flags bit 2)
    sample_type: GlucoseType | None = None
    sample_location: SampleLocation | None = None
    sensor_status: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.flags <= 0xFF:
            raise ModelError("flags must fit one byte")
        check_presence(self.flags, FLAG_TIME_OFFSET, self.time_offset_min is not None,
                       "time_offset_min")
        for value, name in ((self.concentration, "concentration"),
                            (self.sample_type, "sample_type"),
                            (self.sample_location, "sample_location")):
            check_presence(self.flags, FLAG_CONCENTRATION, value is not None, name)
        check_presence(self.flags, FLAG_SENSOR_STATUS, self.sensor_status is not None,
                       "sensor_status")

    @property
    def context_follows(self) -> bool:
        return bool(self.flags & FLAG_CONTEXT_FOLLOWS)

    @property
    def unit(self) -> str:
        return "mmol/L" if self.flags & FLAG_MOL_PER_L else "mg/dL"

    @property
    def device_time(self) -> datetime | None:
        """Base time plus time offset: the meter's wall-clock time of the measurement."""
        if self.base_time is None:
            return None
        return self.base_time + timedelta(minutes=self.time_offset_min or 0)

    @classmethod
    def decode(cls, payload: bytes) -> GlucoseMeasurement:
        reader = Reader(payload, GLUCOSE_MEASUREMENT_UUID)
        flags = reader.u8("flags")
        sequence = reader.u16("sequence number")
        base_time = read_date_time(reader, "base time")
        offset = reader.s16("time offset") if flags & FLAG_TIME_OFFSET else None
        concentration = sample_type = location = None
        if flags & FLAG_CONCENTRATION:
            concentration = reader.sfloat("glucose concentration")
            both = reader.u8("type-sample location")
            sample_type, location = GlucoseType(both & 0x0F), SampleLocation(both >> 4)
        status = reader.u16("sensor status annunciation") if flags & FLAG_SENSOR_STATUS else None
        reader.done()
        if base_time is not None and offset is not None:
            try:
                base_time + timedelta(minutes=offset)
            except OverflowError:
                raise reader.error("time offset moves the base time out of range") from None
        return cls(flags, sequence, base_time, offset, concentration, sample_type, location,
                   status)

    def encode(self) -> bytes:
        writer = Writer().u8(self.flags, "flags").u16(self.sequence_number, "sequence number")
        write_date_time(writer, self.base_time)
        if self.time_offset_min is not None:
            writer.s16(self.time_offset_min, "time offset")
        if self.concentration is not None and self.sample_type is not None \
                and self.sample_location is not None:
            if not (0 <= self.sample_type <= 0x0F and 0 <= self.sample_location <= 0x0F):
                raise ModelError("type and sample location are 4-bit codes")
            writer.sfloat(self.concentration)
            writer.u8(int(self.sample_type) | int(self.sample_location) << 4, "type-location")
        if self.sensor_status is not None:
            writer.u16(self.sensor_status, "sensor status annunciation")
        return writer.getvalue()

    def _status(self) -> MeasurementStatus:
        out = MeasurementStatus.NONE
        if (self.sensor_status or 0) & _QUESTIONABLE_BITS:
            out |= MeasurementStatus.QUESTIONABLE
        # A control-solution check tests the meter, not the patient: never clinical data.
        if self.sample_type == GlucoseType.CONTROL_SOLUTION \
                or self.sample_location == SampleLocation.CONTROL_SOLUTION:
            out |= MeasurementStatus.TEST_DATA
        return out

    def readings(self) -> tuple[Reading, ...]:
        """One reading; a record without a concentration (an error record) is reported as
        absent (NOT_MEASURED) so that the record is accounted for, not dropped."""
        number: Numeric = AbsentReason.NOT_MEASURED
        if isinstance(self.concentration, AbsentReason):
            number = self.concentration
        elif self.concentration is not None:
            number = shift(self.concentration, 3 if self.flags & FLAG_MOL_PER_L else 5)
        return (
            Reading.of(
                mdc_for_type(self.sample_type),
                number,
                self.unit,
                device_time=self.device_time,
                clock_set=not (self.sensor_status or 0) & STATUS_TIME_FAULT,
                status=self._status(),
                record_id=self.sequence_number,
            ),
        )

    def flag_summary(self) -> dict[str, object]:
        return {
            "sequence_number": self.sequence_number,
            "time_offset_present": self.time_offset_min is not None,
            "time_offset_min": self.time_offset_min,
            "concentration_present": self.concentration is not None,
            "mol_per_l": bool(self.flags & FLAG_MOL_PER_L),
            "sample_type": None if self.sample_type is None else self.sample_type.label,
            "sample_location": None if self.sample_location is None
            else self.sample_location.label,
            "sensor_status": None if self.sensor_status is None
            else bit_names(self.sensor_status, SENSOR_STATUS_NAMES),
            "context_follows": self.context_follows,
            "unknown_flags": self.flags & ~KNOWN_FLAGS,
        }


@dataclass(frozen=True, slots=True)
class GlucoseRecord:
    """A glucose measurement with its context, when the meter sent one."""

    SOURCE: ClassVar[str] = GlucoseMeasurement.SOURCE

    measurement: GlucoseMeasurement
    context: GlucoseContext | None = None

    def readings(self) -> tuple[Reading, ...]:
        return self.measurement.readings()


@dataclass
class GlucoseJoiner:
    """Pairs Glucose Measurements with their Contexts by sequence number (sans-I/O state machine).

    GLS sends a context right after its measurement when the measurement's "context information
    follows" flag is set. Feed both characteristics in arrival order; completed records come out.
    A measurement still waiting is released without context by ``flush()`` (call it when the RACP
    procedure completes or the link drops) or when more than ``max_pending`` are waiting, so no
    measurement is ever held back for good. A context whose measurement is unknown is counted in
    ``unmatched_contexts`` and otherwise ignored.
    """

    max_pending: int = 8
    unmatched_contexts: int = 0
    _pending: dict[int, GlucoseMeasurement] = field(default_factory=dict, repr=False)

    def add_measurement(self, measurement: GlucoseMeasurement) -> tuple[GlucoseRecord, ...]:
        out: list[GlucoseRecord] = []
        repeat = self._pending.pop(measurement.sequence_number, None)
        if repeat is not None:
            out.append(GlucoseRecord(repeat))
        if not measurement.context_follows:
            out.append(GlucoseRecord(measurement))
            return tuple(out)
        self._pending[measurement.sequence_number] = measurement
        while len(self._pending) > self.max_pending:
            oldest = next(iter(self._pending))
            out.append(GlucoseRecord(self._pending.pop(oldest)))
        return tuple(out)

    def add_context(self, context: GlucoseContext) -> tuple[GlucoseRecord, ...]:
        measurement = self._pending.pop(context.sequence_number, None)
        if measurement is None:
            self.unmatched_contexts += 1
            return ()
        return (GlucoseRecord(measurement, context),)

    def flush(self) -> tuple[GlucoseRecord, ...]:
        out = tuple(GlucoseRecord(m) for m in self._pending.values())
        self._pending.clear()
        return out

    @property
    def pending(self) -> int:
        return len(self._pending)
