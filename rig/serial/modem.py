"""A simulated 3GPP TS 27.007 modem: answers the status commands, sends URCs, can go silent.

Echo is on by default (ATE1, as modems start); ``ATE0`` turns it off. The status it reports is a
:class:`ModemSimState` that tests change with :meth:`ModemSim.set`. Faults: ``urc()`` sends an
unsolicited result code now, ``urc_inside`` puts one in the middle of the next response,
``errors`` answers named commands with ``ERROR`` or ``+CME ERROR: <n>``, ``silent`` stops all
answers (a hung modem firmware), ``sim`` takes the SIM card out or locks it (27.007 9.2.1: the
network commands answer ``+CME ERROR: 10`` / ``11``, and nothing registers), and ``unplug()``
drops off the USB bus.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from rig.serial.pty_device import PtyDevice


@dataclass(frozen=True, slots=True)
class ModemSimState:
    rssi: int = 20  # +CSQ code: -113 + 2 * 20 = -73 dBm
    ber: int = 99
    creg: int = 0
    cereg: int = 1
    c5greg: int | None = 1  # None: the modem has no 5G (AT+C5GREG? -> ERROR)
    tac: str = "1A2B"
    cell_id: str = "01A2B3C4"
    act: int = 7
    operator: str = "Sim Mobile"
    pdp: tuple[tuple[int, str], ...] = ((1, "10.64.12.7"),)
    errors: tuple[tuple[str, str], ...] = ()  # (command, final result code), e.g. CME 30
    urc_inside: str | None = None
    silent: bool = False
    echo: bool = True
    sim: str = "ready"  # "ready", "absent" (CME 10) or "pin" (CME 11: locked with a PIN)


@dataclass(slots=True)
class _Line:
    buf: bytearray = field(default_factory=bytearray)


class ModemSim(PtyDevice):
    def __init__(
        self, link: Path, *, state: ModemSimState | None = None, name: str = "modem"
    ) -> None:
        super().__init__(link, name=name)
        self.state = state or ModemSimState()
        self.commands: list[str] = []  # every command line received, in order
        self._line = _Line()

    def set(self, **changes: object) -> None:
        """Change what the modem reports or how it behaves (any thread)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(ModemSimState)}
        if unknown:
            raise TypeError(f"no such modem setting: {', '.join(sorted(unknown))}")

        def apply() -> None:
            self.state = dataclasses.replace(self.state, **changes)  # type: ignore[arg-type]

        self.call(apply)

    def urc(self, line: str) -> None:
        self.call(lambda: self.send(f"\r\n{line}\r\n".encode("ascii")))

    def on_data(self, data: bytes, now: float) -> None:
        for byte in data:
            if byte == 0x0D:
                text = self._line.buf.decode("latin-1").strip()
                self._line.buf.clear()
                if text:
                    self._command(text)
            elif byte != 0x0A and len(self._line.buf) < 512:
                self._line.buf.append(byte)

    def _command(self, text: str) -> None:
        self.commands.append(text)
        state = self.state
        if state.silent:
            return
        if state.echo:
            self.send(text.encode("latin-1") + b"\r")
        lines, final = self._answer(text.upper())
        out = [f"\r\n{line}\r\n" for line in lines]
        if state.urc_inside is not None:
            out.insert(len(out) // 2, f"\r\n{state.urc_inside}\r\n")
            self.state = dataclasses.replace(state, urc_inside=None)
        out.append(f"\r\n{final}\r\n")
        self.send("".join(out).encode("ascii"))

    def _answer(self, command: str) -> tuple[list[str], str]:
        state = self.state
        for name, final in state.errors:
            if name.upper() == command:
                return [], final
        if state.sim != "ready":
            return self._answer_without_sim(command, 10 if state.sim == "absent" else 11)
        registration = f'"{state.tac}","{state.cell_id}",{state.act}'
        answers: dict[str, list[str]] = {
            "AT": [],
            "AT+CSQ": [f"+CSQ: {state.rssi},{state.ber}"],
            "AT+CREG?": [f"+CREG: 0,{state.creg}"],
            "AT+CEREG?": [f"+CEREG: 2,{state.cereg},{registration}"],
            "AT+COPS?": [f'+COPS: 0,0,"{state.operator}",{state.act}'],
            "AT+CGPADDR": [f'+CGPADDR: {cid},"{address}"' for cid, address in state.pdp],
        }
        if state.c5greg is not None:
            answers["AT+C5GREG?"] = [f"+C5GREG: 2,{state.c5greg},{registration}"]
        if command in ("ATE0", "ATE1"):
            self.state = dataclasses.replace(state, echo=command == "ATE1")
            return [], "OK"
        if command in answers:
            return answers[command], "OK"
        return [], "ERROR"

    def _answer_without_sim(self, command: str, cme: int) -> tuple[list[str], str]:
        """No usable SIM: signal is still measured, nothing registers, the operator and the
        data contexts are refused with the SIM's error."""
        if command in ("AT+COPS?", "AT+CGPADDR"):
            return [], f"+CME ERROR: {cme}"
        for head in ("CREG", "CEREG", "C5GREG"):
            if command == f"AT+{head}?":
                return [f"+{head}: 0,0"], "OK"
        if command == "AT+CSQ":
            return [f"+CSQ: {self.state.rssi},{self.state.ber}"], "OK"
        if command in ("ATE0", "ATE1"):
            self.state = dataclasses.replace(self.state, echo=command == "ATE1")
        return [], "OK" if command in ("AT", "ATE0", "ATE1") else "ERROR"
