"""gatewayctl decode core: the same JSON shape for ASTM (raw or text), Nonin and CMS50 captures."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.serial.astm_frames import frames_for_records
from drivers.serial.decode import decode_capture
from drivers.serial.nonin import encode_packet
from gateway.errors import UsageError

RECORDS = [
    "H|\\^&|||Afinion 2^1.10^AS0012345|||||||P|LIS2-A2|20240301102000",
    "P|1",
    "O|1|S-0042||^^^CRP\\^^^HBA1C|R",
    "R|1|^^^CRP|5.0|mg/L|0 to 10|N||F||||20240301101500",
    "R|2|^^^HBA1C|6.1|%|4.0 to 6.0|H||F||||20240301101600",
    "C|1|I|" + "long comment " * 30 + "|G",  # 410 characters: split into ETB frames
    "R|3|^^^CRP|<5|mg/L||L||F||||20240301101700",
    "L|1|N",
]
CRP_ROW = {
    "type": None,
    "code": "1988-5",
    "value": "5.0",
    "unit": "mg/L",
    "device_time": "2024-03-01T10:15:00+00:00",
}
HBA1C_ROW = {
    "type": 160220,
    "code": "4548-4",
    "value": "6.1",
    "unit": "%",
    "device_time": "2024-03-01T10:16:00+00:00",
}
BELOW_ROW = {
    "type": None,
    "code": "1988-5",
    "value": None,
    "unit": "mg/L",
    "device_time": "2024-03-01T10:17:00+00:00",
}


def raw_capture() -> bytes:
    """ENQ, frames and their ACKs as a sniffer sees them, with one NAKed frame resent."""
    frames = frames_for_records(RECORDS)
    damaged = frames[1][:-4] + b"00\r\n"
    return (
        b"\x05\x06"
        + frames[0]
        + b"\x06"
        + damaged
        + b"\x15"
        + b"\x06".join(frames[1:])
        + (b"\x06\x04")
    )


def test_a_raw_astm_capture_decodes_with_the_resent_frame_counted_once() -> None:
    result = decode_capture("astm", raw_capture())
    assert result == {
        "protocol": "astm",
        "measurements": [CRP_ROW, HBA1C_ROW, BELOW_ROW],
        # "2P|1<CR><ETX>": 0x32 + 0x50 + 0x7C + 0x31 + 0x0D + 0x03 = 0x13F -> 3F
        "errors": ["frame checksum mismatch (received=00, expected=3F)"],
    }


def test_plain_record_text_decodes_the_same() -> None:
    text = "\r\n".join(RECORDS).encode()
    assert decode_capture("ASTM", text) == {
        "protocol": "astm",
        "measurements": [CRP_ROW, HBA1C_ROW, BELOW_ROW],
        "errors": [],
    }


def test_a_capture_cut_inside_a_record_never_yields_a_truncated_value() -> None:
    frames = frames_for_records([*RECORDS[:3], "R|1|^^^CRP|123" + "4" * 300 + "|mg/L"])
    result = decode_capture("astm", b"".join(frames)[:-60])
    assert result["measurements"] == []
    assert "capture ends inside a frame" in result["errors"]


def test_a_nonin_capture_gives_spo2_and_pulse_rows() -> None:
    result = decode_capture("nonin", encode_packet(97, 72))
    assert result == {
        "protocol": "nonin",
        "measurements": [
            {"type": 150456, "code": "150456", "value": "97", "unit": "%", "device_time": None},
            {"type": 149530, "code": "149530", "value": "72", "unit": "/min", "device_time": None},
        ],
        "errors": [],
    }


def test_a_cms50_capture_with_noise_gives_rows_and_one_error_line() -> None:
    result = decode_capture("cms50", b"\x01" + bytes.fromhex("C540074861"))
    assert result["measurements"][0]["value"] == "97"
    assert result["errors"] == ["bytes skipped to resynchronise (skipped=1)"]


def test_an_unknown_protocol_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown protocol"):
        decode_capture("hl7", b"")


@given(st.sampled_from(["astm", "nonin", "cms50"]), st.binary(max_size=400))
def test_arbitrary_bytes_always_give_the_documented_shape(protocol: str, data: bytes) -> None:
    result: dict[str, Any] = decode_capture(protocol, data)
    assert set(result) == {"protocol", "measurements", "errors"}
    for row in result["measurements"]:
        assert set(row) == {"type", "code", "value", "unit", "device_time"}
    assert all(isinstance(e, str) and "\n" not in e for e in result["errors"])
