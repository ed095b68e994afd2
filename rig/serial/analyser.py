"""A point-of-care analyser (CRP and others) that sends ASTM E1394 results over E1381.

It plays the instrument role of :class:`~drivers.serial.astm_link.AstmLink` (the same core the
gateway uses, from the other side), so establishment, frame retransmission on NAK, the 15 s reply
timer, the termination phase and contention follow the standard. Like a real analyser it keeps a
result "unsent" until every frame of its message was acknowledged and EOT sent: a transfer that
was aborted (timer, six NAKs, EOT from the receiver, cable pulled) is tried again after
``retry_after_s``, which is what lets the gateway delay the final ACK until its commit is durable.

Fault injection (:class:`AnalyserFaults`, see :meth:`AstmAnalyserSim.inject`): frames with a bad
checksum, line noise (including stray ENQ / NAK bytes) before frames, replies the analyser does not
hear (its reply timer then expires), and a hang in the middle of a transfer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from drivers.serial.astm_frames import ACK, EOT, NAK, STX, frames_for_records
from drivers.serial.astm_link import (
    AcceptPolicy,
    AstmLink,
    LinkTimers,
    MessageSent,
    Role,
    TransferAborted,
)
from drivers.serial.astm_records import (
    encode_message,
    header,
    order,
    patient,
    result,
    terminator,
)
from drivers.serial.events import NeedData, SendBytes
from rig.serial.pty_device import PtyDevice

_REPLY_NAMES = {ACK: "ACK", NAK: "NAK", EOT: "EOT"}


@dataclass(frozen=True, slots=True)
class AnalyserFaults:
    corrupt_frames: int = 0  # the next N frames go out with a wrong checksum
    noisy_frames: int = 0  # the next N frames are preceded by ``noise``
    noise: bytes = b"\x00\xff\x05\x15garbage"
    deaf_replies: int = 0  # the next N replies of the gateway are not heard
    hang_after_frames: int | None = None  # go silent after N frames of the next transfer ...
    hang_s: float = 2.0  # ... for this long, then restart (the message stays unsent)


@dataclass(frozen=True, slots=True)
class Reply:
    """What the gateway answered to one frame: ``record_type`` of the record the frame ends."""

    time_s: float
    message: int
    frame_index: int
    record_type: str
    final: bool
    reply: str  # "ACK", "NAK" or "EOT"


@dataclass(slots=True)
class _Message:
    key: int
    records: tuple[str, ...]
    frames: list[bytes]
    kinds: list[tuple[str, bool]]  # per frame: type of the record it belongs to, final?
    attempts: int = 0
    due_s: float = 0.0


def crp_message(
    value: str = "5.0",
    *,
    unit: str = "mg/L",
    completed: datetime | None = None,
    serial_number: str = "AS0012345",
    specimen: str = "S-0001",
    extra_results: int = 0,
) -> list[str]:
    """A CRP result message as an Afinion-style analyser sends it (record texts, no CR)."""
    results = [
        result(
            1, "CRP", value, units=unit, reference_range="0 to 10", flags="N", completed=completed
        )
    ]
    for n in range(extra_results):  # further analytes of the same sample (multi-result message)
        results.append(result(2 + n, "GLU", f"{95 + n}", units="mg/dL", completed=completed))
    return encode_message(
        [
            header(("Afinion 2", "1.10", serial_number), timestamp=completed),
            patient(1),
            order(1, specimen, ["CRP"]),
            *results,
            terminator(),
        ]
    )


class AstmAnalyserSim(PtyDevice):
    def __init__(
        self,
        link: Path,
        *,
        timers: LinkTimers | None = None,
        retry_after_s: float = 2.0,
        max_attempts: int = 100,
        serial_number: str = "AS0012345",
        name: str = "astm-analyser",
    ) -> None:
        super().__init__(link, name=name)
        self.serial_number = serial_number
        self.timers = timers or LinkTimers()
        self.retry_after_s = retry_after_s
        self.max_attempts = max_attempts
        self.faults = AnalyserFaults()
        self.replies: list[Reply] = []
        self.delivered: list[int] = []  # message keys whose transfer completed
        self.aborted: list[tuple[int, str]] = []
        self._link = AstmLink(Role.INSTRUMENT, policy=AcceptPolicy.AUTO, timers=self.timers)
        self._pending: list[_Message] = []
        self._current: _Message | None = None
        self._frame_index = -1
        self._last_frame = b""
        self._hung_until: float | None = None
        self._frames_this_transfer = 0
        self._next_key = 1

    # --- API (any thread) ---------------------------------------------------------------------

    def queue_message(self, records: Sequence[str]) -> int:
        frames = frames_for_records(records)
        kinds: list[tuple[str, bool]] = []
        for text in records:
            n = len(frames_for_records([text]))
            kinds += [(text[:1], i == n - 1) for i in range(n)]
        with self.lock:
            key, self._next_key = self._next_key, self._next_key + 1
        message = _Message(key, tuple(records), frames, kinds)
        self.call(lambda: self._pending.append(message))
        return key

    def send_crp(
        self,
        value: str = "5.0",
        *,
        unit: str = "mg/L",
        completed: datetime | None = None,
        specimen: str = "S-0001",
        extra_results: int = 0,
    ) -> int:
        """Queue a CRP result message (with ``extra_results`` glucose results after it)."""
        return self.queue_message(
            crp_message(
                value,
                unit=unit,
                completed=completed,
                serial_number=self.serial_number,
                specimen=specimen,
                extra_results=extra_results,
            )
        )

    def inject(self, faults: AnalyserFaults) -> None:
        """Replace the fault settings (counters count down as faults are used up)."""

        def apply() -> None:
            self.faults = faults

        self.call(apply)

    def replies_to(self, record_type: str, *, reply: str = "ACK") -> list[Reply]:
        with self.lock:
            return [
                r
                for r in self.replies
                if r.record_type == record_type and r.final and r.reply == reply
            ]

    # --- device thread ------------------------------------------------------------------------

    def on_plug(self, plugged: bool, now: float) -> None:
        if not plugged:  # the cable was pulled: whatever was in flight is unsent
            self._restart(now, "cable unplugged")

    def on_data(self, data: bytes, now: float) -> None:
        if self._hung_until is not None:
            return
        for byte in data:
            if byte in _REPLY_NAMES and self._current is not None and self._frame_index >= 0:
                if self.faults.deaf_replies:
                    self.faults = dataclasses.replace(
                        self.faults, deaf_replies=self.faults.deaf_replies - 1
                    )
                    continue
                kind, final = self._current.kinds[self._frame_index]
                self.replies.append(
                    Reply(
                        now, self._current.key, self._frame_index, kind, final, _REPLY_NAMES[byte]
                    )
                )
            self._link.receive_data(bytes([byte]), now)
        self._drain(now)

    def on_tick(self, now: float) -> None:
        if self._hung_until is not None:
            if now < self._hung_until:
                return
            self._hung_until = None
            self._restart(now, "analyser restarted after a hang")
        self._link.tick(now)
        if self._current is None and self.plugged:
            due = [m for m in self._pending if m.due_s <= now]
            if due:
                message = due[0]
                self._pending.remove(message)
                self._current, self._frame_index, self._last_frame = message, -1, b""
                self._frames_this_transfer = 0
                message.attempts += 1
                self._link.send_message(message.records, now)
        self._drain(now)

    def _drain(self, now: float) -> None:
        while not isinstance(event := self._link.next_event(), NeedData):
            if isinstance(event, SendBytes):
                self._write(event.data, now)
            elif isinstance(event, MessageSent) and self._current is not None:
                self.delivered.append(self._current.key)
                self._current = None
            elif isinstance(event, TransferAborted) and self._current is not None:
                self._requeue(now, event.reason)

    def _write(self, data: bytes, now: float) -> None:
        if self._hung_until is not None:
            return
        if data[:1] != bytes([STX]):
            self.send(data)
            return
        if data != self._last_frame:  # a new frame, not the retransmission of the last one
            self._frame_index += 1
            self._last_frame = data
        self._frames_this_transfer += 1
        faults = self.faults
        if faults.noisy_frames:
            self.send(faults.noise)
            faults = dataclasses.replace(faults, noisy_frames=faults.noisy_frames - 1)
        if faults.corrupt_frames:
            data = data[:-4] + (b"00" if data[-4:-2] != b"00" else b"01") + data[-2:]
            faults = dataclasses.replace(faults, corrupt_frames=faults.corrupt_frames - 1)
        self.faults = faults
        self.send(data)
        if faults.hang_after_frames is not None and (
            self._frames_this_transfer >= faults.hang_after_frames
        ):
            self.faults = dataclasses.replace(faults, hang_after_frames=None)
            self._hung_until = now + faults.hang_s

    def _restart(self, now: float, reason: str) -> None:
        self._link = AstmLink(Role.INSTRUMENT, policy=AcceptPolicy.AUTO, timers=self.timers)
        if self._current is not None:
            self._requeue(now, reason)

    def _requeue(self, now: float, reason: str) -> None:
        message, self._current = self._current, None
        if message is None:
            return
        self.aborted.append((message.key, reason))
        if message.attempts < self.max_attempts:
            message.due_s = now + self.retry_after_s
            self._pending.insert(0, message)
