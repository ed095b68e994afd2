"""AT session core: commands, final result codes, URCs between and inside responses, timeouts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.serial.errors import SerialUsageError
from drivers.serial.events import NeedData, SendBytes
from drivers.serial.modem_at import (
    C5GREG,
    CEREG,
    CGPADDR,
    COPS,
    CREG,
    CSQ,
    AtCommand,
    AtSession,
    CommandCompleted,
    CommandFailed,
    CommandTimedOut,
    Event,
    StrayLine,
    UnsolicitedResult,
)

# AT+CSQ answered with URCs before and inside the response (CR LF framing as modems send it).
CSQ_TRANSCRIPT = b"\r\n+CEREG: 1\r\n\r\n+CSQ: 17,99\r\n\r\nRING\r\n\r\nOK\r\n"
# AT+CEREG? with echo on: a URC (stat first, quoted TAC) inside the read response (n, stat, ...).
CEREG_TRANSCRIPT = (
    b'AT+CEREG?\r\r\n+CEREG: 5,"1A2B","01A2B3C4",7\r\n+CEREG: 2,1,"1A2B","01A2B3C4",7\r\n\r\nOK\r\n'
)


def drain(session: AtSession) -> list[Event]:
    events: list[Event] = []
    while not isinstance(event := session.next_event(), NeedData):
        events.append(event)
    return events


def test_status_commands_are_the_27007_command_lines() -> None:
    assert [c.encode() for c in (CSQ, CREG, CEREG, C5GREG, COPS, CGPADDR)] == [
        b"AT+CSQ\r",
        b"AT+CREG?\r",
        b"AT+CEREG?\r",
        b"AT+C5GREG?\r",
        b"AT+COPS?\r",
        b"AT+CGPADDR\r",
    ]


def test_a_command_line_must_be_printable_and_start_with_at() -> None:
    for text in ("+CSQ", "AT+CSQ\r", "AT+CSQ;\x00"):
        with pytest.raises(SerialUsageError):
            AtCommand(text)


def test_urcs_before_and_inside_a_response_are_separated_out() -> None:
    session = AtSession()
    session.submit(CSQ, now_s=0.0)
    assert drain(session) == [SendBytes(b"AT+CSQ\r")]
    session.receive_data(CSQ_TRANSCRIPT, now_s=0.2)
    assert drain(session) == [
        UnsolicitedResult("+CEREG: 1"),
        UnsolicitedResult("RING"),
        CommandCompleted(CSQ, ("+CSQ: 17,99",)),
    ]


def test_a_registration_urc_is_told_from_the_read_response_and_the_echo_dropped() -> None:
    session = AtSession()
    session.submit(CEREG)
    drain(session)
    session.receive_data(CEREG_TRANSCRIPT)
    assert drain(session) == [
        UnsolicitedResult('+CEREG: 5,"1A2B","01A2B3C4",7'),
        CommandCompleted(CEREG, ('+CEREG: 2,1,"1A2B","01A2B3C4",7',)),
    ]


@pytest.mark.parametrize(
    ("reply", "final", "error"),
    [
        (b"\r\nERROR\r\n", "ERROR", None),
        (b"\r\n+CME ERROR: 10\r\n", "+CME ERROR: 10", 10),
        (
            b"\r\n+CME ERROR: SIM not inserted\r\n",
            "+CME ERROR: SIM not inserted",
            "SIM not inserted",
        ),
    ],
)
def test_error_final_result_codes_fail_the_command(
    reply: bytes, final: str, error: int | str | None
) -> None:
    session = AtSession()
    session.submit(COPS)
    drain(session)
    session.receive_data(reply)
    assert drain(session) == [CommandFailed(COPS, (), final, error)]


def test_a_command_without_an_answer_times_out_on_tick_and_the_next_one_is_sent() -> None:
    session = AtSession()
    session.submit(CSQ, now_s=10.0)
    session.submit(CGPADDR, now_s=10.0)
    assert drain(session) == [SendBytes(b"AT+CSQ\r")]
    session.tick(14.9)
    assert drain(session) == []
    session.tick(15.0)
    assert drain(session) == [CommandTimedOut(CSQ), SendBytes(b"AT+CGPADDR\r")]
    session.receive_data(b'\r\n+CGPADDR: 1,"10.64.0.7"\r\nOK\r\n')
    assert drain(session) == [CommandCompleted(CGPADDR, ('+CGPADDR: 1,"10.64.0.7"',))]
    assert not session.busy


def test_lines_with_no_command_running_are_urcs_or_stray_lines() -> None:
    session = AtSession()
    session.receive_data(b"\r\nOK\r\n\r\n+CSQ: 20,0\r\n\r\n^SYSSTART\r\nhello\r\n")
    assert drain(session) == [
        StrayLine("OK"),
        UnsolicitedResult("+CSQ: 20,0"),
        UnsolicitedResult("^SYSSTART"),
        StrayLine("hello"),
    ]


def test_a_response_split_across_reads_is_reassembled() -> None:
    session = AtSession()
    session.submit(CSQ)
    drain(session)
    for byte in CSQ_TRANSCRIPT:
        session.receive_data(bytes([byte]))
    assert drain(session)[-1] == CommandCompleted(CSQ, ("+CSQ: 17,99",))


KNOWN = (SendBytes, CommandCompleted, CommandFailed, CommandTimedOut, UnsolicitedResult, StrayLine)


@given(st.lists(st.binary(max_size=50), max_size=10))
def test_arbitrary_bytes_give_events_only_and_the_next_command_still_works(
    chunks: list[bytes],
) -> None:
    session = AtSession()
    session.submit(CSQ, now_s=0.0)
    for chunk in chunks:
        session.receive_data(chunk, now_s=1.0)
        assert all(isinstance(e, KNOWN) for e in drain(session))
    session.receive_data(b"\r\n")  # ends any half line the garbage left
    session.tick(100.0)
    drain(session)
    session.submit(CSQ)
    assert drain(session) == [SendBytes(b"AT+CSQ\r")]
    session.receive_data(b"\r\n+CSQ: 20,0\r\nOK\r\n")
    assert drain(session)[-1] == CommandCompleted(CSQ, ("+CSQ: 20,0",))
