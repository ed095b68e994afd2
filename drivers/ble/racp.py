"""Record Access Control Point 0x2A52 (Glucose, CGM, Pulse Oximeter, Generic Health Sensor).

A value is: uint8 op code, uint8 operator, operand (variable). The collector writes requests;
the device answers by indication with either "Number of Stored Records Response" (op code 5,
operator Null, uint16 count) or "Response Code" (op code 6, operator Null, uint8 request op code,
uint8 response code). Stored records themselves arrive on the profile's measurement
characteristic between the request and its Response Code.

Catch-up after a reconnect (reference: health-devices.md): keep the last durably stored sequence
number N and ask for ``RacpRequest.report_from(N + 1)`` - no loss, no duplicates. For CGM the
filter (type 0x01) is the time offset in minutes instead of the sequence number.

Operand width. GLS / CGMS key records with a uint16 (sequence number, time offset); the Generic
Health Sensor keys its stored observations with the uint32 Record Number that starts each Stored
Health Observations body (drivers/ble/ghs.py), so its filter operand (type 0x01, "record
number") and its Number of Stored Records count are uint32 (``octets=4``; the public GHS
prototypes - Philips' GHS client and server, the STM32WBA sample - write 0x01 followed by four
octets). Those prototypes also offer "Combined Report" (op code 0x07, answered 0x08); we use the
plain "Report Stored Records" every RACP server has, closed by its Response Code (assumed
sufficient: the Combined Report only adds a count).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, TypeAlias

from drivers.ble.wire import OpenIntEnum, Reader, Writer

RACP_UUID = 0x2A52


class OpCode(OpenIntEnum):
    REPORT_STORED_RECORDS = 1
    DELETE_STORED_RECORDS = 2
    ABORT_OPERATION = 3
    REPORT_NUMBER_OF_STORED_RECORDS = 4
    NUMBER_OF_STORED_RECORDS_RESPONSE = 5
    RESPONSE_CODE = 6


class Operator(OpenIntEnum):
    NULL = 0
    ALL_RECORDS = 1
    LESS_THAN_OR_EQUAL = 2
    GREATER_THAN_OR_EQUAL = 3
    WITHIN_RANGE = 4
    FIRST_RECORD = 5
    LAST_RECORD = 6


class FilterType(OpenIntEnum):
    SEQUENCE_NUMBER = 1  # CGM: time offset
    USER_FACING_TIME = 2


class ResponseCode(OpenIntEnum):
    SUCCESS = 1
    OP_CODE_NOT_SUPPORTED = 2
    INVALID_OPERATOR = 3
    OPERATOR_NOT_SUPPORTED = 4
    INVALID_OPERAND = 5
    NO_RECORDS_FOUND = 6
    ABORT_UNSUCCESSFUL = 7
    PROCEDURE_NOT_COMPLETED = 8
    OPERAND_NOT_SUPPORTED = 9


KEY_OCTETS = (2, 4)  # GLS / CGMS uint16 keys; GHS uint32 record numbers


def _sequence_operand(sequence: int, octets: int = 2) -> bytes:
    if octets not in KEY_OCTETS:
        raise ValueError(f"a RACP record key has 2 or 4 octets, not {octets}")
    return Writer().u8(FilterType.SEQUENCE_NUMBER, "filter type").uint(
        sequence, octets, "sequence number").getvalue()


@dataclass(frozen=True, slots=True)
class RacpRequest:
    """A request the collector writes. Use the constructors; ``decode`` serves the simulator."""

    op_code: OpCode
    operator: Operator
    operand: bytes = b""

    @classmethod
    def report_all(cls) -> RacpRequest:
        return cls(OpCode.REPORT_STORED_RECORDS, Operator.ALL_RECORDS)

    @classmethod
    def report_from(cls, sequence: int, *, octets: int = 2) -> RacpRequest:
        """Report stored records with sequence number (CGM: time offset) >= ``sequence``."""
        return cls(OpCode.REPORT_STORED_RECORDS, Operator.GREATER_THAN_OR_EQUAL,
                   _sequence_operand(sequence, octets))

    @classmethod
    def count_all(cls) -> RacpRequest:
        return cls(OpCode.REPORT_NUMBER_OF_STORED_RECORDS, Operator.ALL_RECORDS)

    @classmethod
    def count_from(cls, sequence: int, *, octets: int = 2) -> RacpRequest:
        return cls(OpCode.REPORT_NUMBER_OF_STORED_RECORDS, Operator.GREATER_THAN_OR_EQUAL,
                   _sequence_operand(sequence, octets))

    @classmethod
    def delete_up_to(cls, sequence: int, *, octets: int = 2) -> RacpRequest:
        """Delete records <= ``sequence`` (only after they are durably stored here)."""
        return cls(OpCode.DELETE_STORED_RECORDS, Operator.LESS_THAN_OR_EQUAL,
                   _sequence_operand(sequence, octets))

    @classmethod
    def abort(cls) -> RacpRequest:
        return cls(OpCode.ABORT_OPERATION, Operator.NULL)

    def encode(self) -> bytes:
        return Writer().u8(self.op_code, "op code").u8(self.operator, "operator").raw(
            self.operand).getvalue()

    @classmethod
    def decode(cls, payload: bytes) -> RacpRequest:
        reader = Reader(payload, RACP_UUID)
        op_code, operator = OpCode(reader.u8("op code")), Operator(reader.u8("operator"))
        return cls(op_code, operator, reader.take(reader.remaining, "operand"))

    @property
    def sequence_filter(self) -> int | None:
        """The sequence number (CGM: time offset; GHS: record number) of a filter-type-0x01
        operand, if any (a uint16, or a GHS uint32)."""
        if len(self.operand) in (3, 5) and self.operand[0] == FilterType.SEQUENCE_NUMBER:
            return int.from_bytes(self.operand[1:], "little")
        return None


@dataclass(frozen=True, slots=True)
class NumberOfRecords:
    """Op code 5: how many stored records match the request."""

    OP_CODE: ClassVar[OpCode] = OpCode.NUMBER_OF_STORED_RECORDS_RESPONSE

    count: int
    octets: int = 2  # GHS: uint32

    def encode(self) -> bytes:
        return Writer().u8(self.OP_CODE, "op code").u8(Operator.NULL, "operator").uint(
            self.count, self.octets, "count").getvalue()

    def flag_summary(self) -> dict[str, object]:
        return {"op_code": OpCode(self.OP_CODE).label, "number_of_records": self.count}


@dataclass(frozen=True, slots=True)
class ResponseCodeResponse:
    """Op code 6: the outcome of the request with op code ``request_op_code``."""

    OP_CODE: ClassVar[OpCode] = OpCode.RESPONSE_CODE

    request_op_code: OpCode
    response_code: ResponseCode

    @property
    def success(self) -> bool:
        return self.response_code == ResponseCode.SUCCESS

    def encode(self) -> bytes:
        return Writer().u8(self.OP_CODE, "op code").u8(Operator.NULL, "operator").u8(
            self.request_op_code, "request op code").u8(self.response_code,
                                                       "response code").getvalue()

    def flag_summary(self) -> dict[str, object]:
        return {
            "op_code": OpCode(self.OP_CODE).label,
            "request_op_code": self.request_op_code.label,
            "response_code": self.response_code.label,
        }


RacpIndication: TypeAlias = NumberOfRecords | ResponseCodeResponse


def decode(payload: bytes, *, octets: int = 2) -> RacpIndication:
    """Decode an indication from the device (op code 5 or 6); anything else is a DecodeError.
    ``octets``: the width of a Number of Stored Records count (4 for GHS)."""
    reader = Reader(payload, RACP_UUID)
    op_code = OpCode(reader.u8("op code"))
    if op_code not in (OpCode.NUMBER_OF_STORED_RECORDS_RESPONSE, OpCode.RESPONSE_CODE):
        raise reader.error("op code is not a response op code")
    if reader.u8("operator") != Operator.NULL:
        raise reader.error("responses carry the Null operator")
    result: RacpIndication
    if op_code == OpCode.NUMBER_OF_STORED_RECORDS_RESPONSE:
        result = NumberOfRecords(reader.uint(octets, "number of records"), octets)
    else:
        request = OpCode(reader.u8("request op code"))
        result = ResponseCodeResponse(request, ResponseCode(reader.u8("response code")))
    reader.done()
    return result
