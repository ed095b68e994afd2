"""ASTM E1394 records: header delimiters, fields, repeats, components, escapes, builders."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.serial import astm_records as rec
from drivers.serial.astm_records import (
    DEFAULT_DELIMITERS,
    Delimiters,
    Record,
    encode_record,
    parse_messages,
    parse_record,
    parse_ts,
)
from drivers.serial.errors import AstmRecordError

# A CRP result message written from the E1394 record layouts (H 7.1, P 8, O 9, R 10, L 12).
CRP_MESSAGE = (
    "H|\\^&|||Afinion 2^1.10^AS0012345|||||||P|LIS2-A2|20240301102000\r"
    "P|1||PID-7\r"
    "O|1|S-0042||^^^CRP|R|20240301101000|||||N||||||||||||||F\r"
    "R|1|^^^CRP|5.0|mg/L|0 to 10|N||F||OP1|20240301101200|20240301101500|AS0012345\r"
    "L|1|N\r"
)


def test_the_crp_message_parses_into_its_five_records() -> None:
    (message,), errors = parse_messages(CRP_MESSAGE)
    assert errors == []
    assert [r.type for r in message.records] == ["H", "P", "O", "R", "L"]
    assert message.delimiters == DEFAULT_DELIMITERS
    header = message.header
    assert header.components(5) == ("Afinion 2", "1.10", "AS0012345")
    assert header.get(12) == "P"
    assert header.get(14) == "20240301102000"
    (result,) = message.of_type("R")
    assert result.components(3) == ("", "", "", "CRP")
    assert (result.get(4), result.get(5), result.get(6), result.get(7), result.get(9)) == (
        "5.0",
        "mg/L",
        "0 to 10",
        "N",
        "F",
    )
    assert result.get(13) == "20240301101500"
    assert result.get(99) == ""
    assert message.of_type("O")[0].get(12) == "N"


def test_delimiters_are_taken_from_the_header() -> None:
    text = "H!@#$!!!Analyser#1#SN9\rR!1!###GLU!5.5!mmol/L\rL!1!N\r"
    (message,), errors = parse_messages(text)
    assert errors == []
    assert message.delimiters == Delimiters("!", "@", "#", "$")
    assert message.header.components(5) == ("Analyser", "1", "SN9")
    assert message.records[1].components(3) == ("", "", "", "GLU")
    assert encode_record(message.records[0], message.delimiters) == "H!@#$!!!Analyser#1#SN9"


def test_escape_sequences_are_decoded_and_reencoded() -> None:
    line = "C|1|I|a &F& b &S& c &R& d &E& e|G"
    record = parse_record(line, DEFAULT_DELIMITERS)
    assert record.get(4) == "a | b ^ c \\ d & e"
    assert encode_record(record) == line


def test_hex_escapes_are_decoded_highlighting_dropped_and_unknown_sequences_kept() -> None:
    record = parse_record("C|1|I|&X4142&-&H&bold&N&-&Z99&|G", DEFAULT_DELIMITERS)
    assert record.get(4) == "AB-bold-&Z99&"


def test_repeats_and_components_are_split() -> None:
    record = parse_record("O|1|S1||^^^CRP\\^^^HBA1C|R", DEFAULT_DELIMITERS)
    assert record.repeats(5) == (("", "", "", "CRP"), ("", "", "", "HBA1C"))
    assert record.get(5, component=4, repeat=2) == "HBA1C"
    assert record.joined(5) == "^^^CRP\\^^^HBA1C"


def test_two_messages_in_one_text_are_both_parsed() -> None:
    messages, errors = parse_messages(CRP_MESSAGE + CRP_MESSAGE.replace("5.0", "7.25"))
    assert errors == []
    assert [m.of_type("R")[0].get(4) for m in messages] == ["5.0", "7.25"]


def test_records_before_a_header_and_a_missing_terminator_are_reported() -> None:
    messages, errors = parse_messages("R|1|^^^CRP|5|mg/L\r" + CRP_MESSAGE.replace("L|1|N\r", ""))
    assert [e.message for e in errors] == [
        "record outside a message (no valid header before it)",
        "message has no terminator record (L)",
    ]
    assert len(messages) == 1


def test_a_bad_header_makes_its_records_errors_instead_of_joining_another_message() -> None:
    messages, errors = parse_messages(CRP_MESSAGE + "H|||\rR|1|^^^CRP|9|mg/L\rL|1|N\r")
    assert len(messages) == 1
    assert len(errors) == 3


def test_line_feeds_of_a_plain_capture_are_tolerated() -> None:
    messages, errors = parse_messages(CRP_MESSAGE.replace("\r", "\r\n"))
    assert errors == []
    assert len(messages[0].records) == 5


def test_timestamps_parse_in_the_three_e1394_precisions() -> None:
    assert parse_ts("20240301101500") == datetime(2024, 3, 1, 10, 15)  # noqa: DTZ001
    assert parse_ts("202403011015") == datetime(2024, 3, 1, 10, 15)  # noqa: DTZ001
    assert parse_ts("20240301") == datetime(2024, 3, 1)  # noqa: DTZ001
    assert parse_ts("") is None
    for bad in ("2024-03-01", "20241301101500", "2024030110"):
        with pytest.raises(AstmRecordError):
            parse_ts(bad)


def test_the_query_builder_asks_for_all_tests_of_one_specimen() -> None:
    query = rec.query(1, specimen_id="S-0042")
    assert encode_record(query) == "Q|1|^S-0042||^^^ALL||||||||O"


def test_builders_produce_a_message_that_parses_back() -> None:
    when = datetime(2024, 3, 1, 10, 15)  # noqa: DTZ001 - the analyser's local clock
    records = [
        rec.header(["Afinion 2", "1.10", "AS0012345"], timestamp=when),
        rec.patient(1),
        rec.order(1, "S-0042", ["CRP", "HBA1C"]),
        rec.result(1, "CRP", "5.0", units="mg/L", status="F", completed=when),
        rec.comment(1, "needs review | again"),
        rec.terminator(),
    ]
    text = rec.message_text(records)
    assert text.startswith("H|\\^&|||Afinion 2^1.10^AS0012345|||||||P|LIS2-A2|20240301101500\r")
    assert "R|1|^^^CRP|5.0|mg/L||||F||||20240301101500\r" in text
    assert "C|1|I|needs review &F& again|G\r" in text
    (message,), errors = parse_messages(text)
    assert errors == []
    assert message.records == tuple(records)


_VALUE = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=12)


@given(
    st.lists(st.lists(st.lists(_VALUE, min_size=1, max_size=3), min_size=1, max_size=3), max_size=8)
)
def test_records_round_trip_through_text(fields: list[list[list[str]]]) -> None:
    record = Record((((("R",),)), *(tuple(tuple(c) for c in f) for f in fields)))
    assert parse_record(encode_record(record), DEFAULT_DELIMITERS) == record


@given(st.text(max_size=300))
def test_arbitrary_text_gives_messages_or_record_errors_only(text: str) -> None:
    messages, errors = parse_messages(text)
    assert all(isinstance(e, AstmRecordError) for e in errors)
    assert all(m.header.type == "H" for m in messages)
