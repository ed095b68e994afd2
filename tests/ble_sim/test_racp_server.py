"""The device side of RACP without any bus: selection by operator and response codes."""

from __future__ import annotations

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
from rig.ble.racp_server import RecordStore, StoredRecord


def store_of(keys: list[int]) -> RecordStore:
    store = RecordStore()
    for key in keys:
        store.add(StoredRecord(key, ((0x2A18, key.to_bytes(2, "little")),)))
    return store


def answer(store: RecordStore, request: RacpRequest) -> tuple[list[int], racp.RacpIndication]:
    outcome = store.handle(request)
    return [r.key for r in outcome.records], racp.decode(outcome.response)


KEYS = st.lists(st.integers(0, 0xFFFF), unique=True, max_size=40)


@given(KEYS, st.integers(0, 0xFFFF))
def test_report_from_n_selects_exactly_the_keys_at_or_above_n(keys: list[int], n: int) -> None:
    selected, response = answer(store_of(keys), RacpRequest.report_from(n))
    expected = sorted(k for k in keys if k >= n)
    assert selected == expected
    code = ResponseCode.SUCCESS if expected else ResponseCode.NO_RECORDS_FOUND
    assert response == ResponseCodeResponse(OpCode.REPORT_STORED_RECORDS, code)


@given(KEYS, st.integers(0, 0xFFFF))
def test_count_and_delete_agree_with_the_filter(keys: list[int], n: int) -> None:
    store = store_of(keys)
    assert answer(store, RacpRequest.count_from(n))[1] == NumberOfRecords(
        sum(k >= n for k in keys))
    answer(store, RacpRequest.delete_up_to(n))
    assert store.keys == sorted(k for k in keys if k > n)


def test_first_last_range_and_refusals() -> None:
    store = store_of([5, 1, 9, 3])
    assert answer(store, RacpRequest(OpCode.REPORT_STORED_RECORDS, Operator.FIRST_RECORD))[0] \
        == [1]
    assert answer(store, RacpRequest(OpCode.REPORT_STORED_RECORDS, Operator.LAST_RECORD))[0] \
        == [9]
    within = RacpRequest(OpCode.REPORT_STORED_RECORDS, Operator.WITHIN_RANGE,
                         bytes((1, 2, 0, 8, 0)))
    assert answer(store, within)[0] == [3, 5]
    refusals = {
        RacpRequest(OpCode.REPORT_STORED_RECORDS, Operator.WITHIN_RANGE, bytes((1, 9, 0, 2, 0))):
            ResponseCode.INVALID_OPERAND,
        RacpRequest(OpCode.REPORT_STORED_RECORDS, Operator.GREATER_THAN_OR_EQUAL,
                    bytes((2, 0, 0, 0, 0, 0, 0, 0))): ResponseCode.OPERAND_NOT_SUPPORTED,
        RacpRequest(OpCode.REPORT_STORED_RECORDS, Operator.ALL_RECORDS, b"\x01"):
            ResponseCode.INVALID_OPERAND,
        RacpRequest(OpCode.REPORT_STORED_RECORDS, Operator(7)):
            ResponseCode.OPERATOR_NOT_SUPPORTED,
        RacpRequest(OpCode.REPORT_STORED_RECORDS, Operator.GREATER_THAN_OR_EQUAL):
            ResponseCode.INVALID_OPERAND,
    }
    for request, code in refusals.items():
        assert answer(store, request) == ([], ResponseCodeResponse(request.op_code, code))
    assert store.keys == [1, 3, 5, 9]


@given(st.lists(st.integers(0, 0xFFFF_FFFF), unique=True, max_size=40),
       st.integers(0, 0xFFFF_FFFF))
def test_ghs_store_selects_by_uint32_record_number(keys: list[int], n: int) -> None:
    store = RecordStore(key_octets=4)
    for key in keys:
        store.add(StoredRecord(key, ((0x2BDD, key.to_bytes(4, "little")),)))
    outcome = store.handle(RacpRequest.report_from(n, octets=4))
    assert [r.key for r in outcome.records] == sorted(k for k in keys if k >= n)
    count = store.handle(RacpRequest.count_from(n, octets=4))
    assert racp.decode(count.response, octets=4) == NumberOfRecords(
        len(outcome.records), 4)
    # a 16-bit operand sent to a GHS store is an invalid operand, never misread
    short = store.handle(RacpRequest.report_from(n & 0xFFFF))
    assert racp.decode(short.response) == ResponseCodeResponse(
        OpCode.REPORT_STORED_RECORDS, ResponseCode.INVALID_OPERAND)
