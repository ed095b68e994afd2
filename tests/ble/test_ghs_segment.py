"""GHS segmentation (drivers/ble/ghs_segment.py): reassembly, its defined failures and its caps."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from drivers.ble.ghs_segment import (
    COUNTER_MODULO,
    MAX_BODY_BYTES,
    MAX_SEGMENTS,
    Reassembler,
    SegmentationError,
    SegmentHeader,
    segment_body,
)

LIVE = 0x2B8B
# A numeric SpO2 observation (tests/ble/test_ghs.py, LIVE_NUMERIC), 24 octets.
BODY = bytes.fromhex("01 1500 0300 b84b0200 22 00b3c42d0000 06 00 2002 cf0300ff")
WHOLE = b"\x03" + BODY  # first and last segment, counter 0
# The same body in two values: header 0x29 (first, counter 10) with 10 octets, then header 0x2E
# (last, counter 11) with the other 14.
TWO_SEGMENTS = (bytes.fromhex("29") + BODY[:10], bytes.fromhex("2e") + BODY[10:])


def _errors(outcomes: tuple[bytes | SegmentationError, ...]) -> list[str]:
    return [o.reason for o in outcomes if isinstance(o, SegmentationError)]


def test_header_bits() -> None:
    assert SegmentHeader.from_byte(0x29) == SegmentHeader(True, False, 10)
    assert SegmentHeader.from_byte(0x2E) == SegmentHeader(False, True, 11)
    assert SegmentHeader.from_byte(0xFF) == SegmentHeader(True, True, 63)
    assert SegmentHeader(True, True, 0).to_byte() == 0x03


def test_two_segments_reassemble_to_the_body() -> None:
    reassembler = Reassembler(LIVE)
    assert reassembler.feed(TWO_SEGMENTS[0]) == ()
    assert reassembler.in_flight == 1
    assert reassembler.feed(TWO_SEGMENTS[1]) == (BODY,)
    assert reassembler.in_flight == 0
    assert reassembler.buffered_bytes == 0


def test_counter_wraps_from_63_to_0() -> None:
    body = bytes(range(45))
    values = segment_body(body, 10, first_counter=62)
    assert [SegmentHeader.from_byte(v[0]).counter for v in values] == [62, 63, 0, 1, 2]
    reassembler = Reassembler(LIVE)
    out = [o for v in values for o in reassembler.feed(v)]
    assert out == [body]


def test_a_continuation_without_its_first_segment_is_refused() -> None:
    reassembler = Reassembler(LIVE)
    assert _errors(reassembler.feed(TWO_SEGMENTS[1])) == [
        "a segment that continues nothing (its first segment was missed)"]
    assert reassembler.in_flight == 0


def test_a_lost_segment_drops_the_partial_body() -> None:
    reassembler = Reassembler(LIVE)
    reassembler.feed(TWO_SEGMENTS[0])
    skipped = bytes.fromhex("32") + BODY[10:]  # last, counter 12 instead of 11
    assert _errors(reassembler.feed(skipped)) == [
        "segment counter out of sequence (a segment was lost)"]
    assert reassembler.in_flight == 0


def test_a_first_segment_before_the_last_reports_the_loss_and_starts_over() -> None:
    reassembler = Reassembler(LIVE)
    reassembler.feed(TWO_SEGMENTS[0])
    out = reassembler.feed(WHOLE)
    assert _errors(out) == ["an observation was cut off: a first segment came before its last"]
    assert out[-1] == BODY


def test_a_body_over_the_byte_cap_is_refused() -> None:
    reassembler = Reassembler(LIVE, max_body_bytes=16)
    reassembler.feed(TWO_SEGMENTS[0])
    assert _errors(reassembler.feed(TWO_SEGMENTS[1])) == [
        "observation too large: over the reassembly cap"]
    assert reassembler.buffered_bytes == 0


def test_a_body_over_the_segment_cap_is_refused() -> None:
    reassembler = Reassembler(LIVE, max_segments=3)
    values = segment_body(BODY, 5)
    outcomes = [o for v in values for o in reassembler.feed(v)]
    assert _errors(tuple(outcomes))[0] == "observation too large: over the reassembly cap"
    assert BODY not in outcomes


def test_an_empty_value_is_an_error_not_an_exception() -> None:
    assert _errors(Reassembler(LIVE).feed(b"")) == ["too short: no segmentation header"]


def test_the_caps_fit_the_largest_observation() -> None:
    assert MAX_BODY_BYTES >= 4 + 3 + 0xFFFF
    assert MAX_SEGMENTS * 19 >= MAX_BODY_BYTES


@given(st.binary(min_size=1, max_size=600), st.integers(1, 40),
       st.integers(0, COUNTER_MODULO - 1))
def test_any_body_round_trips_through_segments(body: bytes, size: int, counter: int) -> None:
    reassembler = Reassembler(LIVE)
    out = [o for v in segment_body(body, size, counter) for o in reassembler.feed(v)]
    assert out == [body]


@given(st.lists(st.binary(max_size=64), max_size=200))
def test_arbitrary_values_never_raise_and_stay_within_the_caps(values: list[bytes]) -> None:
    reassembler = Reassembler(LIVE, max_body_bytes=256, max_segments=8)
    for value in values:
        for outcome in reassembler.feed(value):
            assert isinstance(outcome, bytes | SegmentationError)
            if isinstance(outcome, bytes):
                assert len(outcome) <= 256
        assert reassembler.buffered_bytes <= 256
        assert reassembler.in_flight <= 8
