"""Events of the ASTM E1381 link machine (:mod:`drivers.serial.astm_link`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from drivers.serial.errors import AstmLinkError
from drivers.serial.events import NeedData, SendBytes


@dataclass(frozen=True, slots=True)
class FrameReceived:
    """A valid frame waits for :meth:`AstmLink.accept` or :meth:`AstmLink.reject`.

    ``record`` is the whole record (all its frames joined) when ``final`` is true.
    """

    number: int
    text: str
    final: bool
    record: str | None


@dataclass(frozen=True, slots=True)
class FrameAccepted:
    """A frame was ACKed; ``record`` is the completed record when ``final`` is true."""

    number: int
    text: str
    final: bool
    record: str | None


@dataclass(frozen=True, slots=True)
class DuplicateFrame:
    """The sender repeated the frame we already ACKed (our ACK was lost): ACKed and ignored."""

    number: int


@dataclass(frozen=True, slots=True)
class LinkProblem:
    """Something defective arrived and was dealt with (NAKed or discarded); the link goes on."""

    error: AstmLinkError


@dataclass(frozen=True, slots=True)
class MessageComplete:
    """The sender ended the transfer with EOT; ``records_text`` holds the accepted records (up
    to astm_link.MAX_MESSAGE_CHARS of them: ``truncated`` says some were only counted)."""

    records_text: str
    records: int = field(default=0, compare=False)  # how many were accepted
    truncated: bool = field(default=False, compare=False)


@dataclass(frozen=True, slots=True)
class TransferAborted:
    """The transfer ended abnormally; ``message_id`` is set when it was one of ours."""

    reason: str
    message_id: int | None = None


@dataclass(frozen=True, slots=True)
class MessageSent:
    """Every frame of our message was acknowledged and EOT was sent."""

    message_id: int


@dataclass(frozen=True, slots=True)
class ReceiverInterrupt:
    """The receiver answered a frame with EOT: accepted, with a request to stop (6.3.5)."""

    message_id: int


Event = (
    SendBytes
    | FrameReceived
    | FrameAccepted
    | DuplicateFrame
    | LinkProblem
    | MessageComplete
    | TransferAborted
    | MessageSent
    | ReceiverInterrupt
    | NeedData
)
