"""GHS segmentation: one Health Observation Body split over several notifications / indications.

Facts (GHSS v1.0, "Live Health Observations" and "Stored Health Observations" characteristics,
Segmentation Header; the specification text was not at hand, see ghs_acom.py), as the public
STMicroelectronics and Realtek GHS peripheral prototypes both lay it out (Realtek's header quotes
the counter's wrap rule):

- every notified / indicated value starts with a one-octet Segmentation Header: bit 0 First
  Segment, bit 1 Last Segment, bits 2-7 a Rolling Segment Counter that the server increments for
  every segment it sends on the characteristic and that wraps from 63 to 0;
- the rest of the value is the next piece of the body; a body that fits one value is sent as one
  segment with both bits set;
- the body of Live Health Observations 0x2B8B is one observation; the body of Stored Health
  Observations 0x2BDD is a uint32 Record Number followed by one observation (see ghs.py).

``Reassembler`` is the sans-I/O collector for one characteristic of one connection: ``feed`` each
value in arrival order; it hands back the whole body once the last segment is in. It is bounded
by construction (``MAX_BODY_BYTES``, ``MAX_SEGMENTS``) and never buffers more than one body. What
goes wrong is handed back as a ``SegmentationError`` (a ``DecodeError``; ``feed`` itself never
raises), with a defined state afterwards:

- a segment that continues nothing (the first segment was missed): error, the segment dropped;
- a counter that is not the previous one + 1 (a segment lost or out of order): error, the
  partial body dropped;
- a first segment while a body is still open (its last segment was lost): an error for the lost
  body, and the new first segment starts the next body (a whole one is handed back too);
- a body over either cap: error, the partial body dropped, and its remaining segments are
  refused as continuing nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.ble.wire import uuid_text
from gateway.errors import DecodeError, ModelError

FLAG_FIRST = 1 << 0
FLAG_LAST = 1 << 1
COUNTER_SHIFT = 2
COUNTER_MODULO = 64

# Caps on one reassembled body. A spirometer's flow-volume curve or a minute of single-lead ECG at
# 2 octets per sample is a few kilobytes; 64 KiB is the largest body the 16-bit observation Length
# field can describe (plus the record number and the class / length octets).
MAX_BODY_BYTES = 0x10000 + 8
# Segments of one body in flight: at the smallest ATT payload (20 octets, 19 of body) 64 KiB takes
# about 3,500 segments; a body needing more is refused.
MAX_SEGMENTS = 4096


class SegmentationError(DecodeError):
    """The segments of a GHS characteristic do not reassemble into a body."""

    def __init__(self, uuid16: int, reason: str) -> None:
        super().__init__(f"characteristic 0x{uuid_text(uuid16)}: {reason}",
                         uuid=uuid_text(uuid16), reason=reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class SegmentHeader:
    first: bool
    last: bool
    counter: int

    def __post_init__(self) -> None:
        if not 0 <= self.counter < COUNTER_MODULO:
            raise ModelError("the rolling segment counter has 6 bits")

    @classmethod
    def from_byte(cls, octet: int) -> SegmentHeader:
        return cls(bool(octet & FLAG_FIRST), bool(octet & FLAG_LAST), octet >> COUNTER_SHIFT)

    def to_byte(self) -> int:
        return (self.counter << COUNTER_SHIFT) | (FLAG_LAST if self.last else 0) \
            | (FLAG_FIRST if self.first else 0)

    @property
    def whole(self) -> bool:
        """The body fits this one segment."""
        return self.first and self.last


def split_segments(uuid16: int, payload: bytes) -> tuple[SegmentHeader, bytes]:
    """One notified value as (header, its piece of the body); DecodeError when empty."""
    if not payload:
        raise SegmentationError(uuid16, "too short: no segmentation header")
    return SegmentHeader.from_byte(payload[0]), payload[1:]


def segment_body(body: bytes, piece_size: int, first_counter: int = 0) -> list[bytes]:
    """The notified values that carry ``body`` (the server side, for the simulator and tests):
    pieces of at most ``piece_size`` octets, counters from ``first_counter`` on, wrapping at 64."""
    if piece_size < 1:
        raise ModelError("a segment carries at least one octet of the body")
    pieces = [body[i:i + piece_size] for i in range(0, len(body), piece_size)] or [b""]
    out = []
    for index, piece in enumerate(pieces):
        header = SegmentHeader(index == 0, index == len(pieces) - 1,
                               (first_counter + index) % COUNTER_MODULO)
        out.append(bytes((header.to_byte(),)) + piece)
    return out


class Reassembler:
    """Collects the segments of one GHS characteristic (one connection); module docstring."""

    __slots__ = ("_buffer", "_expected", "_segments", "max_body_bytes", "max_segments", "uuid16")

    def __init__(self, uuid16: int, *, max_body_bytes: int = MAX_BODY_BYTES,
                 max_segments: int = MAX_SEGMENTS) -> None:
        self.uuid16 = uuid16
        self.max_body_bytes = max_body_bytes
        self.max_segments = max_segments
        self._buffer = bytearray()
        self._segments = 0  # 0: no body open
        self._expected = 0

    @property
    def in_flight(self) -> int:
        """Segments of the open body (0: none open)."""
        return self._segments

    @property
    def buffered_bytes(self) -> int:
        return len(self._buffer)

    def reset(self) -> None:
        """Forget an open body (a new connection starts clean)."""
        self._buffer.clear()
        self._segments = 0

    def _error(self, reason: str) -> SegmentationError:
        return SegmentationError(self.uuid16, reason)

    def feed(self, payload: bytes) -> tuple[bytes | SegmentationError, ...]:
        """Add one notified value. Returns, in order, what it completed or lost: at most one
        ``SegmentationError`` (a body lost, or this segment refused) and at most one whole body.
        Never raises: the caller logs / accounts each error and decodes each body."""
        try:
            header, piece = split_segments(self.uuid16, payload)
        except SegmentationError as err:
            return (err,)
        lost: tuple[SegmentationError, ...] = ()
        if header.first:
            if self._segments:
                lost = (self._error("an observation was cut off: a first segment came before "
                                    "its last"),)
            self.reset()
        elif self._segments == 0:
            return (self._error("a segment that continues nothing (its first segment was "
                                "missed)"),)
        elif header.counter != self._expected:
            self.reset()
            return (self._error("segment counter out of sequence (a segment was lost)"),)
        if self._segments + 1 > self.max_segments or \
                len(self._buffer) + len(piece) > self.max_body_bytes:
            self.reset()
            return (*lost, self._error("observation too large: over the reassembly cap"))
        self._buffer += piece
        self._segments += 1
        self._expected = (header.counter + 1) % COUNTER_MODULO
        if not header.last:
            return lost
        body = bytes(self._buffer)
        self.reset()
        return (*lost, body)
