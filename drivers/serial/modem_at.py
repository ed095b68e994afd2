"""3GPP TS 27.007 AT command session (sans-I/O): one command at a time, URCs separated out.

The caller submits :class:`AtCommand` values, writes the :class:`SendBytes` events to the modem,
feeds what the modem sends (:meth:`AtSession.receive_data`) and tells the time
(:meth:`AtSession.tick`); a command with no final result code within its timeout ends in
:class:`CommandTimedOut`. Commands are lines ending in CR (ITU-T V.250 S3); the modem answers with
lines framed by CR LF: information responses, then one final result code - ``OK``, ``ERROR``,
``+CME ERROR: <err>`` (27.007 9.2) or ``+CMS ERROR: <err>``.

Unsolicited result codes (URCs: ``RING``, ``+CEREG: 1``, a ``+CSQ`` nobody asked for, vendor
``^``/``#`` codes) can arrive between responses and inside them; they are reported as
:class:`UnsolicitedResult` and never mixed into a command's response. A registration read
response (``+CREG: <n>,<stat>...``) starts with two unquoted numbers; the URC
(``+CREG: <stat>[,"<lac>",...]``) with one, which is how the two are told apart. A ``+CSQ:`` line
while AT+CSQ runs cannot be told from a URC and is taken as the response. Lines that are neither
(garbage, a late ``OK`` after a timeout) are :class:`StrayLine` events.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from drivers.serial.errors import SerialUsageError
from drivers.serial.events import NEED_DATA, NeedData, SendBytes

_MAX_LINE = 1024  # a longer run without CR/LF is cut into lines of this length
# Information lines kept for the command being answered. A modem that keeps sending matching
# lines without a final result: the lines past the cap are dropped (StrayLine), the command
# then ends with its final result or its timeout as usual.
MAX_RESPONSE_LINES = 64
_BARE_URCS = frozenset({"RING", "NO CARRIER", "BUSY", "NO ANSWER", "NO DIALTONE"})
_ERROR_PREFIXES = ("+CME ERROR:", "+CMS ERROR:")


@dataclass(frozen=True, slots=True)
class AtCommand:
    """A command line; ``prefix`` names its information responses (``+CSQ``)."""

    text: str
    prefix: str | None = None
    timeout_s: float = 5.0
    leading_ints: int = 0  # unquoted numbers a response starts with (tells it from a URC)

    def __post_init__(self) -> None:
        if (
            not self.text[:2].upper() == "AT"
            or not self.text.isascii()
            or not all(c.isprintable() for c in self.text)
        ):
            raise SerialUsageError(f"not an AT command line: {self.text!r}")
        if self.timeout_s <= 0:
            raise SerialUsageError("AT command timeout must be positive")

    def encode(self) -> bytes:
        return self.text.encode("ascii") + b"\r"


CSQ = AtCommand("AT+CSQ", "+CSQ")
CREG = AtCommand("AT+CREG?", "+CREG", leading_ints=2)
CEREG = AtCommand("AT+CEREG?", "+CEREG", leading_ints=2)
C5GREG = AtCommand("AT+C5GREG?", "+C5GREG", leading_ints=2)
COPS = AtCommand("AT+COPS?", "+COPS", timeout_s=10.0)  # read form: answers from the modem's state
CGPADDR = AtCommand("AT+CGPADDR", "+CGPADDR")
STATUS_COMMANDS = (CSQ, CREG, CEREG, C5GREG, COPS, CGPADDR)


@dataclass(frozen=True, slots=True)
class CommandCompleted:
    command: AtCommand
    lines: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CommandFailed:
    """ERROR or +CME/+CMS ERROR; ``error`` is the numeric or verbose code (None for ERROR)."""

    command: AtCommand
    lines: tuple[str, ...]
    final: str
    error: int | str | None


@dataclass(frozen=True, slots=True)
class CommandTimedOut:
    command: AtCommand


@dataclass(frozen=True, slots=True)
class UnsolicitedResult:
    line: str


@dataclass(frozen=True, slots=True)
class StrayLine:
    line: str


Event = (
    SendBytes
    | CommandCompleted
    | CommandFailed
    | CommandTimedOut
    | UnsolicitedResult
    | StrayLine
    | NeedData
)


def split_params(rest: str) -> list[tuple[str, bool]]:
    """Comma-separated parameters as ``(text, was_quoted)``; quotes may protect commas."""
    out: list[tuple[str, bool]] = []
    token: list[str] = []
    quoted = in_quote = False
    for char in rest:
        if char == '"':
            in_quote, quoted = not in_quote, True
        elif char == "," and not in_quote:
            out.append(("".join(token).strip(), quoted))
            token, quoted = [], False
        else:
            token.append(char)
    out.append(("".join(token).strip(), quoted))
    return out


def _looks_unsolicited(line: str) -> bool:
    return line[:1] in "+^#" or line in _BARE_URCS


def _matches(command: AtCommand, line: str) -> bool:
    if command.prefix is None:
        return not _looks_unsolicited(line)
    head, sep, rest = line.partition(":")
    if not sep or head.strip().upper() != command.prefix.upper():
        return False
    params = split_params(rest)
    leading = params[: command.leading_ints]
    return len(leading) == command.leading_ints and all(
        not quoted and text.isdigit() for text, quoted in leading
    )


class AtSession:
    def __init__(self) -> None:
        self._events: deque[Event] = deque()
        self._queue: deque[AtCommand] = deque()
        self._current: AtCommand | None = None
        self._lines: list[str] = []
        self._buf = bytearray()
        self._now = 0.0
        self._deadline: float | None = None

    @property
    def busy(self) -> bool:
        return self._current is not None

    def next_event(self) -> Event:
        return self._events.popleft() if self._events else NEED_DATA

    def submit(self, command: AtCommand, now_s: float | None = None) -> None:
        self._queue.append(command)
        self.tick(self._now if now_s is None else now_s)

    def tick(self, now_s: float) -> None:
        self._now = max(self._now, now_s)
        if self._current is not None and self._deadline is not None and self._now >= self._deadline:
            self._events.append(CommandTimedOut(self._current))
            self._current = None
        if self._current is None and self._queue:
            self._current, self._lines = self._queue.popleft(), []
            self._deadline = self._now + self._current.timeout_s
            self._events.append(SendBytes(self._current.encode()))

    def receive_data(self, data: bytes, now_s: float | None = None) -> None:
        if now_s is not None:
            self.tick(now_s)
        for byte in data:
            if byte in (0x0D, 0x0A):
                self._line()
            else:
                self._buf.append(byte)
                if len(self._buf) >= _MAX_LINE:
                    self._line()

    def _line(self) -> None:
        text = self._buf.decode("latin-1").strip()
        self._buf.clear()
        if not text:
            return
        command = self._current
        if command is None:
            event = UnsolicitedResult(text) if _looks_unsolicited(text) else StrayLine(text)
            self._events.append(event)
            return
        if text.upper() == command.text.upper():
            return  # command echo (ATE1)
        if text == "OK":
            self._finish(CommandCompleted(command, tuple(self._lines)))
        elif text == "ERROR":
            self._finish(CommandFailed(command, tuple(self._lines), text, None))
        elif text.upper().startswith(_ERROR_PREFIXES):
            code = text.partition(":")[2].strip()
            error: int | str = int(code) if code.isdigit() else code
            self._finish(CommandFailed(command, tuple(self._lines), text, error))
        elif _matches(command, text) and len(self._lines) < MAX_RESPONSE_LINES:
            self._lines.append(text)
        elif _looks_unsolicited(text):
            self._events.append(UnsolicitedResult(text))
        else:
            self._events.append(StrayLine(text))

    def _finish(self, event: CommandCompleted | CommandFailed) -> None:
        self._events.append(event)
        self._current, self._deadline = None, None
        self.tick(self._now)
