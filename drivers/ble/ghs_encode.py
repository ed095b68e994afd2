"""Encoder for GHS ACOM observations (drivers/ble/ghs_acom.py): the server's side of the format.

Used by the round-trip tests and by simulated GHS peripherals (a spirometer-like device in the
simulated BlueZ): ``read_observation(Reader(encode_observation(o), uuid)) == o`` for every value
the decoder produces. Out-of-range fields are a caller bug (ModelError), as in drivers/ble/wire.py.
"""

from __future__ import annotations

from drivers.ble.elapsed_time import write_elapsed_time
from drivers.ble.ghs_values import (
    AnyObservation,
    Bundle,
    ComponentValue,
    CompoundDiscreteValue,
    CompoundValue,
    DiscreteValue,
    NumericValue,
    ObservationHeader,
    SampleArrayValue,
    StateEventValue,
    StringValue,
    UnsupportedObservation,
    Value,
)
from drivers.ble.wire import Writer
from gateway.errors import ModelError

MAX_OBSERVATION_LENGTH = 0xFFFF  # the Length field is a uint16


def _codes(writer: Writer, codes: tuple[int, ...], what: str) -> None:
    writer.u8(len(codes), f"{what} count")
    for code in codes:
        writer.uint(code, 4, what)


def _header(writer: Writer, header: ObservationHeader) -> None:
    writer.u16(header.flags, "observation flags")
    if header.observation_type is not None:
        writer.uint(header.observation_type, 4, "observation type")
    if header.time_stamp is not None:
        write_elapsed_time(writer, header.time_stamp)
    if header.duration_s is not None:
        writer.float32(header.duration_s)
    if header.status is not None:
        writer.u16(header.status, "measurement status")
    if header.object_id is not None:
        writer.uint(header.object_id, 4, "object id")
    if header.patient is not None:
        writer.u8(header.patient, "patient")
    for codes, what in ((header.supplemental, "supplemental information"),
                        (header.derived_from, "derived from"), (header.member_of, "is member of")):
        if codes is not None:
            _codes(writer, codes, what)


def _component_value(writer: Writer, value: ComponentValue) -> None:
    if isinstance(value, NumericValue):
        writer.u16(value.unit_code, "unit code").float32(value.value)
        return
    if isinstance(value, DiscreteValue):
        writer.uint(value.code, 4, "discrete value")
        return
    if isinstance(value, StringValue):
        text = value.text.encode("utf-8")
        writer.u16(len(text), "string length").raw(text)
        return
    if isinstance(value, SampleArrayValue):
        writer.u16(value.unit_code, "unit code").float32(value.scale_factor)
        writer.float32(value.offset).float32(value.period_s)
        writer.u8(value.samples_per_period, "samples per period")
        writer.u8(value.octets_per_sample, "octets per sample")
        writer.uint(len(value.samples), 4, "number of samples")
        for sample in value.samples:
            writer.uint(sample, value.octets_per_sample, "sample")
        return
    if isinstance(value, CompoundDiscreteValue):
        _codes(writer, value.codes, "compound discrete")
        return
    writer.u8(value.size, "state/event size")
    for bits in (value.supported, value.state_event, value.value):
        writer.uint(bits, value.size, "state/event bits")


def _value(writer: Writer, value: Value) -> None:
    if not isinstance(value, CompoundValue):
        _component_value(writer, value)
        return
    writer.u8(len(value.components), "component count")
    for component in value.components:
        writer.uint(component.component_type, 4, "component type")
        writer.u8(_CLASS_OF[type(component.value)], "component value type")
        _component_value(writer, component.value)


_CLASS_OF: dict[type, int] = {NumericValue: 1, DiscreteValue: 2, StringValue: 3,
                              SampleArrayValue: 4, CompoundDiscreteValue: 5, StateEventValue: 6}


def _framed(class_type: int, body: bytes) -> bytes:
    if len(body) > MAX_OBSERVATION_LENGTH:
        raise ModelError("an observation is at most 65535 octets after its Length field")
    return Writer().u8(class_type, "observation class type").u16(len(body), "length") \
        .raw(body).getvalue()


def encode_observation(observation: AnyObservation) -> bytes:
    """Class type, Length and body of ``observation``."""
    if isinstance(observation, UnsupportedObservation):
        return _framed(observation.class_type, observation.body)
    writer = Writer()
    _header(writer, observation.header)
    if isinstance(observation, Bundle):
        writer.u8(len(observation.members), "bundle member count")
        for member in observation.members:
            writer.raw(encode_observation(member))
    else:
        _value(writer, observation.value)
    return _framed(observation.class_type, writer.getvalue())
