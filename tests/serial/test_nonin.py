"""Nonin data format 2: frames, packets, status bits, resynchronisation, fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.serial.errors import NoninFrameError
from drivers.serial.nonin import (
    NoninDecoder,
    NoninFrame,
    NoninFramer,
    NoninPacket,
    encode_packet,
    status_flags,
)
from drivers.serial.oximetry import OximetryFlag, OximetrySample

# Frame 1 of a packet: START, STATUS 0x81 (bit 7 + SYNC), PLETH 0x80, HR MSB 0, checksum
# 0x01 + 0x81 + 0x80 + 0x00 = 0x102 -> 0x02.
GOLDEN_FRAME_1 = bytes.fromhex("0181800002")


def frame(status: int, pleth: int, data: int) -> bytes:
    """A frame built by hand, checksum included (independent of the module's encoder)."""
    return bytes([1, status, pleth, data, (1 + status + pleth + data) % 256])


def packet(hr_msb: int, hr_lsb: int, spo2: int, statuses: dict[int, int] | None = None) -> bytes:
    statuses = statuses or {}
    data = [0] * 25
    data[0], data[1], data[2], data[3] = hr_msb, hr_lsb, spo2, 48
    out = b""
    for i in range(25):
        status = statuses.get(i + 1, 0x80) | (0x01 if i == 0 else 0)
        out += frame(status, 100 + i, data[i])
    return out


# SpO2 97 %, pulse 72 /min, firmware revision 48, nothing flagged.
GOLDEN_PACKET = packet(0, 72, 97)


def test_the_golden_frame_decodes() -> None:
    assert NoninFrame.decode(GOLDEN_FRAME_1) == NoninFrame(0x81, 0x80, 0)
    assert NoninFrame(0x81, 0x80, 0).encode() == GOLDEN_FRAME_1
    assert frame(0x81, 0x80, 0) == GOLDEN_FRAME_1


def test_the_golden_packet_gives_spo2_and_pulse_from_frames_1_to_3() -> None:
    (sample,) = NoninDecoder().feed(GOLDEN_PACKET, 12.5)
    assert sample == OximetrySample(12.5, 97, 72, OximetryFlag.NONE, GOLDEN_PACKET)


def test_the_packet_accessors_read_their_frame_positions() -> None:
    frames = NoninFramer().feed(encode_packet(95, 300, firmware_revision=51))
    p = NoninPacket(tuple(f for f in frames if isinstance(f, NoninFrame)))
    assert (p.spo2_pct, p.pulse_bpm, p.firmware_revision) == (95, 300, 51)
    assert (p.spo2_display_pct, p.spo2_fast_pct, p.spo2_beat_pct) == (95, 95, 95)
    assert (p.pulse_extended_bpm, p.spo2_extended_pct, p.pulse_display_bpm) == (300, 95, 300)
    assert not p.smartpoint


def test_the_pulse_rate_has_nine_bits() -> None:
    (sample,) = NoninDecoder().feed(packet(0b10, 0b0101100, 90), 0.0)  # 2 << 7 | 44 = 300
    assert isinstance(sample, OximetrySample)
    assert sample.pulse_bpm == 300


def test_missing_values_511_and_127_are_none() -> None:
    (sample,) = NoninDecoder().feed(packet(0x03, 0x7F, 127, {1: 0xC0}), 0.0)
    assert isinstance(sample, OximetrySample)
    assert (sample.spo2_pct, sample.pulse_bpm) == (None, None)
    assert sample.flags == OximetryFlag.SENSOR_OFF


@pytest.mark.parametrize(
    ("status", "flags"),
    [
        (0x80, OximetryFlag.NONE),
        (0xC0, OximetryFlag.SENSOR_OFF),
        (0xA0, OximetryFlag.ARTIFACT),
        (0x90, OximetryFlag.OUT_OF_TRACK),
        (0x88, OximetryFlag.SENSOR_ALARM),
        (0x84, OximetryFlag.LOW_PERFUSION),  # red
        (0x86, OximetryFlag.MARGINAL_PERFUSION),  # yellow
        (0x82, OximetryFlag.NONE),  # green: good signal
    ],
)
def test_status_bits_map_to_flags(status: int, flags: OximetryFlag) -> None:
    assert status_flags(status) == flags


def test_an_artifact_in_any_frame_flags_the_packet() -> None:
    (sample,) = NoninDecoder().feed(packet(0, 72, 97, {17: 0xA0}), 0.0)
    assert isinstance(sample, OximetrySample)
    assert sample.flags == OximetryFlag.ARTIFACT


def test_the_framer_shifts_one_byte_on_a_bad_frame_and_resynchronises() -> None:
    garbage = bytes([0x01, 0x81, 0x00, 0x01, 0x01, 0x99])
    items = NoninDecoder().feed(garbage + GOLDEN_PACKET, 0.0)
    assert isinstance(items[0], NoninFrameError)
    assert items[0].message == "bytes skipped to resynchronise"
    assert items[0].fields == {"skipped": 6}
    assert isinstance(items[-1], OximetrySample)
    assert items[-1].spo2_pct == 97


def test_a_packet_cut_short_by_a_new_sync_frame_is_reported_and_dropped() -> None:
    items = NoninDecoder().feed(GOLDEN_PACKET[: 5 * 10] + GOLDEN_PACKET, 0.0)
    assert [type(i) for i in items] == [NoninFrameError, OximetrySample]
    assert isinstance(items[0], NoninFrameError)
    assert items[0].message == "packet cut short by a new SYNC frame"


def test_frames_before_the_first_sync_are_discarded_with_one_error() -> None:
    items = NoninDecoder().feed(GOLDEN_PACKET[5 * 3 :] + GOLDEN_PACKET, 0.0)
    assert [type(i) for i in items] == [NoninFrameError, OximetrySample]


def test_a_spo2_above_100_is_reported_missing_with_an_error() -> None:
    items = NoninDecoder().feed(packet(0, 72, 110), 0.0)
    assert isinstance(items[0], NoninFrameError)
    assert isinstance(items[1], OximetrySample)
    assert items[1].spo2_pct is None


def test_bytes_split_across_feeds_decode_the_same() -> None:
    decoder = NoninDecoder()
    items = [i for b in GOLDEN_PACKET for i in decoder.feed(bytes([b]), 1.0)]
    assert items == [OximetrySample(1.0, 97, 72, OximetryFlag.NONE, GOLDEN_PACKET)]


@given(
    st.integers(0, 100) | st.none(),
    st.integers(0, 510) | st.none(),
    st.sampled_from([0x80, 0xA0, 0x84, 0x86, 0xC0]),
)
def test_encoded_packets_decode_to_the_same_values(
    spo2: int | None, pulse: int | None, status: int
) -> None:
    (sample,) = NoninDecoder().feed(encode_packet(spo2, pulse, status=status), 0.0)
    assert isinstance(sample, OximetrySample)
    assert (sample.spo2_pct, sample.pulse_bpm) == (spo2, pulse)
    assert sample.flags == status_flags(status)


@given(st.lists(st.binary(max_size=40), max_size=10))
def test_arbitrary_bytes_give_samples_or_typed_errors_and_a_good_packet_still_decodes(
    chunks: list[bytes],
) -> None:
    decoder = NoninDecoder()
    for chunk in chunks:
        for item in decoder.feed(chunk, 0.0):
            assert isinstance(item, OximetrySample | NoninFrameError)
    items = decoder.feed(GOLDEN_PACKET + GOLDEN_PACKET, 1.0)
    assert items[-1] == OximetrySample(1.0, 97, 72, OximetryFlag.NONE, GOLDEN_PACKET)
