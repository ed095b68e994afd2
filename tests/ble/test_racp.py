"""Record Access Control Point 0x2A52: request encoding, response decoding."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.ble import racp
from drivers.ble.racp import (
    NumberOfRecords,
    OpCode,
    Operator,
    RacpRequest,
    ResponseCode,
    ResponseCodeResponse,
)
from gateway.errors import DecodeError, GatewayError
from tests.ble.helpers import decode_or_reject

# Requests: op code, operator, [filter type 0x01 (sequence number), uint16 operand].
REPORT_FROM_6 = bytes.fromhex("01 03 01 0600")  # report stored records >= 6
REPORT_ALL = bytes.fromhex("0101")
COUNT_ALL = bytes.fromhex("0401")
COUNT_FROM_0X1234 = bytes.fromhex("04 03 01 3412")
DELETE_UP_TO_5 = bytes.fromhex("02 02 01 0500")
ABORT = bytes.fromhex("0300")
# Responses: op code 5 (number of stored records), operator Null, uint16 count 10.
NUMBER_OF_RECORDS = bytes.fromhex("05 00 0a00")
# Op code 6 (response code), Null, request op code 1, response code 1 (success).
SUCCESS = bytes.fromhex("06 00 01 01")
# Response code 6: no records found (the normal answer when the device has nothing new).
NO_RECORDS = bytes.fromhex("06 00 01 06")
# Response code 0x0F: not defined by the spec; kept.
UNKNOWN_RESPONSE = bytes.fromhex("06 00 01 0f")


@pytest.mark.parametrize(
    ("request_", "payload"),
    [
        (RacpRequest.report_from(6), REPORT_FROM_6),
        (RacpRequest.report_all(), REPORT_ALL),
        (RacpRequest.count_all(), COUNT_ALL),
        (RacpRequest.count_from(0x1234), COUNT_FROM_0X1234),
        (RacpRequest.delete_up_to(5), DELETE_UP_TO_5),
        (RacpRequest.abort(), ABORT),
    ],
)
def test_requests_encode_to_the_spec_layout(request_: RacpRequest, payload: bytes) -> None:
    assert request_.encode() == payload
    assert RacpRequest.decode(payload) == request_


def test_request_exposes_its_sequence_filter() -> None:
    assert RacpRequest.decode(REPORT_FROM_6).sequence_filter == 6
    assert RacpRequest.report_all().sequence_filter is None


def test_number_of_records_response() -> None:
    assert racp.decode(NUMBER_OF_RECORDS) == NumberOfRecords(10)
    assert NumberOfRecords(10).encode() == NUMBER_OF_RECORDS
    assert NumberOfRecords(10).flag_summary() == {
        "op_code": "number_of_stored_records_response",
        "number_of_records": 10,
    }


def test_response_codes() -> None:
    success = racp.decode(SUCCESS)
    assert success == ResponseCodeResponse(OpCode.REPORT_STORED_RECORDS, ResponseCode.SUCCESS)
    assert isinstance(success, ResponseCodeResponse)
    assert success.success
    none_found = racp.decode(NO_RECORDS)
    assert none_found == ResponseCodeResponse(
        OpCode.REPORT_STORED_RECORDS, ResponseCode.NO_RECORDS_FOUND
    )
    assert none_found.flag_summary() == {
        "op_code": "response_code",
        "request_op_code": "report_stored_records",
        "response_code": "no_records_found",
    }


def test_unknown_response_code_is_kept() -> None:
    value = racp.decode(UNKNOWN_RESPONSE)
    assert isinstance(value, ResponseCodeResponse)
    assert value.response_code == 0x0F
    assert not value.response_code.known
    assert not value.success
    assert value.encode() == UNKNOWN_RESPONSE


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (REPORT_ALL, "op code is not a response op code"),
        (bytes.fromhex("05 01 0a00"), "responses carry the Null operator"),
        (bytes.fromhex("05 00 0a"), "too short: number of records needs 2 more bytes, 1 left"),
        (NUMBER_OF_RECORDS + b"\x00", "too long: 1 bytes after the last field"),
        (bytes.fromhex("06 00 01"), "too short: response code needs 1 more bytes, 0 left"),
    ],
)
def test_malformed_responses_are_decode_errors(payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        racp.decode(payload)
    assert caught.value.fields == {"uuid": "2a52", "reason": reason}


@given(st.binary(max_size=8))
def test_arbitrary_bytes_give_a_response_or_decode_error(payload: bytes) -> None:
    value = decode_or_reject(racp.decode, payload)
    if value is not None:
        assert isinstance(value, NumberOfRecords | ResponseCodeResponse)
        assert racp.decode(value.encode()) == value


@given(st.integers(0, 0xFFFF))
def test_report_from_round_trips_any_sequence_number(sequence: int) -> None:
    request_ = RacpRequest.decode(RacpRequest.report_from(sequence).encode())
    assert request_.operator is Operator.GREATER_THAN_OR_EQUAL
    assert request_.sequence_filter == sequence


# GHS (uint32 record numbers): filter type 0x01 then a uint32 operand; the count is a uint32.
GHS_REPORT_FROM_0X01020304 = bytes.fromhex("01 03 01 04030201")
GHS_COUNT_FROM_70000 = bytes.fromhex("04 03 01 70110100")  # 70000 = 0x00011170
GHS_DELETE_UP_TO_5 = bytes.fromhex("02 02 01 05000000")
GHS_NUMBER_OF_RECORDS_70000 = bytes.fromhex("05 00 70110100")


@pytest.mark.parametrize(
    ("request_", "payload"),
    [
        (RacpRequest.report_from(0x01020304, octets=4), GHS_REPORT_FROM_0X01020304),
        (RacpRequest.count_from(70_000, octets=4), GHS_COUNT_FROM_70000),
        (RacpRequest.delete_up_to(5, octets=4), GHS_DELETE_UP_TO_5),
    ],
)
def test_ghs_requests_carry_uint32_record_numbers(request_: RacpRequest, payload: bytes) -> None:
    assert request_.encode() == payload
    assert RacpRequest.decode(payload) == request_


def test_ghs_sequence_filter_reads_a_uint32_operand() -> None:
    assert RacpRequest.decode(GHS_REPORT_FROM_0X01020304).sequence_filter == 0x01020304
    assert RacpRequest.decode(REPORT_FROM_6).sequence_filter == 6  # glucose unchanged


def test_ghs_number_of_records_is_a_uint32() -> None:
    assert racp.decode(GHS_NUMBER_OF_RECORDS_70000, octets=4) == NumberOfRecords(70_000, 4)
    assert NumberOfRecords(70_000, 4).encode() == GHS_NUMBER_OF_RECORDS_70000
    with pytest.raises(DecodeError):  # a 16-bit reader refuses the longer count
        racp.decode(GHS_NUMBER_OF_RECORDS_70000)


def test_a_record_key_wider_than_its_field_is_refused() -> None:
    with pytest.raises(GatewayError):
        RacpRequest.report_from(0x10000)  # glucose: uint16
    with pytest.raises(ValueError, match="2 or 4 octets"):
        RacpRequest.report_from(1, octets=3)


@given(st.integers(0, 0xFFFF_FFFF))
def test_ghs_report_from_round_trips_any_record_number(record: int) -> None:
    request_ = RacpRequest.decode(RacpRequest.report_from(record, octets=4).encode())
    assert request_.sequence_filter == record
