"""Nonin pulse oximeter serial data format 2 (OEM III module and compatibles), sans-I/O.

Frame (5 bytes): ``0x01, STATUS, PLETH, DATA, CHECKSUM`` with CHECKSUM = sum of the first four
bytes modulo 256. 25 frames make a packet, 3 packets a second (75 frames/s); bit 0 (SYNC) of STATUS
is set in the first frame of a packet only. What the DATA byte means depends on the frame's
position in the packet (1-based): 1 HR MSB, 2 HR LSB, 3 SpO2, 4 SREV (firmware revision),
8 STAT2, 9 SpO2-D, 10 SpO2 fast, 11 SpO2 beat-to-beat, 14/15 E-HR MSB/LSB, 16 E-SpO2, 17 E-SpO2-D,
20/21 HR-D MSB/LSB, 22/23 E-HR-D MSB/LSB; 5-7, 12-13, 18-19, 24-25 reserved. HR is 9 bits: bits 1-0
of the MSB byte are HR8-HR7, bits 6-0 of the LSB byte are HR6-HR0. Missing values: HR 511,
SpO2 127. HR and SpO2 (frames 1-3) are the 4-beat averages we report.

STATUS: bit 7 always 1; bit 6 SNSD sensor disconnect; bit 5 ARTF artifact (per pulse); bit 4 OOT
out of track; bit 3 SNSA sensor alarm (unusable data); bits 2-1 perfusion; bit 0 SYNC.

How sure we are: the frame layout, checksum, SYNC, the missing values and the status bits 7-3 are
the reference file's and agree with two independent public decoders. We did not have Nonin's
document itself. Bits 2-1 are read as the public decoders read them: (1,0) red = low / no pulse
signal, (1,1) yellow = marginal, (0,1) green = good, (0,0) none (the bits are only set for about
12 frames during each pulse). Those decoders also say the DATA byte never has bit 7 set; we use
that to reject false frames, and STAT2 bit 5 as the SmartPoint "high quality" flag.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from drivers.serial.errors import NoninFrameError, SerialUsageError
from drivers.serial.oximetry import OximetryFlag, OximetrySample

START = 0x01
FRAMES_PER_PACKET = 25
HR_MISSING = 511
SPO2_MISSING = 127

STATUS_ALWAYS = 0x80
SNSD = 0x40
ARTF = 0x20
OOT = 0x10
SNSA = 0x08
PERFUSION_MASK = 0x06
PERFUSION_RED = 0x04
PERFUSION_YELLOW = 0x06
PERFUSION_GREEN = 0x02
SYNC = 0x01


def status_flags(status: int) -> OximetryFlag:
    flags = OximetryFlag.NONE
    for bit, flag in (
        (SNSD, OximetryFlag.SENSOR_OFF),
        (ARTF, OximetryFlag.ARTIFACT),
        (OOT, OximetryFlag.OUT_OF_TRACK),
        (SNSA, OximetryFlag.SENSOR_ALARM),
    ):
        if status & bit:
            flags |= flag
    perfusion = status & PERFUSION_MASK
    if perfusion == PERFUSION_RED:
        flags |= OximetryFlag.LOW_PERFUSION
    elif perfusion == PERFUSION_YELLOW:
        flags |= OximetryFlag.MARGINAL_PERFUSION
    return flags


def _checksum(first_four: Sequence[int]) -> int:
    return sum(first_four) % 256


@dataclass(frozen=True, slots=True)
class NoninFrame:
    status: int
    pleth: int
    data: int

    def __post_init__(self) -> None:
        if not (
            self.status & STATUS_ALWAYS
            and 0 <= self.status <= 255
            and 0 <= self.pleth <= 255
            and 0 <= self.data <= 127
        ):
            raise SerialUsageError("not a valid Nonin frame", frame=(self.status, self.pleth))

    @property
    def sync(self) -> bool:
        return bool(self.status & SYNC)

    def encode(self) -> bytes:
        head = (START, self.status, self.pleth, self.data)
        return bytes((*head, _checksum(head)))

    @classmethod
    def decode(cls, raw: bytes) -> NoninFrame:
        if len(raw) != 5 or raw[0] != START:
            raise NoninFrameError("frame is not 5 bytes starting with 0x01", length=len(raw))
        if _checksum(raw[:4]) != raw[4]:
            raise NoninFrameError("frame checksum mismatch")
        if not raw[1] & STATUS_ALWAYS or raw[3] & 0x80:
            raise NoninFrameError("frame status bit 7 clear or data bit 7 set")
        return cls(raw[1], raw[2], raw[3])


class NoninFramer:
    """Finds frames in a byte stream; on a bad frame it shifts by one byte and tries again."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[NoninFrame | NoninFrameError]:
        self._buf += data
        out: list[NoninFrame | NoninFrameError] = []
        skipped = 0
        while True:
            while self._buf and self._buf[0] != START:
                del self._buf[0]
                skipped += 1
            if len(self._buf) < 5:
                break
            try:
                frame = NoninFrame.decode(bytes(self._buf[:5]))
            except NoninFrameError:
                del self._buf[0]
                skipped += 1
                continue
            if skipped:
                out.append(NoninFrameError("bytes skipped to resynchronise", skipped=skipped))
                skipped = 0
            out.append(frame)
            del self._buf[:5]
        if skipped:
            out.append(NoninFrameError("bytes skipped to resynchronise", skipped=skipped))
        return out


@dataclass(frozen=True, slots=True)
class NoninPacket:
    """25 frames, the first with SYNC set; accessors decode the position-dependent DATA bytes."""

    frames: tuple[NoninFrame, ...]

    def __post_init__(self) -> None:
        if len(self.frames) != FRAMES_PER_PACKET or not self.frames[0].sync:
            raise SerialUsageError("a Nonin packet is 25 frames starting with SYNC")

    def data(self, position: int) -> int:
        """The DATA byte of frame ``position`` (1-25)."""
        return self.frames[position - 1].data

    def _hr(self, msb: int) -> int | None:
        value = (self.data(msb) & 0x03) << 7 | self.data(msb + 1) & 0x7F
        return None if value == HR_MISSING else value

    def _spo2(self, position: int) -> int | None:
        value = self.data(position) & 0x7F
        return None if value == SPO2_MISSING else value

    @property
    def pulse_bpm(self) -> int | None:
        return self._hr(1)

    @property
    def spo2_pct(self) -> int | None:
        return self._spo2(3)

    @property
    def firmware_revision(self) -> int:
        return self.data(4)

    @property
    def smartpoint(self) -> bool:
        return bool(self.data(8) & 0x20)

    @property
    def spo2_display_pct(self) -> int | None:
        return self._spo2(9)

    @property
    def spo2_fast_pct(self) -> int | None:
        return self._spo2(10)

    @property
    def spo2_beat_pct(self) -> int | None:
        return self._spo2(11)

    @property
    def pulse_extended_bpm(self) -> int | None:
        return self._hr(14)

    @property
    def spo2_extended_pct(self) -> int | None:
        return self._spo2(16)

    @property
    def pulse_display_bpm(self) -> int | None:
        return self._hr(20)

    @property
    def flags(self) -> OximetryFlag:
        """Status flags of all 25 frames combined: a one-frame artifact is not lost."""
        flags = OximetryFlag.NONE
        for frame in self.frames:
            flags |= status_flags(frame.status)
        return flags

    @property
    def pleth(self) -> tuple[int, ...]:
        return tuple(frame.pleth for frame in self.frames)

    def encode(self) -> bytes:
        return b"".join(frame.encode() for frame in self.frames)


class NoninDecoder:
    """Bytes in, samples out (one per packet, i.e. every 1/3 s), errors as values."""

    def __init__(self) -> None:
        self._framer = NoninFramer()
        self._frames: list[NoninFrame] | None = None
        self._lost = False  # a run of frames without packet sync was already reported

    def feed(self, data: bytes, time_s: float) -> list[OximetrySample | NoninFrameError]:
        out: list[OximetrySample | NoninFrameError] = []
        for item in self._framer.feed(data):
            if isinstance(item, NoninFrameError):
                out.append(item)
            else:
                out.extend(self._push(item, time_s))
        return out

    def _push(self, frame: NoninFrame, time_s: float) -> list[OximetrySample | NoninFrameError]:
        if frame.sync:
            cut = self._frames is not None
            self._frames, self._lost = [frame], False
            if cut:
                return [NoninFrameError("packet cut short by a new SYNC frame")]
            return []
        if self._frames is None:
            if self._lost:
                return []
            self._lost = True
            return [NoninFrameError("frames without packet sync discarded")]
        self._frames.append(frame)
        if len(self._frames) < FRAMES_PER_PACKET:
            return []
        packet, self._frames = NoninPacket(tuple(self._frames)), None
        return _sample(packet, time_s)


def _sample(packet: NoninPacket, time_s: float) -> list[OximetrySample | NoninFrameError]:
    out: list[OximetrySample | NoninFrameError] = []
    spo2, pulse = packet.spo2_pct, packet.pulse_bpm
    if spo2 is not None and spo2 > 100:
        out.append(NoninFrameError("SpO2 above 100 % reported as missing"))
        spo2 = None
    out.append(OximetrySample(time_s, spo2, pulse, packet.flags, packet.encode()))
    return out


def encode_packet(
    spo2_pct: int | None,
    pulse_bpm: int | None,
    *,
    status: int = STATUS_ALWAYS,
    pleth: Sequence[int] = (),
    firmware_revision: int = 0,
) -> bytes:
    """A whole packet for simulators and tests (display / extended values repeat the same)."""
    hr = HR_MISSING if pulse_bpm is None else pulse_bpm
    sp = SPO2_MISSING if spo2_pct is None else spo2_pct
    data = [0] * FRAMES_PER_PACKET
    for msb in (1, 14, 20, 22):
        data[msb - 1], data[msb] = (hr >> 7) & 0x03, hr & 0x7F
    for position in (3, 9, 10, 11, 16, 17):
        data[position - 1] = sp
    data[3] = firmware_revision & 0x7F
    waves = list(pleth) + [128] * (FRAMES_PER_PACKET - len(pleth))
    base = (status | STATUS_ALWAYS) & ~SYNC
    frames = tuple(
        NoninFrame(base | (SYNC if i == 0 else 0), waves[i], data[i])
        for i in range(FRAMES_PER_PACKET)
    )
    return NoninPacket(frames).encode()
