"""ObservationStream: segments of a GHS characteristic in, observations or typed errors out."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from drivers.ble.ghs import HealthObservation
from drivers.ble.ghs_segment import SegmentationError, segment_body
from drivers.ble.ghs_stream import ObservationStream
from gateway.errors import DecodeError
from tests.ble.test_ghs import LIVE_BUNDLE, STORED_NUMERIC


def test_a_segmented_stored_record_decodes_once_whole() -> None:
    stream = ObservationStream(stored=True)
    values = segment_body(STORED_NUMERIC[1:], 7, first_counter=60)
    outcomes = [o for v in values for o in stream.feed(v)]
    assert len(outcomes) == 1
    assert isinstance(outcomes[0], HealthObservation)
    assert outcomes[0].record_number == 42


def test_a_malformed_whole_body_is_a_decode_error_and_the_next_one_decodes() -> None:
    stream = ObservationStream(stored=False)
    (bad,) = stream.feed(b"\x03\x01\x02")  # a class type and half a length
    assert isinstance(bad, DecodeError)
    assert not isinstance(bad, SegmentationError)
    (good,) = stream.feed(LIVE_BUNDLE)
    assert isinstance(good, HealthObservation)
    assert len(good.readings()) == 2


def test_lost_segments_are_segmentation_errors() -> None:
    stream = ObservationStream(stored=False)
    values = segment_body(LIVE_BUNDLE[1:], 10)
    assert stream.feed(values[0]) == ()
    (lost,) = stream.feed(values[2])
    assert isinstance(lost, SegmentationError)
    stream.reset()
    assert [type(o) for v in values for o in stream.feed(v)] == [HealthObservation]


@given(st.lists(st.binary(max_size=40), max_size=60), st.booleans())
def test_feed_never_raises(values: list[bytes], stored: bool) -> None:
    stream = ObservationStream(stored=stored, max_body_bytes=200, max_segments=6)
    for value in values:
        for outcome in stream.feed(value):
            assert isinstance(outcome, HealthObservation | DecodeError)
