"""Network UPS Tools' network protocol, sans I/O: requests out, reply lines in, a reading out.

upsd speaks lines (docs/net-protocol.txt in NUT): ``LIST VAR <ups>`` is answered by
``BEGIN LIST VAR <ups>``, one ``VAR <ups> <name> "<value>"`` per variable and
``END LIST VAR <ups>``, or by ``ERR <code>`` (``UNKNOWN-UPS``, ``DATA-STALE``,
``DRIVER-NOT-CONNECTED``, ...). Values are double-quoted with backslash escapes for ``"`` and
``\\``. The UPS and upsd are untrusted input: every line, value and the number of variables has a
cap, and text meant for a person is truncated to printable characters.

The reading keeps what the gateway needs: on mains or on battery (``ups.status`` flags OL / OB),
low battery (LB), ``battery.charge`` (%), ``battery.runtime`` (s) and ``ups.test.result``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from gateway.errors import GatewayError

MAX_LINE_BYTES = 512  # NUT's own LARGEBUF; a longer line is not upsd
MAX_VARS = 256  # a real UPS reports 20-80 variables; more is not a UPS we can trust
MAX_TEXT_CHARS = 80  # device text (self-test result) as it may reach a log or a terminal
_UPS_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


class UpsError(GatewayError):
    """The UPS's state could not be read."""

    hint = "check that NUT (upsd and the UPS driver) runs and that [power] names its UPS"


class UpsUnreachableError(UpsError):
    """upsd did not answer (not running, wrong host or port, timed out)."""


class UpsProtocolError(UpsError):
    """upsd answered something that is not NUT's protocol, or with an error code."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.code = code


def valid_ups_name(name: str) -> bool:
    return 0 < len(name) <= 64 and set(name) <= _UPS_NAME_CHARS


def list_var_request(ups: str) -> bytes:
    if not valid_ups_name(ups):
        raise ValueError(f"not a NUT UPS name: {ups!r}")
    return f"LIST VAR {ups}\n".encode("ascii")


def printable(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """Device text made safe for a log line or a terminal: printable, single line, capped."""
    clean = "".join(c if c.isprintable() else "?" for c in text)
    return clean if len(clean) <= limit else clean[: limit - 3] + "..."


def _unquote(text: str) -> str:
    """A NUT quoted word (``"On line \\"OL\\""``) without its quotes and escapes."""
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        raise UpsProtocolError("upsd sent a value without its quotes")
    out: list[str] = []
    chars = iter(text[1:-1])
    for c in chars:
        if c == "\\":
            nxt = next(chars, None)
            if nxt is None:
                raise UpsProtocolError("upsd sent a value ending in a lone backslash")
            out.append(nxt)
        elif c == '"':
            raise UpsProtocolError("upsd sent an unescaped quote inside a value")
        else:
            out.append(c)
    return "".join(out)


class ListVarReader:
    """Feed it upsd's reply lines to ``LIST VAR <ups>``; ``done`` once the list ended.

    Raises :class:`UpsProtocolError` on ``ERR`` (``code`` set) or on anything that is not the
    protocol; ``variables`` is the list, capped at :data:`MAX_VARS`.
    """

    def __init__(self, ups: str) -> None:
        self.ups = ups
        self.variables: dict[str, str] = {}
        self.begun = False
        self.done = False

    def feed_line(self, raw: bytes) -> None:
        if len(raw) > MAX_LINE_BYTES:
            raise UpsProtocolError("upsd sent an over-long line")
        try:
            line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            raise UpsProtocolError("upsd sent a line that is not UTF-8") from None
        head, _, rest = line.partition(" ")
        if head == "ERR":
            code = printable(rest.split(" ", 1)[0] or "unknown", 40)
            raise UpsProtocolError(f"upsd answered ERR {code}", code=code)
        if self.done:
            raise UpsProtocolError("upsd sent more after the end of the list")
        if line == f"BEGIN LIST VAR {self.ups}" and not self.begun:
            self.begun = True
        elif line == f"END LIST VAR {self.ups}" and self.begun:
            self.done = True
        elif head == "VAR" and self.begun:
            ups, _, rest = rest.partition(" ")
            name, _, quoted = rest.partition(" ")
            if ups != self.ups or not name or not name.isprintable():
                raise UpsProtocolError("upsd sent a variable line for another UPS or no name")
            if len(self.variables) >= MAX_VARS and name not in self.variables:
                raise UpsProtocolError(f"upsd sent more than {MAX_VARS} variables")
            self.variables[name] = _unquote(quoted)
        else:
            raise UpsProtocolError("upsd sent a line that is not part of a LIST VAR reply")


class SelfTest(enum.StrEnum):
    """``ups.test.result`` in three words (NUT drivers report free text such as
    "Done and passed", "Done and warning", "Done and error", "Aborted", "No test initiated")."""

    PASSED = "passed"
    FAILED = "failed"
    NONE = "none"  # no result: never run, in progress, aborted, or not reported


def self_test_of(text: str | None) -> SelfTest:
    t = (text or "").lower()
    if any(w in t for w in ("fail", "error", "warning")):
        return SelfTest.FAILED
    if "passed" in t or t in ("ok", "done"):
        return SelfTest.PASSED
    return SelfTest.NONE


@dataclass(frozen=True, slots=True)
class UpsReading:
    """One UPS state as upsd reported it (``status_flags`` from ``ups.status``)."""

    status_flags: frozenset[str]
    charge_pct: Decimal | None = None
    runtime_s: Decimal | None = None
    test_result: str | None = None  # the device's words, printable and capped

    def __post_init__(self) -> None:
        if self.charge_pct is not None and not 0 <= self.charge_pct <= 100:
            raise ValueError(f"battery charge out of range: {self.charge_pct}")
        if self.runtime_s is not None and self.runtime_s < 0:
            raise ValueError(f"negative runtime: {self.runtime_s}")

    @property
    def on_battery(self) -> bool | None:
        """True on battery (OB), False on mains (OL), None when the UPS says neither."""
        if "OB" in self.status_flags:
            return True
        if "OL" in self.status_flags:
            return False
        return None

    @property
    def low_battery(self) -> bool:
        return "LB" in self.status_flags

    @property
    def self_test(self) -> SelfTest:
        return self_test_of(self.test_result)

    def battery_low(self, low_runtime_s: float) -> bool:
        """On battery with the UPS's LB flag or less runtime left than ``low_runtime_s``.

        LB while on mains (a battery still charging after a deep discharge) is not a reason to
        stop: the mains feeds the router."""
        if self.on_battery is not True:
            return False
        return self.low_battery or (
            self.runtime_s is not None and self.runtime_s < Decimal(str(low_runtime_s))
        )


def _number(variables: Mapping[str, str], name: str) -> Decimal | None:
    raw = variables.get(name)
    if raw is None:
        return None
    try:
        value = Decimal(raw.strip())
    except InvalidOperation:
        raise UpsProtocolError(f"upsd sent a {name} that is not a number") from None
    if not value.is_finite():
        raise UpsProtocolError(f"upsd sent a {name} that is not a finite number")
    return value


def reading_of(variables: Mapping[str, str]) -> UpsReading:
    """The reading in a ``LIST VAR`` reply; UpsProtocolError for values out of their range."""
    status = variables.get("ups.status", "")
    flags = frozenset(f for f in status.split() if f.isalnum() and len(f) <= 16)
    test = variables.get("ups.test.result")
    try:
        return UpsReading(
            status_flags=flags,
            charge_pct=_number(variables, "battery.charge"),
            runtime_s=_number(variables, "battery.runtime"),
            test_result=printable(test) if test is not None else None,
        )
    except ValueError as exc:
        raise UpsProtocolError(f"upsd sent an impossible value: {exc}") from None
