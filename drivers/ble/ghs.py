"""Generic Health Sensor Service (GHS, 0x1840): Live Health Observations 0x2B8B and Stored Health
Observations 0x2BDD, decoded to the measurement model.

Assigned numbers (Bluetooth SIG Assigned Numbers, "16-bit UUIDs": service 0x1840 Generic Health
Sensor; characteristics 0x2B8B Live Health Observations, 0x2BDD Stored Health Observations,
0x2BF1 Observation Schedule Changed, 0x2BF3 Health Sensor Features, 0x2BF4 GHS Control Point,
0x2A52 Record Access Control Point; service 0x183F Elapsed Time, characteristic 0x2BF2 Current
Elapsed Time). Checked against two public copies of the assigned-numbers list and the two GHS
prototypes named in ghs_acom.py.

Characteristic values (GHSS v1.0, Live / Stored Health Observations): a Segmentation Header octet
(ghs_segment.py), then a piece of the body. Live: the body is one observation. Stored: the body
is a uint32 Record Number, then one observation. ``gatewayctl decode`` takes one value; it must
be a whole body (first and last segment bits set). The session reassembles with
``ghs_segment.Reassembler`` and decodes each body with ``HealthObservation.decode_body``.

Mapping to the model (``readings()``; ``unusable()`` names what could not be mapped, never
silently dropped):

- the observation type (MDC code) is the reading's type; a bundle member without its own header
  fields takes the bundle's (type, time stamp, duration, status, patient, supplemental info);
- numeric: the FLOAT with its precision and the UCUM unit of its MDC unit code (``UCUM_UNITS``;
  an unknown unit code is unusable, never guessed); NaN, NRes and the infinities give no value
  and their absent reason;
- simple discrete: the code as a coded value (``value_code``; FHIR valueCodeableConcept), unit
  "1"; compound discrete: one such reading per code; compound state/event: the value bits as
  the (numeric) value, unit "1";
- compound: one reading with one component per part (as a blood pressure), numeric or discrete
  parts only;
- sample array: one reading whose ``samples`` are the scaled samples, in order, with the sample
  period in ms (FHIR SampledData); a special scale factor or offset gives no samples and its
  absent reason; a special, zero or negative period is unusable (SampledData needs one);
  ``samples per period`` is not kept (one sample per period is all FHIR SampledData says);
- string: one reading with the text (FHIR valueString), unit "1"; a string part of a compound
  is unusable (a component has no text value);
- time stamp: a tick counter gives no device time; a time of day not on the current timeline
  gives an untrusted clock (TimeQuality UNSYNCED); UTC or a TZ/DST offset give an aware time;
- Measurement Status: invalid, questionable, not available, calibrating, test data and early
  estimate map to MeasurementStatus; the stored Record Number is the device record id.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import ClassVar, TypeAlias

from drivers.ble.ghs_acom import read_observation
from drivers.ble.ghs_encode import encode_observation
from drivers.ble.ghs_segment import SegmentationError, split_segments
from drivers.ble.ghs_values import (
    FLAG_DURATION,
    FLAG_PATIENT,
    FLAG_STATUS,
    FLAG_SUPPLEMENTAL,
    FLAG_TIME_STAMP,
    FLAG_TYPE,
    VALUE_CLASS,
    AnyObservation,
    Bundle,
    ComponentValue,
    CompoundDiscreteValue,
    CompoundValue,
    DiscreteValue,
    NumericValue,
    ObservationClass,
    ObservationHeader,
    SampleArrayValue,
    StateEventValue,
    StringValue,
    UnsupportedObservation,
)
from drivers.ble.ieee11073 import Numeric
from drivers.ble.measure import Reading, split
from drivers.ble.wire import Reader, Writer
from gateway.model import MAX_SAMPLES, MAX_TEXT_CHARS, AbsentReason, Component, MeasurementStatus

GHS_SERVICE_UUID = 0x1840
LIVE_HEALTH_OBSERVATIONS_UUID = 0x2B8B
STORED_HEALTH_OBSERVATIONS_UUID = 0x2BDD
ELAPSED_TIME_SERVICE_UUID = 0x183F  # the device clock GHS time stamps come from
# Health Sensor Features, Observation Schedule Changed, GHS Control Point: ghs_features.py

# MDC unit codes (IEEE 11073-10101 partition 4, "dimensions": base code + prefix in the low five
# bits, e.g. milli = 18) -> UCUM. Only units whose code we are sure of; 544, 2720, 3872 and 4274
# also appear in the GHS prototypes' vectors.
UCUM_UNITS: dict[int, str] = {
    512: "1",  # MDC_DIM_DIMLESS
    544: "%",  # MDC_DIM_PERCENT
    1280: "m", 1297: "cm",  # MDC_DIM_X_M, MDC_DIM_CENTI_M
    1600: "L", 1618: "mL",  # MDC_DIM_X_L, MDC_DIM_MILLI_L
    1728: "g", 1731: "kg",  # MDC_DIM_X_G, MDC_DIM_KILO_G
    1952: "kg/m2",  # MDC_DIM_KG_PER_M_SQ
    2176: "s", 2194: "ms", 2208: "min",  # MDC_DIM_SEC, MDC_DIM_MILLI_SEC, MDC_DIM_MIN
    2720: "/min",  # MDC_DIM_BEAT_PER_MIN
    2784: "/min",  # MDC_DIM_RESP_PER_MIN
    3072: "L/min",  # MDC_DIM_X_L_PER_MIN
    3843: "kPa",  # MDC_DIM_KILO_PASCAL
    3872: "mm[Hg]",  # MDC_DIM_MMHG
    4274: "mV",  # MDC_DIM_MILLI_VOLT
    4544: "[degF]",  # MDC_DIM_FAHR
    6048: "Cel",  # MDC_DIM_DEGC
}
DIMENSIONLESS = "1"

_STATUS_MAP = {
    0: MeasurementStatus.INVALID,
    1: MeasurementStatus.QUESTIONABLE,
    2: MeasurementStatus.NOT_AVAILABLE,
    3: MeasurementStatus.CALIBRATION_ONGOING,
    4: MeasurementStatus.TEST_DATA,
    5: MeasurementStatus.EARLY_INDICATION,
}


@dataclass(frozen=True, slots=True)
class UnusableObservation:
    """An observation (or part) that has no place in the model: why, and what it was."""

    class_type: int
    observation_type: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class Part:
    """One observation value with the header it carries or inherits from its bundle."""

    header: ObservationHeader
    mdc_code: int
    value: ComponentValue | CompoundValue


Walked: TypeAlias = Part | UnusableObservation


def _merge(own: ObservationHeader, bundle: ObservationHeader | None) -> ObservationHeader:
    """``own`` with the fields it lacks taken from ``bundle`` (flags recomputed)."""
    if bundle is None:
        return own
    merged = own
    for name, bit in (("observation_type", FLAG_TYPE), ("time_stamp", FLAG_TIME_STAMP),
                      ("duration_s", FLAG_DURATION), ("status", FLAG_STATUS),
                      ("patient", FLAG_PATIENT), ("supplemental", FLAG_SUPPLEMENTAL)):
        if getattr(merged, name) is None and getattr(bundle, name) is not None:
            merged = replace(merged, flags=merged.flags | bit, **{name: getattr(bundle, name)})
    return merged


def walk(observation: AnyObservation, bundle: ObservationHeader | None = None) -> Iterator[Walked]:
    """Every value of ``observation`` (bundle members in order), or why one is unusable."""
    if isinstance(observation, UnsupportedObservation):
        yield UnusableObservation(observation.class_type, None, observation.reason)
        return
    header = _merge(observation.header, bundle)
    if isinstance(observation, Bundle):
        for member in observation.members:
            yield from walk(member, header)
        return
    if not header.observation_type:  # absent, or 0: no MDC code is 0
        yield UnusableObservation(observation.class_type, header.observation_type,
                                  "no observation type")
        return
    yield Part(header, header.observation_type, observation.value)


def _status(header: ObservationHeader) -> MeasurementStatus:
    out = MeasurementStatus.NONE
    for bit, flag in _STATUS_MAP.items():
        if (header.status or 0) >> bit & 1:
            out |= flag
    return out


def _code_value(code: int) -> Decimal:
    return Decimal(code)


def _component(type_code: int, value: ComponentValue) -> Component | str:
    """A compound part as a model component, or why it cannot be one."""
    if isinstance(value, NumericValue):
        unit = UCUM_UNITS.get(value.unit_code)
        if unit is None:
            return f"unit code {value.unit_code} has no UCUM mapping here"
        number, absent = split(value.value)
        return Component(type_code, number, unit, absent_reason=absent)
    if isinstance(value, DiscreteValue):
        return Component(type_code, _code_value(value.code), DIMENSIONLESS)
    return f"compound part of class {int(_class_of(value))} has no model component"


def _class_of(value: ComponentValue | CompoundValue) -> ObservationClass:
    return VALUE_CLASS[type(value)]


@dataclass(frozen=True, slots=True)
class HealthObservation:
    """One reassembled body of 0x2B8B (``record_number`` None) or 0x2BDD."""

    SOURCE: ClassVar[str] = "ble.generic_health_sensor"

    observation: AnyObservation
    record_number: int | None = None

    @property
    def uuid16(self) -> int:
        return LIVE_HEALTH_OBSERVATIONS_UUID if self.record_number is None \
            else STORED_HEALTH_OBSERVATIONS_UUID

    @classmethod
    def decode_body(cls, body: bytes, *, stored: bool) -> HealthObservation:
        uuid16 = STORED_HEALTH_OBSERVATIONS_UUID if stored else LIVE_HEALTH_OBSERVATIONS_UUID
        reader = Reader(body, uuid16)
        record = reader.uint(4, "record number") if stored else None
        observation = read_observation(reader)
        reader.done()
        return cls(observation, record)

    @classmethod
    def decode_notification(cls, payload: bytes, *, stored: bool) -> HealthObservation:
        """One notified / indicated value that carries a whole body (``gatewayctl decode``)."""
        uuid16 = STORED_HEALTH_OBSERVATIONS_UUID if stored else LIVE_HEALTH_OBSERVATIONS_UUID
        header, body = split_segments(uuid16, payload)
        if not header.whole:
            raise SegmentationError(uuid16, "only part of a segmented observation (first="
                                    f"{header.first}, last={header.last}); reassemble first")
        return cls.decode_body(body, stored=stored)

    def encode_body(self) -> bytes:
        writer = Writer()
        if self.record_number is not None:
            writer.uint(self.record_number, 4, "record number")
        return writer.raw(encode_observation(self.observation)).getvalue()

    # -- to the model --------------------------------------------------------------------------

    def _reading(self, part: Part, number: Numeric, unit: str) -> Reading:
        stamp = part.header.time_stamp
        return Reading.of(
            part.mdc_code, number, unit,
            device_time=None if stamp is None else stamp.device_time(),
            clock_set=stamp is None or stamp.tick_counter or stamp.current_timeline,
            status=_status(part.header), record_id=self.record_number,
            supplemental=",".join(map(str, part.header.supplemental or ())),
        )

    def _measured(self, part: Part, value: NumericValue | SampleArrayValue,
                  unusable: UnusableObservation) -> Reading | UnusableObservation:
        unit = UCUM_UNITS.get(value.unit_code)
        if unit is None:
            return replace(unusable, reason=f"unit code {value.unit_code} has no UCUM mapping "
                                            "here")
        if isinstance(value, NumericValue):
            return self._reading(part, value.value, unit)
        scaled = value.scaled()
        if isinstance(scaled, AbsentReason):
            return self._reading(part, scaled, unit)
        if not scaled or len(scaled) > MAX_SAMPLES:
            return replace(unusable, reason=f"sample array without samples or over {MAX_SAMPLES}")
        period = value.period_s
        if isinstance(period, AbsentReason) or period <= 0:
            return replace(unusable, reason="sample array without a positive sample period")
        period_ms = period.scaleb(3)
        if period_ms.as_tuple().exponent > 0:  # type: ignore[operator] # finite: int exponent
            period_ms = period_ms.quantize(Decimal(1))  # 1E+2 ms is written 100
        return replace(self._reading(part, AbsentReason.NAN, unit), absent_reason=None,
                       samples=scaled, sample_period_ms=period_ms)

    def _coded(self, part: Part, code: int) -> Reading | UnusableObservation:
        if not 0 < code < 1 << 32:  # no MDC code is 0
            return UnusableObservation(int(_class_of(part.value)), part.mdc_code,
                                       "discrete value 0 is no MDC code")
        return replace(self._reading(part, AbsentReason.NAN, DIMENSIONLESS), absent_reason=None,
                       value_code=code)

    def _part_readings(self, part: Part) -> Iterator[Reading | UnusableObservation]:
        value = part.value
        unusable = UnusableObservation(int(_class_of(value)), part.mdc_code, "")
        if isinstance(value, NumericValue | SampleArrayValue):
            yield self._measured(part, value, unusable)
        elif isinstance(value, DiscreteValue):
            yield self._coded(part, value.code)
        elif isinstance(value, StateEventValue):
            yield self._reading(part, _code_value(value.value), DIMENSIONLESS)
        elif isinstance(value, CompoundDiscreteValue):
            if not value.codes:
                yield replace(unusable, reason="compound discrete without terms")
            for code in value.codes:
                yield self._coded(part, code)
        elif isinstance(value, StringValue):
            if not value.text or len(value.text) > MAX_TEXT_CHARS:
                yield replace(unusable, reason="string observation empty or too long")
            else:
                yield replace(self._reading(part, AbsentReason.NAN, DIMENSIONLESS),
                              absent_reason=None, text=value.text)
        else:
            parts = [_component(c.component_type, c.value) for c in value.components]
            why = next((p for p in parts if isinstance(p, str)), None)
            components = tuple(p for p in parts if isinstance(p, Component))
            if why is not None or not components:
                yield replace(unusable, reason=why or "compound without components")
            else:
                yield replace(self._reading(part, AbsentReason.NAN, components[0].unit),
                              absent_reason=None, components=components)

    def outcomes(self) -> tuple[Reading | UnusableObservation, ...]:
        out: list[Reading | UnusableObservation] = []
        for item in walk(self.observation):
            if isinstance(item, UnusableObservation):
                out.append(item)
            else:
                out.extend(self._part_readings(item))
        return tuple(out)

    def readings(self) -> tuple[Reading, ...]:
        return tuple(o for o in self.outcomes() if isinstance(o, Reading))

    def unusable(self) -> tuple[UnusableObservation, ...]:
        return tuple(o for o in self.outcomes() if isinstance(o, UnusableObservation))


def decode_live(payload: bytes) -> HealthObservation:
    return HealthObservation.decode_notification(payload, stored=False)


def decode_stored(payload: bytes) -> HealthObservation:
    return HealthObservation.decode_notification(payload, stored=True)

