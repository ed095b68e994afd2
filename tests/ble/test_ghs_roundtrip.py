"""GHS codec properties: every observation round-trips through the encoder
(drivers/ble/ghs_encode.py) and the decoder; arbitrary bytes only give the typed decode error."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.ble import ghs_show
from drivers.ble.elapsed_time import ElapsedTime
from drivers.ble.ghs import HealthObservation, decode_live, decode_stored
from drivers.ble.ghs_acom import read_observation
from drivers.ble.ghs_encode import encode_observation
from drivers.ble.ghs_values import (
    Bundle,
    Component,
    CompoundDiscreteValue,
    CompoundValue,
    DiscreteValue,
    NumericValue,
    Observation,
    ObservationHeader,
    SampleArrayValue,
    StateEventValue,
    StringValue,
    UnsupportedObservation,
)
from drivers.ble.ieee11073 import float_from_raw
from drivers.ble.wire import Reader
from tests.ble.helpers import decode_or_reject, measurements_of, same

U32 = st.integers(0, 2**32 - 1)
CODES = st.lists(U32, max_size=3).map(tuple)
FLOATS = st.integers(0, 2**32 - 1).map(float_from_raw)
STAMPS = st.builds(ElapsedTime, st.integers(0, 0xFF), st.integers(0, 10**11),
                   st.integers(0, 0xFF), st.integers(-128, 127))


@st.composite
def headers(draw: Any) -> ObservationHeader:
    fields: dict[str, Any] = {}
    flags = 0
    for bit, name, strategy in ((0, "observation_type", U32), (1, "time_stamp", STAMPS),
                                (2, "duration_s", FLOATS), (3, "status", st.integers(0, 0xFFFF)),
                                (4, "object_id", U32), (5, "patient", st.integers(0, 0xFF)),
                                (6, "supplemental", CODES), (7, "derived_from", CODES),
                                (8, "member_of", CODES)):
        if draw(st.booleans()):
            flags |= 1 << bit
            fields[name] = draw(strategy)
    return ObservationHeader(flags, **fields)


@st.composite
def sample_arrays(draw: Any) -> SampleArrayValue:
    size = draw(st.integers(1, 4))
    samples = draw(st.lists(st.integers(0, 2 ** (8 * size) - 1), max_size=8))
    return SampleArrayValue(draw(st.integers(0, 0xFFFF)), draw(FLOATS), draw(FLOATS),
                            draw(FLOATS), draw(st.integers(0, 0xFF)), size, tuple(samples))


@st.composite
def state_events(draw: Any) -> StateEventValue:
    size = draw(st.integers(1, 4))
    bits = st.integers(0, 2 ** (8 * size) - 1)
    return StateEventValue(size, draw(bits), draw(bits), draw(bits))


COMPONENT_VALUES = st.one_of(
    st.builds(NumericValue, st.integers(0, 0xFFFF), FLOATS),
    st.builds(DiscreteValue, U32),
    st.builds(StringValue, st.text(max_size=12)),
    sample_arrays(),
    st.builds(CompoundDiscreteValue, CODES),
    state_events(),
)
VALUES = st.one_of(COMPONENT_VALUES, st.builds(
    CompoundValue, st.lists(st.builds(Component, U32, COMPONENT_VALUES), max_size=3).map(tuple)))
UNSUPPORTED = st.builds(UnsupportedObservation, st.sampled_from([8, 9, 0x42, 0xFE]),
                        st.binary(max_size=12), st.just(""))
SINGLE = st.one_of(st.builds(Observation, headers(), VALUES), UNSUPPORTED)
OBSERVATIONS = st.one_of(SINGLE, st.builds(Bundle, headers(),
                                           st.lists(SINGLE, max_size=3).map(tuple)))


def _without_reasons(observation: object) -> object:
    """The decoder writes its reason into an UnsupportedObservation; compare the rest."""
    if isinstance(observation, UnsupportedObservation):
        return (observation.class_type, observation.body)
    if isinstance(observation, Bundle):
        return (observation.header, tuple(_without_reasons(m) for m in observation.members))
    return observation


@settings(max_examples=300)
@given(OBSERVATIONS)
def test_every_observation_round_trips(observation: Any) -> None:
    decoded = read_observation(Reader(encode_observation(observation), 0x2B8B))
    assert same(_without_reasons(decoded), _without_reasons(observation))


@given(OBSERVATIONS, st.one_of(st.none(), U32))
def test_bodies_round_trip_and_always_map(observation: Any, record: int | None) -> None:
    parsed = HealthObservation(observation, record)
    decoded = HealthObservation.decode_body(parsed.encode_body(), stored=record is not None)
    assert decoded.record_number == record
    measurements_of(decoded)  # every reading is a valid Measurement
    decoded.unusable()
    ghs_show.measurements(decoded)
    ghs_show.flags(decoded)


@settings(max_examples=500)
@given(st.binary(max_size=80))
def test_arbitrary_bytes_give_the_decode_error_or_a_valid_result(payload: bytes) -> None:
    for decode in (decode_live, decode_stored):
        parsed = decode_or_reject(decode, payload)
        if isinstance(parsed, HealthObservation):
            measurements_of(parsed)
            ghs_show.measurements(parsed)
            ghs_show.flags(parsed)


@given(OBSERVATIONS, st.data())
def test_damaged_encodings_give_the_decode_error_or_a_valid_result(
    observation: Any, data: st.DataObject
) -> None:
    body = bytearray(b"\x03" + encode_observation(observation))
    index = data.draw(st.integers(0, len(body) - 1))
    body[index] = data.draw(st.integers(0, 0xFF))
    cut = data.draw(st.integers(0, len(body)))
    parsed = decode_or_reject(decode_live, bytes(body[:cut]))
    if isinstance(parsed, HealthObservation):
        measurements_of(parsed)
        ghs_show.measurements(parsed)
