"""ASTM E1381 frames: checksum golden vector, encoding, splitting and parsing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.serial.astm_frames import (
    MAX_TEXT,
    RESTRICTED,
    Frame,
    checksum,
    encode_frame,
    frames_for_records,
    parse_frame,
    scan_frames,
    split_record,
)
from drivers.serial.errors import AstmLinkError, SerialUsageError

# The reference example: <STX>1A|B|C|D<CR><ETX> has checksum BF.
GOLDEN_FRAME = b"\x021A|B|C|D\r\x03BF\r\n"
# The same text as an intermediate (ETB) frame: 0x2BF - 0x03 + 0x17 = 0x2D3 -> D3.
GOLDEN_ETB_FRAME = b"\x021A|B|C|D\r\x17D3\r\n"

_ALLOWED = st.characters(
    min_codepoint=0, max_codepoint=255, blacklist_characters=[chr(b) for b in RESTRICTED]
)


def test_checksum_of_the_reference_example_is_bf() -> None:
    assert checksum(b"1A|B|C|D\r\x03") == b"BF"


def test_encode_frame_produces_the_golden_bytes() -> None:
    assert encode_frame(1, "A|B|C|D\r", final=True) == GOLDEN_FRAME
    assert encode_frame(1, "A|B|C|D\r", final=False) == GOLDEN_ETB_FRAME


def test_parse_frame_decodes_the_golden_bytes() -> None:
    assert parse_frame(GOLDEN_FRAME) == Frame(1, "A|B|C|D\r", final=True)
    assert parse_frame(GOLDEN_ETB_FRAME) == Frame(1, "A|B|C|D\r", final=False)


def test_parse_frame_accepts_a_lower_case_checksum() -> None:
    assert parse_frame(b"\x021A|B|C|D\r\x03bf\r\n").text == "A|B|C|D\r"


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"\x021A|B|C|D\r\x03BE\r\n", "checksum"),
        (b"\x021A|B|C|D\r\x03BF\n\r", "CR LF"),
        (b"\x021A|B|C|D\r\x04BF\r\n", "ETX/ETB"),
        (b"\x02" + b"9X\x03" + checksum(b"9X\x03") + b"\r\n", "digit"),
        (b"\x021A\x05B\x03" + checksum(b"1A\x05B\x03") + b"\r\n", "restricted"),
        (b"\x02\x03BF\r\n", "short"),
    ],
)
def test_parse_frame_rejects_defective_frames_with_a_link_error(raw: bytes, why: str) -> None:
    with pytest.raises(AstmLinkError, match=why):
        parse_frame(raw)


def test_parse_frame_rejects_text_longer_than_240_characters() -> None:
    body = b"1" + b"x" * (MAX_TEXT + 1) + b"\x03"
    with pytest.raises(AstmLinkError, match="240"):
        parse_frame(b"\x02" + body + checksum(body) + b"\r\n")


def test_encode_frame_refuses_restricted_characters_and_long_text_as_our_bug() -> None:
    with pytest.raises(SerialUsageError):
        encode_frame(1, "A\nB", final=True)
    with pytest.raises(SerialUsageError):
        encode_frame(1, "x" * (MAX_TEXT + 1), final=True)


def test_a_record_with_an_inner_cr_is_refused_as_our_bug() -> None:
    with pytest.raises(SerialUsageError, match="CR"):
        split_record("P|1\rP|2")


def test_a_long_record_is_split_into_etb_frames_and_a_final_etx_frame() -> None:
    record = "R|1|" + "x" * 496  # 500 characters, 501 with its CR
    chunks = split_record(record)
    sizes = [(len(text), final) for text, final in chunks]
    assert sizes == [(240, False), (240, False), (21, True)]
    assert "".join(text for text, _ in chunks) == record + "\r"


def test_each_record_starts_a_new_frame_and_numbers_wrap_modulo_8() -> None:
    frames = frames_for_records([f"C|{i}" for i in range(9)])
    assert [parse_frame(f).number for f in frames] == [1, 2, 3, 4, 5, 6, 7, 0, 1]
    assert all(parse_frame(f).final for f in frames)


def test_scan_frames_skips_link_control_bytes_and_reports_bad_frames() -> None:
    capture = b"\x05" + GOLDEN_FRAME + b"\x06\x021A\x03ZZ\r\n" + b"\x04"
    items = list(scan_frames(capture))
    assert items[0] == Frame(1, "A|B|C|D\r", final=True)
    assert isinstance(items[1], AstmLinkError)
    assert len(items) == 2


@given(st.integers(0, 7), st.text(_ALLOWED, max_size=MAX_TEXT), st.booleans())
def test_frames_round_trip(number: int, text: str, final: bool) -> None:
    assert parse_frame(encode_frame(number, text, final=final)) == Frame(number, text, final)


@given(st.binary(max_size=600))
def test_scanning_arbitrary_bytes_gives_frames_or_link_errors_only(data: bytes) -> None:
    for item in scan_frames(data):
        assert isinstance(item, Frame | AstmLinkError)
