"""ASTM E1381 (CLSI LIS1-A) frames: checksum, encoding, splitting, parsing, byte collection.

A frame is ``<STX> FN text <ETB|ETX> C1 C2 <CR><LF>`` (E1381 6.3.1): FN is one ASCII digit, the
frame number modulo 8 (6.3.2); text is at most 240 characters; ETB marks an intermediate frame of a
record that continues, ETX the last frame of a record. C1 C2 is the checksum (6.3.3): the sum of the
bytes from FN up to and including ETB/ETX, modulo 256, as two upper-case hexadecimal characters.
Text may not contain the restricted characters of 6.6 (LF only ever appears in the trailer).

Text is handled as Latin-1 so every byte maps to exactly one character and back.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from drivers.serial.errors import AstmLinkError, SerialUsageError

STX = 0x02
ETX = 0x03
EOT = 0x04
ENQ = 0x05
ACK = 0x06
LF = 0x0A
CR = 0x0D
NAK = 0x15
ETB = 0x17

MAX_TEXT = 240  # E1381 6.3.1: a frame carries at most 240 characters of text
_OVERHEAD = 7  # STX, FN, ETB/ETX, C1, C2, CR, LF
# E1381 6.6: SOH STX ETX EOT ENQ ACK DLE NAK SYN ETB, DC1-DC4, and LF (only in the trailer).
RESTRICTED = frozenset(
    {0x01, STX, ETX, EOT, ENQ, ACK, 0x10, NAK, 0x16, ETB, 0x11, 0x12, 0x13, 0x14, LF}
)
# A frame that has not ended after this many bytes is noise; the collector gives up on it.
_COLLECT_LIMIT = 4 * (MAX_TEXT + _OVERHEAD)


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame: its number (0-7), its text and whether it ends a record (ETX)."""

    number: int
    text: str
    final: bool

    def __post_init__(self) -> None:
        if not 0 <= self.number <= 7:
            raise SerialUsageError(f"frame number {self.number} is not 0-7")
        check_text(self.text)

    def encode(self) -> bytes:
        return encode_frame(self.number, self.text, final=self.final)


def checksum(body: bytes) -> bytes:
    """C1 C2 for ``body`` = FN through ETB/ETX (E1381 6.3.3)."""
    return b"%02X" % (sum(body) % 256)


def check_text(text: str) -> None:
    """Refuse text we may not put into a frame (our bug, so a usage error, not a protocol one)."""
    if len(text) > MAX_TEXT:
        raise SerialUsageError(f"frame text of {len(text)} characters exceeds {MAX_TEXT}")
    try:
        raw = text.encode("latin-1")
    except UnicodeEncodeError:
        raise SerialUsageError("frame text must be Latin-1") from None
    bad = sorted({b for b in raw if b in RESTRICTED})
    if bad:
        raise SerialUsageError(f"frame text contains restricted characters {bad}")


def encode_frame(number: int, text: str, *, final: bool) -> bytes:
    """The bytes of one frame (``number`` is taken modulo 8)."""
    check_text(text)
    body = bytes([0x30 + number % 8]) + text.encode("latin-1") + bytes([ETX if final else ETB])
    return bytes([STX]) + body + checksum(body) + bytes([CR, LF])


def split_record(record: str, max_text: int = MAX_TEXT) -> list[tuple[str, bool]]:
    """Cut one record (ending in CR) into frame texts: ``[(text, final), ...]``.

    Each record starts a new frame (E1394 / LIS2-A2 over LIS1-A); a record longer than
    ``max_text`` continues in further frames, all but the last ending in ETB.
    """
    if not record.endswith("\r"):
        record += "\r"
    if "\r" in record[:-1]:
        raise SerialUsageError("a record may not contain CR: it would read as two records")
    chunks = [record[i : i + max_text] for i in range(0, len(record), max_text)]
    return [(chunk, i == len(chunks) - 1) for i, chunk in enumerate(chunks)]


def frames_for_records(records: Sequence[str], first_number: int = 1) -> list[bytes]:
    """Encode ``records`` as consecutive frames, numbering from ``first_number`` (modulo 8)."""
    out: list[bytes] = []
    number = first_number
    for record in records:
        for text, final in split_record(record):
            out.append(encode_frame(number, text, final=final))
            number = (number + 1) % 8
    return out


def parse_frame(raw: bytes) -> Frame:
    """Decode one collected frame (STX .. LF); AstmLinkError says what is wrong with it."""
    if len(raw) < _OVERHEAD or raw[0] != STX:
        raise AstmLinkError("frame too short or not starting with STX", length=len(raw))
    if raw[-2:] != bytes([CR, LF]):
        raise AstmLinkError("frame does not end in CR LF", length=len(raw))
    end = raw[-5]
    if end not in (ETX, ETB):
        raise AstmLinkError("frame has no ETX/ETB before its checksum", length=len(raw))
    body = raw[1:-4]
    received = raw[-4:-2].upper()  # E1381 asks for upper case; lower case costs nothing to accept
    expected = checksum(body)
    if received != expected:
        raise AstmLinkError(
            "frame checksum mismatch",
            received=received.decode("latin-1"),
            expected=expected.decode("latin-1"),
        )
    digit = body[0]
    if not 0x30 <= digit <= 0x37:
        raise AstmLinkError("frame number is not a digit 0-7", byte=digit)
    text = body[1:-1]
    if len(text) > MAX_TEXT:
        raise AstmLinkError("frame text exceeds 240 characters", length=len(text))
    bad = sorted({b for b in text if b in RESTRICTED})
    if bad:
        raise AstmLinkError("frame text contains restricted characters", characters=bad)
    return Frame(digit - 0x30, text.decode("latin-1"), final=end == ETX)


class FrameCollector:
    """Gathers the bytes of one frame at a time from a byte stream.

    Bytes before an STX are not frames (the link layer decides what they mean); a frame ends at
    its LF. An STX inside a frame restarts collection (the sender restarted); a run of bytes that
    never ends is cut at a limit and handed over as a defective frame.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._in_frame = False

    @property
    def in_frame(self) -> bool:
        return self._in_frame

    def reset(self) -> None:
        self._buf.clear()
        self._in_frame = False

    def push(self, byte: int) -> tuple[bytes | None, bool]:
        """Feed one byte: ``(complete_frame_or_None, restarted)``; restarted marks a lost frame."""
        if not self._in_frame:
            if byte == STX:
                self._in_frame = True
                self._buf = bytearray([STX])
            return None, False
        if byte == STX:
            self._buf = bytearray([STX])
            return None, True
        self._buf.append(byte)
        if byte == LF or len(self._buf) >= _COLLECT_LIMIT:
            raw = bytes(self._buf)
            self.reset()
            return raw, False
        return None, False


def scan_frames(data: bytes) -> Iterator[Frame | AstmLinkError]:
    """Every frame in a capture (link-control bytes and noise between frames are skipped)."""
    collector = FrameCollector()
    for byte in data:
        raw, restarted = collector.push(byte)
        if restarted:
            yield AstmLinkError("frame interrupted by a new STX")
        if raw is not None:
            try:
                yield parse_frame(raw)
            except AstmLinkError as exc:
                yield exc
    if collector.in_frame:
        yield AstmLinkError("capture ends inside a frame")
