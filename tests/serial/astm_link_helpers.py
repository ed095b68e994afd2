"""Shared vectors and helpers of the ASTM link tests."""

from __future__ import annotations

from drivers.serial.astm_frames import frames_for_records
from drivers.serial.astm_link import AcceptPolicy, AstmLink, Event, LinkState
from drivers.serial.events import NeedData, SendBytes

ENQ, ACK, NAK, EOT = b"\x05", b"\x06", b"\x15", b"\x04"

# A CRP result message as an analyser sends it (E1394 records, one frame each).
CRP_RECORDS = [
    "H|\\^&|||Afinion 2^1.10^AS0012345|||||||P|LIS2-A2|20240301102000",
    "P|1",
    "O|1|S-0042||^^^CRP|R||||||N||||||||||||||F",
    "R|1|^^^CRP|5.0|mg/L|0 to 10|N||F||||20240301101500",
    "L|1|N",
]
CRP_FRAMES = frames_for_records(CRP_RECORDS)
# A comment record of 520 characters: two ETB frames and a final ETX frame (CR included).
LONG_RECORD = "C|1|I|" + "x" * 514
LONG_FRAMES = frames_for_records([LONG_RECORD])


def drain(link: AstmLink) -> list[Event]:
    events: list[Event] = []
    while not isinstance(event := link.next_event(), NeedData):
        events.append(event)
    return events


def sent(events: list[Event]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, SendBytes))


def state_of(link: AstmLink) -> LinkState:
    """The state, read through a call so mypy does not pin it after an earlier assert."""
    return link.state


def receiving(policy: AcceptPolicy = AcceptPolicy.AUTO) -> AstmLink:
    link = AstmLink(policy=policy)
    link.receive_data(ENQ, now_s=0.0)
    assert sent(drain(link)) == ACK
    return link
