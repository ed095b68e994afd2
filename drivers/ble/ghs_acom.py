"""IEEE 11073-10206 ACOM observations as the Generic Health Sensor Service carries them (decoder).

Sources. The layout is the GHSS v1.0 "Health Observation Body", with IEEE 11073-10206 ACOM for
the meaning of the fields. The adopted GHSS text was not available to us (the stored copy holds
its title page only), so no section numbers are cited; instead every fact below was checked field
by field against two public, independent GHS peripheral prototypes: the STMicroelectronics
STM32WBA GHS sample application (tested against the SIG's PTS, its comments say) and Realtek's
ghss_gatt_svc.h. Facts only one of them shows are marked "assumed" (ST: the example vectors;
Nordic: Brian Reinhold's NordicPHDs GHS prototype). Check those first when the text is at hand.

Observation: Observation Class Type uint8; Length uint16 = the number of octets that follow the
Length field (assumed: all six consistent ST example vectors satisfy it, Realtek shows no
vector); then Flags uint16 and the fields it announces, in flag-bit order, then the value.

- Class types: 1 numeric, 2 simple discrete, 3 string, 4 sample array, 5 compound discrete
  event, 6 compound state/event, 7 compound, 8 TLV-encoded, 255 observation bundle.
- Flags: bit 0 Observation Type (uint32 MDC code) present; 1 Time Stamp (9-octet Elapsed Time,
  drivers/ble/elapsed_time.py); 2 Measurement Duration (FLOAT, seconds); 3 Measurement Status
  (uint16); 4 Object Id (uint32); 5 Patient (uint8); 6 Supplemental Information (uint8 count,
  that many uint32 MDC codes); 7 Derived From (uint8 count, uint32 object ids); 8 Is Member Of
  (uint8 count, uint32 object ids); 9 TLVs present; 10-15 reserved.
- Measurement Status bits: 0 invalid, 1 questionable, 2 not available, 3 calibrating, 4 test
  data, 5 early estimate, 6 manually entered, 7 setting, 14 threshold error, 15 thresholding
  disabled.
- Values. Numeric: unit code uint16 (an MDC partition-4 term code), FLOAT. Simple discrete:
  uint32 MDC code. String: uint16 length, that many octets of UTF-8. Sample array: unit code
  uint16, scale factor FLOAT, offset FLOAT, sample period FLOAT (seconds), samples per period
  uint8, octets per sample uint8, number of samples uint32, the scaled samples (assumed
  unsigned, little-endian); a sample's value is scaled x scale factor + offset (y = mx + b,
  assumed: Nordic).
  Compound discrete event: uint8 count, that many uint32 MDC codes. Compound state/event: uint8
  size, then three bit fields of that many octets: supported mask, state/event mask, value.
  Compound: uint8 count, then per component: uint32 component type (MDC), uint8 value type (a
  class type 1-6), the value as above. Bundle: uint8 count, then that many whole observations;
  a member lacking a header field takes the bundle's (assumed from the prototypes' bundles,
  whose members carry only their type).

What we do not decode becomes an ``UnsupportedObservation`` that keeps its octets and a reason
(its Length still delimits it, so a bundle's other members are read): an unknown class type,
TLV-encoded observations (class 8), a header with TLVs or reserved flag bits (their layout is
not known to us), a compound component of a value type outside 1-6. Malformed input (cut off,
lengths that disagree, invalid UTF-8, a bundle inside a bundle) is a ``DecodeError``.
"""

from __future__ import annotations

from collections.abc import Callable

from drivers.ble.elapsed_time import read_elapsed_time
from drivers.ble.ghs_values import (
    DECODED_FLAGS,
    FLAG_DERIVED_FROM,
    FLAG_DURATION,
    FLAG_MEMBER_OF,
    FLAG_OBJECT_ID,
    FLAG_PATIENT,
    FLAG_STATUS,
    FLAG_SUPPLEMENTAL,
    FLAG_TIME_STAMP,
    FLAG_TYPE,
    MAX_SAMPLE_OCTETS,
    AnyObservation,
    Bundle,
    Component,
    ComponentValue,
    CompoundDiscreteValue,
    CompoundValue,
    DiscreteValue,
    NumericValue,
    Observation,
    ObservationClass,
    ObservationHeader,
    SampleArrayValue,
    StateEventValue,
    StringValue,
    UnsupportedObservation,
    Value,
)
from drivers.ble.wire import Reader


class _NotDecoded(Exception):  # noqa: N818 - internal signal, never leaves this module
    """Raised inside one observation's body: it becomes an UnsupportedObservation."""


def _u32(reader: Reader, what: str) -> int:
    return reader.uint(4, what)


def _codes(reader: Reader, what: str) -> tuple[int, ...]:
    count = reader.u8(f"{what} count")
    return tuple(_u32(reader, what) for _ in range(count))


def _read_header(reader: Reader, flags: int) -> ObservationHeader:
    return ObservationHeader(
        flags,
        _u32(reader, "observation type") if flags & FLAG_TYPE else None,
        read_elapsed_time(reader, "time stamp") if flags & FLAG_TIME_STAMP else None,
        reader.float32("measurement duration") if flags & FLAG_DURATION else None,
        reader.u16("measurement status") if flags & FLAG_STATUS else None,
        _u32(reader, "object id") if flags & FLAG_OBJECT_ID else None,
        reader.u8("patient") if flags & FLAG_PATIENT else None,
        _codes(reader, "supplemental information") if flags & FLAG_SUPPLEMENTAL else None,
        _codes(reader, "derived from") if flags & FLAG_DERIVED_FROM else None,
        _codes(reader, "is member of") if flags & FLAG_MEMBER_OF else None,
    )


def _numeric(reader: Reader) -> NumericValue:
    return NumericValue(reader.u16("unit code"), reader.float32("numeric value"))


def _discrete(reader: Reader) -> DiscreteValue:
    return DiscreteValue(_u32(reader, "discrete value"))


def _string(reader: Reader) -> StringValue:
    raw = reader.take(reader.u16("string length"), "string")
    try:
        return StringValue(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise reader.error("string observation is not UTF-8") from None


def _sample_array(reader: Reader) -> SampleArrayValue:
    unit = reader.u16("unit code")
    scale = reader.float32("scale factor")
    offset = reader.float32("offset")
    period = reader.float32("sample period")
    per_period = reader.u8("samples per period")
    size = reader.u8("octets per sample")
    count = _u32(reader, "number of samples")
    if not 1 <= size <= MAX_SAMPLE_OCTETS:
        raise reader.error("octets per sample must be 1 to 4")
    if count * size > reader.remaining:  # checked before reading: the count is the device's
        raise reader.error("too short: the samples are cut off")
    samples = tuple(reader.uint(size, "sample") for _ in range(count))
    return SampleArrayValue(unit, scale, offset, period, per_period, size, samples)


def _compound_discrete(reader: Reader) -> CompoundDiscreteValue:
    return CompoundDiscreteValue(_codes(reader, "compound discrete"))


def _state_event(reader: Reader) -> StateEventValue:
    size = reader.u8("state/event size")
    if size == 0:
        raise reader.error("state/event size must be at least 1")
    return StateEventValue(size, reader.uint(size, "supported mask"),
                           reader.uint(size, "state/event mask"), reader.uint(size, "value"))


_COMPONENT_READERS: dict[ObservationClass, Callable[[Reader], ComponentValue]] = {
    ObservationClass.NUMERIC: _numeric,
    ObservationClass.SIMPLE_DISCRETE: _discrete,
    ObservationClass.STRING: _string,
    ObservationClass.SAMPLE_ARRAY: _sample_array,
    ObservationClass.COMPOUND_DISCRETE: _compound_discrete,
    ObservationClass.COMPOUND_STATE_EVENT: _state_event,
}


def _compound(reader: Reader) -> CompoundValue:
    components = []
    for _ in range(reader.u8("component count")):
        component_type = _u32(reader, "component type")
        value_type = reader.u8("component value type")
        read = _COMPONENT_READERS.get(ObservationClass(value_type))
        if read is None:
            raise _NotDecoded(f"compound component of value type {value_type}")
        components.append(Component(component_type, read(reader)))
    return CompoundValue(tuple(components))


def read_observation(reader: Reader, *, in_bundle: bool = False) -> AnyObservation:
    """Read one observation (class type, length, body) off ``reader``."""
    class_type = reader.u8("observation class type")
    length = reader.u16("observation length")
    if reader.remaining < length:
        raise reader.error("too short: the observation is cut off")
    body = reader.take(length, "observation")
    kind = ObservationClass(class_type)
    if not kind.known:
        return UnsupportedObservation(class_type, body, f"unknown observation class type "
                                                        f"{class_type}")
    if kind is ObservationClass.TLV_ENCODED:
        return UnsupportedObservation(class_type, body, "TLV-encoded observations are not decoded")
    inner = Reader(body, reader.uuid16)
    flags = inner.u16("observation flags")
    if flags & ~DECODED_FLAGS:
        return UnsupportedObservation(class_type, body, "observation with TLVs or reserved "
                                                        "header flags")
    header = _read_header(inner, flags)
    if kind is ObservationClass.BUNDLE:
        if in_bundle:
            raise inner.error("a bundle inside a bundle")
        members = []
        for _ in range(inner.u8("bundle member count")):
            member = read_observation(inner, in_bundle=True)
            if isinstance(member, Bundle):  # read_observation refuses it first; this narrows
                raise inner.error("a bundle inside a bundle")
            members.append(member)
        inner.done()
        return Bundle(header, tuple(members))
    try:
        value: Value = _compound(inner) if kind is ObservationClass.COMPOUND \
            else _COMPONENT_READERS[kind](inner)
    except _NotDecoded as why:
        return UnsupportedObservation(class_type, body, str(why))
    inner.done()
    return Observation(header, value)
