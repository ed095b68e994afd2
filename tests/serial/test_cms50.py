"""Contec CMS50D+ live data: packet layout, flags, missing values, resynchronisation, fuzzing."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from drivers.serial.cms50 import Cms50Decoder, Cms50Framer, Cms50Packet
from drivers.serial.errors import Cms50FrameError
from drivers.serial.oximetry import OximetryFlag, OximetrySample

# Signal strength 5 with a pulse beep (0x80 | 0x40 | 0x05), pleth 0x40, bar graph 7,
# pulse 72 (0x48), SpO2 97 (0x61).
GOLDEN = bytes.fromhex("C540074861")
# Pulse 200 = 0b1100_1000: bit 7 goes to 0x40 of byte 2, bits 6-0 (0x48) to byte 3.
GOLDEN_PULSE_200 = bytes.fromhex("C540474861")
# Finger out (0x10) and searching (0x20 of byte 2); SpO2 127 = invalid; pulse 0.
GOLDEN_FINGER_OUT = bytes.fromhex("900020007F")


def test_the_golden_packet_decodes_field_by_field() -> None:
    assert Cms50Packet.decode(GOLDEN) == Cms50Packet(
        signal_strength=5,
        finger_out=False,
        spo2_dropping=False,
        beep=True,
        pleth=0x40,
        bar_graph=7,
        probe_error=False,
        searching=False,
        pulse_raw=72,
        spo2_raw=97,
    )
    assert Cms50Packet.decode(GOLDEN).encode() == GOLDEN


def test_pulse_rate_bit_7_comes_from_byte_2() -> None:
    assert Cms50Packet.decode(GOLDEN_PULSE_200).pulse_bpm == 200


def test_the_decoder_gives_one_sample_per_packet() -> None:
    assert Cms50Decoder().feed(GOLDEN, 3.0) == [
        OximetrySample(3.0, 97, 72, OximetryFlag.NONE, GOLDEN)
    ]


def test_finger_out_and_searching_are_flags_and_spo2_127_is_missing() -> None:
    (sample,) = Cms50Decoder().feed(GOLDEN_FINGER_OUT, 0.0)
    assert isinstance(sample, OximetrySample)
    assert sample.flags == OximetryFlag.SENSOR_OFF | OximetryFlag.SEARCHING
    assert (sample.spo2_pct, sample.pulse_bpm) == (None, 0)


def test_probe_error_and_spo2_dropping_are_flags() -> None:
    packet = Cms50Packet.decode(bytes.fromhex("A000100060"))
    assert packet.flags == OximetryFlag.PROBE_ERROR | OximetryFlag.SPO2_DROPPING


def test_the_framer_skips_bytes_without_sync_and_restarts_on_an_early_sync_byte() -> None:
    items = Cms50Framer().feed(b"\x01\x02" + GOLDEN[:3] + GOLDEN)
    assert isinstance(items[0], Cms50FrameError)
    assert items[0].fields == {"skipped": 5}
    assert items[1] == Cms50Packet.decode(GOLDEN)
    assert len(items) == 2


def test_a_packet_split_across_reads_is_reassembled() -> None:
    framer = Cms50Framer()
    assert framer.feed(GOLDEN[:2]) == []
    assert framer.feed(GOLDEN[2:]) == [Cms50Packet.decode(GOLDEN)]


@given(
    st.integers(0, 15),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.integers(0, 127),
    st.integers(0, 15),
    st.booleans(),
    st.booleans(),
    st.integers(0, 255),
    st.integers(0, 127),
)
def test_packets_round_trip(
    signal: int,
    finger: bool,
    dropping: bool,
    beep: bool,
    pleth: int,
    bar: int,
    probe: bool,
    searching: bool,
    pulse: int,
    spo2: int,
) -> None:
    packet = Cms50Packet(signal, finger, dropping, beep, pleth, bar, probe, searching, pulse, spo2)
    assert Cms50Packet.decode(packet.encode()) == packet


@given(st.lists(st.binary(max_size=30), max_size=10))
def test_arbitrary_bytes_give_samples_or_typed_errors_and_a_good_packet_still_decodes(
    chunks: list[bytes],
) -> None:
    decoder = Cms50Decoder()
    for chunk in chunks:
        for item in decoder.feed(chunk, 0.0):
            assert isinstance(item, OximetrySample | Cms50FrameError)
    items = decoder.feed(GOLDEN, 1.0)
    assert items[-1] == OximetrySample(1.0, 97, 72, OximetryFlag.NONE, GOLDEN)
