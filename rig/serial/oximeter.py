"""Simulated pulse oximeters: a Nonin (data format 2) and a Contec CMS50D+ (live data).

Each streams at its device's real rate - Nonin 3 packets of 25 frames a second, CMS50 60 packets
a second - with the values set through :meth:`OximeterSim.set` (SpO2, pulse, sensor off,
streaming on / off) or a scripted list of :class:`Phase` values, e.g. a normal minute, then a
desaturation episode, then the finger out. ``garbage()`` puts line noise between packets (the
framers resynchronise on it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from drivers.serial.cms50 import SPO2_INVALID, Cms50Packet
from drivers.serial.nonin import SNSD, STATUS_ALWAYS, encode_packet
from rig.serial.pty_device import PtyDevice


@dataclass(frozen=True, slots=True)
class OximeterState:
    spo2_pct: int = 97
    pulse_bpm: int = 72
    sensor_off: bool = False
    streaming: bool = True  # False: the device sends nothing (switched off, cable half out)


@dataclass(frozen=True, slots=True)
class Phase:
    """``state`` for ``duration_s`` seconds of a scripted scenario."""

    duration_s: float
    state: OximeterState


DESATURATION_SCENARIO = (
    Phase(5.0, OximeterState()),
    Phase(3.0, OximeterState(spo2_pct=86, pulse_bpm=95)),
    Phase(3.0, OximeterState()),
    Phase(2.0, OximeterState(sensor_off=True)),
    Phase(3.0, OximeterState()),
)


class OximeterSim(PtyDevice):
    packets_per_s = 1.0

    def __init__(
        self,
        link: Path,
        *,
        state: OximeterState | None = None,
        scenario: Sequence[Phase] = (),
        name: str = "oximeter",
    ) -> None:
        super().__init__(link, name=name)
        self.state = state or OximeterState()
        self.packets_sent = 0
        self._scenario = list(scenario)
        self._phase_end: float | None = None
        self._next_s: float | None = None
        self._garbage = b""

    def set(self, **changes: int | bool) -> None:
        """Change the values the device sends from the next packet on (any thread)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(OximeterState)}
        if unknown:
            raise TypeError(f"no such oximeter setting: {', '.join(sorted(unknown))}")

        def apply() -> None:
            self.state = dataclasses.replace(self.state, **changes)  # type: ignore[arg-type]

        self.call(apply)

    def garbage(self, data: bytes) -> None:
        def apply() -> None:
            self._garbage += data

        self.call(apply)

    def encode(self, state: OximeterState) -> bytes:
        raise NotImplementedError

    def on_tick(self, now: float) -> None:
        self._advance_scenario(now)
        if self._next_s is None:
            self._next_s = now
        period = 1.0 / self.packets_per_s
        burst = bytearray()
        while self._next_s <= now:
            self._next_s += period
            if self.state.streaming:
                burst += self.encode(self.state)
                self.packets_sent += 1
        if self._next_s < now - 1.0:  # a stalled thread does not make up a backlog in a burst
            self._next_s = now
        if burst:
            if self._garbage:
                burst[0:0], self._garbage = self._garbage, b""
            self.send(bytes(burst))

    def _advance_scenario(self, now: float) -> None:
        if self._phase_end is not None and now < self._phase_end:
            return
        if not self._scenario:
            self._phase_end = None
            return
        phase = self._scenario.pop(0)
        self.state, self._phase_end = phase.state, now + phase.duration_s


class NoninSim(OximeterSim):
    """Nonin OEM III, serial data format 2 at 9600 8N1: a 25-frame packet every 1/3 s."""

    packets_per_s = 3.0

    def encode(self, state: OximeterState) -> bytes:
        if state.sensor_off:  # sensor disconnect: status SNSD, both values "missing"
            return encode_packet(None, None, status=STATUS_ALWAYS | SNSD)
        return encode_packet(state.spo2_pct, state.pulse_bpm)


class Cms50Sim(OximeterSim):
    """Contec CMS50D+ live data at 19200 8O1: 60 five-byte packets a second."""

    packets_per_s = 60.0

    def encode(self, state: OximeterState) -> bytes:
        off = state.sensor_off
        return Cms50Packet(
            signal_strength=0 if off else 8,
            finger_out=off,
            spo2_dropping=False,
            beep=False,
            pleth=64,
            bar_graph=0 if off else 5,
            probe_error=False,
            searching=False,
            pulse_raw=255 if off else state.pulse_bpm,
            spo2_raw=SPO2_INVALID if off else state.spo2_pct,
        ).encode()
