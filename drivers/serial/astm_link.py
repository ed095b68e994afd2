"""ASTM E1381 (CLSI LIS1-A) link layer as a sans-I/O state machine, in the style of h11.

The caller owns the port and the clock. It feeds received bytes (:meth:`AstmLink.receive_data`),
tells the machine the time (:meth:`AstmLink.tick`, monotonic seconds; any method also takes
``now_s``), and drains events with :meth:`AstmLink.next_event` until it returns ``NEED_DATA``.
:class:`~drivers.serial.events.SendBytes` events are written to the port in order.

Acknowledging a frame is an application decision. With the default
``AcceptPolicy.HOLD_RECORDS``, intermediate (ETB) frames are ACKed at once, but the last frame of
every record (ETX) is reported as :class:`FrameReceived` (carrying the whole reassembled record)
and is ACKed only when the caller calls :meth:`AstmLink.accept`. A driver therefore:

1. accepts H/P/O/C records at once (they hold no reading of their own);
2. for a record that carries readings (R) or ends a message (L): decodes it, enqueues the
   measurements, waits until the outbox commit is durable, then calls ``accept()``;
3. calls ``reject()`` (NAK: the analyser resends the frame) when the commit failed.

Until ``accept()`` the analyser's reply timer runs (15 s, E1381 6.5.2); if it expires the
analyser ends the transfer (EOT, reported as :class:`TransferAborted`) and a late ``accept()``
returns False. Nothing was confirmed that is not stored: if the analyser retransmits later, the
provider de-duplicates.

Roles: the host (computer system, LIS) yields on contention - when both sides send ENQ, the
instrument has priority (6.2.1) - and waits for the instrument's next ENQ; the instrument waits
1 s and sends ENQ again. The instrument role exists for the serial-device simulator.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from drivers.serial.astm_events import (
    DuplicateFrame,
    Event,
    FrameAccepted,
    FrameReceived,
    LinkProblem,
    MessageComplete,
    MessageSent,
    ReceiverInterrupt,
    TransferAborted,
)
from drivers.serial.astm_frames import (
    ACK,
    ENQ,
    EOT,
    NAK,
    Frame,
    FrameCollector,
    frames_for_records,
    parse_frame,
)
from drivers.serial.errors import AstmLinkError
from drivers.serial.events import NEED_DATA, SendBytes

__all__ = [
    "AcceptPolicy",
    "AstmLink",
    "DuplicateFrame",
    "Event",
    "FrameAccepted",
    "FrameReceived",
    "LinkProblem",
    "LinkState",
    "LinkTimers",
    "MessageComplete",
    "MessageSent",
    "ReceiverInterrupt",
    "Role",
    "TransferAborted",
]

# Bounds on what one sender can make us hold (CONVENTIONS 8), each with its behaviour at the cap:
# - a record longer than MAX_RECORD_CHARS: its further frames are NAKed (a stuck sender, not a
#   record); the sender retries, then ends the transfer and keeps the message;
# - more than MAX_RECORDS_PER_MESSAGE records in one transfer: the next record's last frame is
#   NAKed the same way (each earlier record was handled, and ACKed, on its own);
# - accepted record text kept for MessageComplete: up to MAX_MESSAGE_CHARS, then only counted
#   (``MessageComplete.truncated``); the driver needs the count, not the text.
MAX_RECORD_CHARS = 64 * 1024
MAX_RECORDS_PER_MESSAGE = 10_000
MAX_MESSAGE_CHARS = 256 * 1024


class Role(enum.Enum):
    HOST = "host"  # the computer system (LIS): loses contention
    INSTRUMENT = "instrument"  # the analyser: wins contention


class AcceptPolicy(enum.Enum):
    AUTO = "auto"  # ACK every valid frame (capture decoding, simulators)
    HOLD_RECORDS = "hold-records"  # hold the last frame of each record for accept()/reject()
    HOLD_ALL = "hold-all"  # hold every frame


class LinkState(enum.Enum):
    NEUTRAL = "neutral"
    RECEIVING = "receiving"
    AWAITING_DECISION = "awaiting-decision"  # a frame waits for accept() / reject()
    AWAITING_ENQ_REPLY = "awaiting-enq-reply"
    AWAITING_FRAME_REPLY = "awaiting-frame-reply"
    ENQ_BACKOFF = "enq-backoff"  # receiver was busy (or we lost contention as instrument)
    CONTENTION_WAIT = "contention-wait"  # host: the instrument won, wait for its ENQ


@dataclass(frozen=True, slots=True)
class LinkTimers:
    """E1381 6.5.2 timers plus the establishment back-offs (6.2)."""

    reply_s: float = 15.0  # sender: reply to ENQ or to a frame
    receive_s: float = 30.0  # receiver: next frame or EOT
    busy_retry_s: float = 10.0  # sender: wait after a NAK to ENQ before the next ENQ
    contention_retry_s: float = 1.0  # instrument: wait after contention before ENQ again
    # Host: if the instrument does not follow up a contention with ENQ, try again after this.
    # (Our choice; E1381 only says the host must stop trying and prepare to receive.)
    host_contention_wait_s: float = 20.0
    max_attempts: int = 6  # frame sends (and busy ENQs) before the sender gives up


class AstmLink:
    """One end of an E1381 link (see the module docstring for the accept protocol)."""

    def __init__(
        self,
        role: Role = Role.HOST,
        *,
        policy: AcceptPolicy = AcceptPolicy.HOLD_RECORDS,
        timers: LinkTimers | None = None,
    ) -> None:
        self.role = role
        self.policy = policy
        self.timers = timers or LinkTimers()
        self._events: deque[Event] = deque()
        self._state = LinkState.NEUTRAL
        self._now = 0.0
        self._deadline: float | None = None
        self._ready = True
        self._collector = FrameCollector()
        self._expected = 1
        self._last: int | None = None
        self._partial: list[str] = []
        self._records: list[str] = []
        self._record_count = 0  # records accepted in this transfer (MAX_RECORDS_PER_MESSAGE)
        self._kept_chars = 0  # their text kept for MessageComplete (MAX_MESSAGE_CHARS)
        self._truncated = False
        self._held: Frame | None = None
        self._outbox: deque[tuple[int, tuple[str, ...]]] = deque()
        self._next_id = 1
        self._frames: list[bytes] = []
        self._index = 0
        self._failures = 0
        self._busy_count = 0

    @property
    def state(self) -> LinkState:
        return self._state

    def set_ready(self, ready: bool) -> None:
        """When not ready, an ENQ is answered with NAK (receiver busy, E1381 6.2)."""
        self._ready = ready

    def next_event(self) -> Event:
        return self._events.popleft() if self._events else NEED_DATA

    def send_message(self, records: Sequence[str], now_s: float | None = None) -> int:
        """Queue one message (records without their CR) for sending; returns its id."""
        frames_for_records(records)  # refuse bad text now, not half-way through a transfer
        message_id = self._next_id
        self._next_id += 1
        self._outbox.append((message_id, tuple(records)))
        self._clock(now_s)
        self._maybe_start()
        return message_id

    def receive_data(self, data: bytes, now_s: float | None = None) -> None:
        self._clock(now_s)
        for byte in data:
            self._on_byte(byte)

    def tick(self, now_s: float) -> None:
        self._clock(now_s)

    def accept(self, now_s: float | None = None) -> bool:
        """ACK the held frame; False if there is none any more (the transfer ended meanwhile)."""
        self._clock(now_s)
        if self._state is not LinkState.AWAITING_DECISION or self._held is None:
            return False
        frame, self._held = self._held, None
        self._take(frame)
        return True

    def reject(self, now_s: float | None = None) -> bool:
        """NAK the held frame (the sender resends it); False if there is none any more."""
        self._clock(now_s)
        if self._state is not LinkState.AWAITING_DECISION or self._held is None:
            return False
        self._held = None
        self._reply(NAK, LinkState.RECEIVING, self.timers.receive_s)
        return True

    # --- internals -----------------------------------------------------------------------------

    def _emit(self, event: Event) -> None:
        self._events.append(event)

    def _reply(self, byte: int, state: LinkState, timeout_s: float | None) -> None:
        self._emit(SendBytes(bytes([byte])))
        self._enter(state, timeout_s)

    def _enter(self, state: LinkState, timeout_s: float | None) -> None:
        self._state = state
        self._deadline = None if timeout_s is None else self._now + timeout_s

    def _clock(self, now_s: float | None) -> None:
        if now_s is not None and now_s > self._now:
            self._now = now_s
        if self._deadline is not None and self._now >= self._deadline:
            self._deadline = None
            self._on_timeout()

    def _on_timeout(self) -> None:
        state = self._state
        if state is LinkState.RECEIVING:
            self._reset_receiver()
            self._enter(LinkState.NEUTRAL, None)
            self._emit(TransferAborted("no frame or EOT within the receive timer"))
            self._maybe_start()
        elif state in (LinkState.AWAITING_ENQ_REPLY, LinkState.AWAITING_FRAME_REPLY):
            self._give_up("no reply within the reply timer")
        elif state in (LinkState.ENQ_BACKOFF, LinkState.CONTENTION_WAIT):
            self._send_enq()

    def _on_byte(self, byte: int) -> None:
        state = self._state
        if state in (LinkState.NEUTRAL, LinkState.CONTENTION_WAIT, LinkState.ENQ_BACKOFF):
            if byte == ENQ:  # the line is neutral: the other side may start a transfer
                self._answer_enq()
        elif state is LinkState.RECEIVING:
            self._on_receiving_byte(byte)
        elif state is LinkState.AWAITING_DECISION:
            if byte == EOT:  # the sender gave up waiting for our ACK
                self._reset_receiver()
                self._enter(LinkState.NEUTRAL, None)
                self._emit(TransferAborted("sender ended the transfer before our accept()"))
                self._maybe_start()
        elif state is LinkState.AWAITING_ENQ_REPLY:
            self._on_enq_reply(byte)
        elif state is LinkState.AWAITING_FRAME_REPLY:
            self._on_frame_reply(byte)

    # receiving side

    def _answer_enq(self) -> None:
        if not self._ready:
            self._emit(SendBytes(bytes([NAK])))
            return
        self._reset_receiver()
        self._reply(ACK, LinkState.RECEIVING, self.timers.receive_s)

    def _reset_receiver(self) -> None:
        self._collector.reset()
        self._expected, self._last, self._held = 1, None, None
        self._partial, self._records = [], []
        self._record_count, self._kept_chars, self._truncated = 0, 0, False

    def _on_receiving_byte(self, byte: int) -> None:
        if not self._collector.in_frame and byte == EOT:
            if self._partial:
                self._emit(LinkProblem(AstmLinkError("transfer ended inside a record")))
            records = "".join(self._records)
            count, truncated = self._record_count, self._truncated
            self._reset_receiver()
            self._enter(LinkState.NEUTRAL, None)
            if count:
                self._emit(MessageComplete(records, records=count, truncated=truncated))
            self._maybe_start()
            return
        raw, restarted = self._collector.push(byte)
        if restarted:
            self._emit(LinkProblem(AstmLinkError("frame interrupted by a new STX")))
        if raw is not None:
            self._on_frame(raw)

    def _on_frame(self, raw: bytes) -> None:
        try:
            frame = parse_frame(raw)
        except AstmLinkError as exc:
            self._emit(LinkProblem(exc))
            self._reply(NAK, LinkState.RECEIVING, self.timers.receive_s)
            return
        if frame.number == self._expected:
            if sum(map(len, self._partial)) + len(frame.text) > MAX_RECORD_CHARS:
                self._emit(
                    LinkProblem(
                        AstmLinkError("record exceeds the size limit", cap=MAX_RECORD_CHARS)
                    )
                )
                self._reply(NAK, LinkState.RECEIVING, self.timers.receive_s)
            elif frame.final and self._record_count >= MAX_RECORDS_PER_MESSAGE:
                self._emit(
                    LinkProblem(
                        AstmLinkError(
                            "message exceeds the record limit", cap=MAX_RECORDS_PER_MESSAGE
                        )
                    )
                )
                self._reply(NAK, LinkState.RECEIVING, self.timers.receive_s)
            elif self.policy is AcceptPolicy.HOLD_ALL or (
                self.policy is AcceptPolicy.HOLD_RECORDS and frame.final
            ):
                self._held = frame
                self._enter(LinkState.AWAITING_DECISION, None)
                record = "".join(self._partial) + frame.text if frame.final else None
                self._emit(FrameReceived(frame.number, frame.text, frame.final, record))
            else:
                self._take(frame)
        elif frame.number == self._last:
            self._reply(ACK, LinkState.RECEIVING, self.timers.receive_s)
            self._emit(DuplicateFrame(frame.number))
        else:
            self._emit(
                LinkProblem(
                    AstmLinkError(
                        "unexpected frame number",
                        received=frame.number,
                        expected=self._expected,
                    )
                )
            )
            self._reply(NAK, LinkState.RECEIVING, self.timers.receive_s)

    def _take(self, frame: Frame) -> None:
        self._reply(ACK, LinkState.RECEIVING, self.timers.receive_s)
        self._last, self._expected = frame.number, (frame.number + 1) % 8
        record: str | None = None
        if frame.final:
            record = "".join(self._partial) + frame.text
            self._record_count += 1
            if self._kept_chars + len(record) <= MAX_MESSAGE_CHARS:
                self._records.append(record)
                self._kept_chars += len(record)
            else:
                self._truncated = True
            self._partial = []
        else:
            self._partial.append(frame.text)
        self._emit(FrameAccepted(frame.number, frame.text, frame.final, record))

    # sending side

    def _maybe_start(self) -> None:
        if self._state is LinkState.NEUTRAL and self._outbox:
            self._busy_count = 0
            self._send_enq()

    def _send_enq(self) -> None:
        self._reply(ENQ, LinkState.AWAITING_ENQ_REPLY, self.timers.reply_s)

    def _on_enq_reply(self, byte: int) -> None:
        if byte == ACK:
            self._frames = frames_for_records(self._outbox[0][1])
            self._index, self._failures = 0, 0
            self._send_frame()
        elif byte == NAK:
            self._busy_count += 1
            if self._busy_count >= self.timers.max_attempts:
                self._drop_message(f"receiver busy after {self._busy_count} ENQ attempts")
            else:
                self._enter(LinkState.ENQ_BACKOFF, self.timers.busy_retry_s)
        elif byte == ENQ:  # contention (6.2.1)
            if self.role is Role.HOST:
                self._enter(LinkState.CONTENTION_WAIT, self.timers.host_contention_wait_s)
            else:
                self._enter(LinkState.ENQ_BACKOFF, self.timers.contention_retry_s)
        # any other byte is line noise while establishing: ignored

    def _send_frame(self) -> None:
        self._emit(SendBytes(self._frames[self._index]))
        self._enter(LinkState.AWAITING_FRAME_REPLY, self.timers.reply_s)

    def _on_frame_reply(self, byte: int) -> None:
        message_id = self._outbox[0][0]
        if byte in (ACK, EOT):  # EOT: accepted, with a request to stop - which we may ignore
            if byte == EOT:
                self._emit(ReceiverInterrupt(message_id))
            self._index, self._failures = self._index + 1, 0
            if self._index < len(self._frames):
                self._send_frame()
                return
            self._outbox.popleft()
            self._reply(EOT, LinkState.NEUTRAL, None)
            self._emit(MessageSent(message_id))
            self._maybe_start()
            return
        self._failures += 1  # NAK, or any other character, asks for the frame again
        if self._failures >= self.timers.max_attempts:
            self._give_up(f"frame refused {self._failures} times")
        else:
            self._send_frame()

    def _give_up(self, reason: str) -> None:
        self._emit(SendBytes(bytes([EOT])))  # termination phase (6.4)
        self._drop_message(reason)

    def _drop_message(self, reason: str) -> None:
        message_id = self._outbox.popleft()[0]
        self._enter(LinkState.NEUTRAL, None)
        self._emit(TransferAborted(reason, message_id))
        self._maybe_start()
