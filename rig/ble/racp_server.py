"""The device side of the Record Access Control Point, sans I/O: which stored records a request
selects and what the device answers (GLS 1.0 / CGMS 1.0.1 "Record Access Control Point"
procedures; op codes, operators and response codes in ``drivers.ble.racp``).

``RecordStore.handle(request)`` returns the records to send (in key order) and the indication
that closes the procedure. Supported: report stored records, delete stored records, report
number of stored records, with operators all / <= / >= / within range / first / last and
filter type 0x01 (sequence number; CGM: time offset; GHS: the uint32 record number, with
``RecordStore(key_octets=4)``). User-facing time filters (0x02) are
answered "operand not supported". Abort is the caller's business (it owns the transfer).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from drivers.ble.racp import (
    FilterType,
    NumberOfRecords,
    OpCode,
    Operator,
    RacpRequest,
    ResponseCode,
    ResponseCodeResponse,
)


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """One record: its key (sequence number or time offset) and the values that carry it, in
    sending order as (characteristic uuid16, payload) - a glucose measurement and its context."""

    key: int
    values: tuple[tuple[int, bytes], ...]


@dataclass(frozen=True, slots=True)
class Outcome:
    records: tuple[StoredRecord, ...]
    response: bytes


class _Refused(Exception):  # noqa: N818 internal control flow, never escapes this module
    def __init__(self, code: ResponseCode) -> None:
        super().__init__(code.label)
        self.code = code


def respond(op_code: OpCode, code: ResponseCode) -> bytes:
    return ResponseCodeResponse(op_code, code).encode()


@dataclass
class RecordStore:
    records: list[StoredRecord] = field(default_factory=list)
    key_octets: int = 2  # the width of a filter operand and of a count: GHS uses 4

    def add(self, record: StoredRecord) -> None:
        keys = [r.key for r in self.records]
        at = bisect.bisect_right(keys, record.key)
        if at and keys[at - 1] == record.key:
            raise ValueError(f"a record with key {record.key} is already stored")
        self.records.insert(at, record)

    @property
    def keys(self) -> list[int]:
        return [r.key for r in self.records]

    def handle(self, request: RacpRequest) -> Outcome:
        op = request.op_code
        if op not in (OpCode.REPORT_STORED_RECORDS, OpCode.DELETE_STORED_RECORDS,
                      OpCode.REPORT_NUMBER_OF_STORED_RECORDS):
            return Outcome((), respond(op, ResponseCode.OP_CODE_NOT_SUPPORTED))
        try:
            selected = self.select(request.operator, request.operand)
        except _Refused as refused:
            return Outcome((), respond(op, refused.code))
        if op == OpCode.REPORT_NUMBER_OF_STORED_RECORDS:
            return Outcome((), NumberOfRecords(len(selected), self.key_octets).encode())
        if not selected:
            return Outcome((), respond(op, ResponseCode.NO_RECORDS_FOUND))
        if op == OpCode.DELETE_STORED_RECORDS:
            gone = {r.key for r in selected}
            self.records = [r for r in self.records if r.key not in gone]
            return Outcome((), respond(op, ResponseCode.SUCCESS))
        return Outcome(tuple(selected), respond(op, ResponseCode.SUCCESS))

    def select(self, operator: Operator, operand: bytes) -> list[StoredRecord]:
        if operator == Operator.NULL:
            raise _Refused(ResponseCode.INVALID_OPERATOR)
        if operator in (Operator.ALL_RECORDS, Operator.FIRST_RECORD, Operator.LAST_RECORD):
            if operand:
                raise _Refused(ResponseCode.INVALID_OPERAND)
            if operator == Operator.ALL_RECORDS or not self.records:
                return list(self.records)
            return [self.records[0] if operator == Operator.FIRST_RECORD else self.records[-1]]
        if operator in (Operator.LESS_THAN_OR_EQUAL, Operator.GREATER_THAN_OR_EQUAL):
            (bound,) = self._bounds(operand, 1)
            if operator == Operator.LESS_THAN_OR_EQUAL:
                return [r for r in self.records if r.key <= bound]
            return [r for r in self.records if r.key >= bound]
        if operator == Operator.WITHIN_RANGE:
            low, high = self._bounds(operand, 2)
            if low > high:
                raise _Refused(ResponseCode.INVALID_OPERAND)
            return [r for r in self.records if low <= r.key <= high]
        raise _Refused(ResponseCode.OPERATOR_NOT_SUPPORTED)

    def _bounds(self, operand: bytes, count: int) -> list[int]:
        if not operand:
            raise _Refused(ResponseCode.INVALID_OPERAND)
        if operand[0] != FilterType.SEQUENCE_NUMBER:
            raise _Refused(ResponseCode.OPERAND_NOT_SUPPORTED)
        size = self.key_octets
        if len(operand) != 1 + size * count:
            raise _Refused(ResponseCode.INVALID_OPERAND)
        return [int.from_bytes(operand[1 + size * i:1 + size * (i + 1)], "little")
                for i in range(count)]
