"""Contec CMS50D+ live data (firmware 4.x; 19200 baud, 8 data bits, odd parity, 1 stop bit).

Packets of 5 bytes; only byte 0 has bit 7 set, which is how the framer finds packet starts (a byte
with the wrong high bit for its position restarts or discards the packet).

- byte 0: bits 3-0 signal strength, 0x10 finger out, 0x20 SpO2 dropping, 0x40 pulse beep
- byte 1: plethysmogram (bits 6-0)
- byte 2: bits 3-0 bar graph, 0x10 probe error, 0x20 searching, 0x40 pulse rate bit 7
- byte 3: pulse rate bits 6-0
- byte 4: SpO2 (bits 6-0), 127 = invalid

How sure we are: the layout is the reference file's; one public translation of Contec's manual
names 0x10 of byte 0 "searching too long" rather than "finger out" - both mean "no usable
signal", so we report it as sensor off. Pulse rate 255 (all eight bits set) is taken as the
device's "invalid" value by analogy with SpO2 127; we have no document that says so. Values sent
with "finger out" or "probe error" are kept (the measurement is then marked invalid).
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.serial.errors import Cms50FrameError, SerialUsageError
from drivers.serial.oximetry import OximetryFlag, OximetrySample

SYNC_BIT = 0x80
FINGER_OUT = 0x10
SPO2_DROPPING = 0x20
BEEP = 0x40
PROBE_ERROR = 0x10
SEARCHING = 0x20
PULSE_BIT7 = 0x40
SPO2_INVALID = 127
PULSE_INVALID = 255
PACKET_LEN = 5


@dataclass(frozen=True, slots=True)
class Cms50Packet:
    signal_strength: int
    finger_out: bool
    spo2_dropping: bool
    beep: bool
    pleth: int
    bar_graph: int
    probe_error: bool
    searching: bool
    pulse_raw: int
    spo2_raw: int

    def __post_init__(self) -> None:
        if not (
            0 <= self.signal_strength <= 15
            and 0 <= self.bar_graph <= 15
            and 0 <= self.pleth <= 127
            and 0 <= self.pulse_raw <= 255
            and 0 <= self.spo2_raw <= 127
        ):
            raise SerialUsageError("CMS50 packet field out of range")

    @classmethod
    def decode(cls, raw: bytes) -> Cms50Packet:
        if len(raw) != PACKET_LEN or not raw[0] & SYNC_BIT or any(b & SYNC_BIT for b in raw[1:]):
            raise Cms50FrameError("not a 5-byte packet with bit 7 set in byte 0 only")
        b0, b1, b2, b3, b4 = raw
        return cls(
            signal_strength=b0 & 0x0F,
            finger_out=bool(b0 & FINGER_OUT),
            spo2_dropping=bool(b0 & SPO2_DROPPING),
            beep=bool(b0 & BEEP),
            pleth=b1,
            bar_graph=b2 & 0x0F,
            probe_error=bool(b2 & PROBE_ERROR),
            searching=bool(b2 & SEARCHING),
            pulse_raw=(b2 & PULSE_BIT7) << 1 | b3,
            spo2_raw=b4,
        )

    def encode(self) -> bytes:
        b0 = (
            SYNC_BIT
            | self.signal_strength
            | FINGER_OUT * self.finger_out
            | SPO2_DROPPING * self.spo2_dropping
            | BEEP * self.beep
        )
        b2 = (
            self.bar_graph
            | PROBE_ERROR * self.probe_error
            | SEARCHING * self.searching
            | (self.pulse_raw & 0x80) >> 1
        )
        return bytes((b0, self.pleth, b2, self.pulse_raw & 0x7F, self.spo2_raw))

    @property
    def flags(self) -> OximetryFlag:
        flags = OximetryFlag.NONE
        for present, flag in (
            (self.finger_out, OximetryFlag.SENSOR_OFF),
            (self.probe_error, OximetryFlag.PROBE_ERROR),
            (self.searching, OximetryFlag.SEARCHING),
            (self.spo2_dropping, OximetryFlag.SPO2_DROPPING),
        ):
            if present:
                flags |= flag
        return flags

    @property
    def pulse_bpm(self) -> int | None:
        return None if self.pulse_raw == PULSE_INVALID else self.pulse_raw

    @property
    def spo2_pct(self) -> int | None:
        return None if self.spo2_raw == SPO2_INVALID or self.spo2_raw > 100 else self.spo2_raw


def _skipped(count: int) -> Cms50FrameError:
    return Cms50FrameError("bytes skipped to resynchronise", skipped=count)


class Cms50Framer:
    """Finds packets; a byte with the wrong high bit for its position never joins a packet."""

    def __init__(self) -> None:
        self._buf: bytearray | None = None

    def feed(self, data: bytes) -> list[Cms50Packet | Cms50FrameError]:
        out: list[Cms50Packet | Cms50FrameError] = []
        skipped = 0
        for byte in data:
            if byte & SYNC_BIT:
                if self._buf is not None:
                    skipped += len(self._buf)
                self._buf = bytearray((byte,))
            elif self._buf is None:
                skipped += 1
            else:
                self._buf.append(byte)
                if len(self._buf) == PACKET_LEN:
                    if skipped:
                        out.append(_skipped(skipped))
                        skipped = 0
                    out.append(Cms50Packet.decode(bytes(self._buf)))
                    self._buf = None
        if skipped:
            out.append(_skipped(skipped))
        return out


class Cms50Decoder:
    """Bytes in, one sample per packet out (the device sends about 60 packets a second)."""

    def __init__(self) -> None:
        self._framer = Cms50Framer()

    def feed(self, data: bytes, time_s: float) -> list[OximetrySample | Cms50FrameError]:
        out: list[OximetrySample | Cms50FrameError] = []
        for item in self._framer.feed(data):
            if isinstance(item, Cms50FrameError):
                out.append(item)
                continue
            if item.spo2_raw not in range(101) and item.spo2_raw != SPO2_INVALID:
                out.append(Cms50FrameError("SpO2 above 100 % reported as missing"))
            out.append(
                OximetrySample(time_s, item.spo2_pct, item.pulse_bpm, item.flags, item.encode())
            )
        return out
