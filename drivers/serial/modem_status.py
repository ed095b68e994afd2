"""Modem link status from 3GPP TS 27.007 responses and URCs, folded into a frozen value.

- ``+CSQ: <rssi>,<ber>`` (8.5): rssi 0 = -113 dBm or less, 1 = -111 dBm, 2-30 = -109 to -53 dBm in
  2 dB steps, 31 = -51 dBm or greater, 99 = not known; ber 0-7 (RXQUAL), 99 = not known. (Newer
  releases add 100-191 for TD-SCDMA; we report those as not known.)
- ``+CREG`` / ``+CEREG`` / ``+C5GREG`` (7.2, 10.1.22, 10.1.56): ``<stat>[,<lac|tac>,<ci>,<AcT>]``,
  the read response with ``<n>`` in front; stat 0 not registered and not searching, 1 registered
  home, 2 searching, 3 denied, 4 unknown, 5 registered roaming, 6/7 SMS only home/roaming,
  8 emergency bearer services only, 9/10 CSFB not preferred home/roaming. Unknown codes are kept.
- ``+COPS: <mode>[,<format>,<oper>[,<AcT>]]`` (7.3); AcT 0-13 as below.
- ``+CGPADDR: <cid>[,<PDP_addr_1>[,<PDP_addr_2>]]`` (10.1.14), one line per context; an IPv6
  address in the dotted 16-octet form is converted to the usual notation.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, replace

from drivers.serial.errors import AtResponseError
from drivers.serial.modem_at import (
    CGPADDR,
    COPS,
    CSQ,
    CommandCompleted,
    UnsolicitedResult,
    split_params,
)


class _KeepsUnknown(enum.IntEnum):
    """Device-reported codes: an unknown value becomes a pseudo-member instead of an error."""

    @classmethod
    def _missing_(cls, value: object) -> _KeepsUnknown | None:
        if not isinstance(value, int):
            return None
        member = int.__new__(cls, value)
        member._name_ = f"CODE_{value}"
        member._value_ = value
        return member


class RegistrationState(_KeepsUnknown):
    NOT_REGISTERED = 0
    REGISTERED_HOME = 1
    SEARCHING = 2
    DENIED = 3
    UNKNOWN = 4
    REGISTERED_ROAMING = 5
    SMS_ONLY_HOME = 6
    SMS_ONLY_ROAMING = 7
    EMERGENCY_ONLY = 8
    CSFB_NOT_PREFERRED_HOME = 9
    CSFB_NOT_PREFERRED_ROAMING = 10

    @property
    def registered(self) -> bool:
        """Registered with data service (SMS-only and emergency-only do not count)."""
        return self.value in (1, 5, 9, 10)


class AccessTechnology(_KeepsUnknown):
    GSM = 0
    GSM_COMPACT = 1
    UTRAN = 2
    GSM_EGPRS = 3
    UTRAN_HSDPA = 4
    UTRAN_HSUPA = 5
    UTRAN_HSDPA_HSUPA = 6
    E_UTRAN = 7
    EC_GSM_IOT = 8
    E_UTRAN_NB_S1 = 9
    E_UTRA_5GCN = 10
    NR_5GCN = 11
    NG_RAN = 12
    E_UTRA_NR_DUAL = 13


class Domain(enum.StrEnum):
    CS = "+CREG"  # circuit-switched (2G/3G)
    EPS = "+CEREG"  # LTE
    FIVEGS = "+C5GREG"  # 5G core


@dataclass(frozen=True, slots=True)
class Registration:
    state: RegistrationState
    area_code: str | None = None  # LAC / TAC, hexadecimal as sent
    cell_id: str | None = None
    access_technology: AccessTechnology | None = None


@dataclass(frozen=True, slots=True)
class PdpAddress:
    cid: int
    addresses: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ModemStatus:
    rssi_dbm: int | None = None
    ber: int | None = None
    cs: Registration | None = None
    eps: Registration | None = None
    fivegs: Registration | None = None
    operator: str | None = None
    access_technology: AccessTechnology | None = None
    pdp_addresses: tuple[PdpAddress, ...] = ()

    @property
    def registered(self) -> bool:
        return any(r is not None and r.state.registered for r in (self.cs, self.eps, self.fivegs))

    @property
    def registration(self) -> str | None:
        """The state worth showing: a registered domain's, else the most telling (denied first,
        then searching); e.g. "registered-home", "denied". None before any answer."""
        states = [r.state for r in (self.fivegs, self.eps, self.cs) if r is not None]
        if not states:
            return None
        telling = (RegistrationState.DENIED, RegistrationState.SEARCHING)
        best = next(
            (s for s in states if s.registered),
            next((s for t in telling for s in states if s is t), states[0]),
        )
        return best.name.lower().replace("_", "-")


# 3GPP TS 27.007 9.2.1: the +CME ERROR codes that are about the SIM card, by number and by the
# verbose text (AT+CMEE=2) modems send instead.
SIM_ERRORS = {
    10: "not-inserted",
    11: "pin-required",
    12: "puk-required",
    13: "failure",
    14: "busy",
    15: "wrong",
}
_SIM_TEXTS = {
    "sim not inserted": "not-inserted",
    "sim pin required": "pin-required",
    "sim puk required": "puk-required",
    "sim failure": "failure",
    "sim busy": "busy",
    "sim wrong": "wrong",
}


def sim_problem(error: int | str | None) -> str | None:
    """What a +CME ERROR says about the SIM ("not-inserted", "pin-required", ...), or None."""
    if isinstance(error, int):
        return SIM_ERRORS.get(error)
    return _SIM_TEXTS.get((error or "").strip().lower())


def _int(text: str, what: str) -> int:
    if not text.isdigit():
        raise AtResponseError(f"{what} is not a number", value=text[:16])
    return int(text)


def _split(line: str, prefix: str) -> list[tuple[str, bool]]:
    head, sep, rest = line.partition(":")
    if not sep or head.strip().upper() != prefix:
        raise AtResponseError("response line has an unexpected prefix", expected=prefix)
    return split_params(rest)


def parse_csq(line: str) -> tuple[int | None, int | None]:
    """(rssi in dBm, ber) from ``+CSQ: <rssi>,<ber>``."""
    params = _split(line, "+CSQ")
    if len(params) != 2:
        raise AtResponseError("+CSQ needs two parameters")
    rssi, ber = _int(params[0][0], "rssi"), _int(params[1][0], "ber")
    dbm = -113 + 2 * rssi if rssi <= 31 else None
    return dbm, ber if ber <= 7 else None


def parse_registration(line: str, *, solicited: bool) -> tuple[Domain, Registration]:
    head = line.partition(":")[0].strip().upper()
    try:
        domain = Domain(head)
    except ValueError:
        raise AtResponseError("not a registration line") from None
    params = _split(line, head)[1 if solicited else 0 :]
    if not params or not params[0][0]:
        raise AtResponseError("registration line without <stat>")
    state = RegistrationState(_int(params[0][0], "stat"))
    text = [p[0] or None for p in params[1:4]] + [None] * 3
    act = AccessTechnology(_int(text[2], "AcT")) if text[2] else None
    return domain, Registration(state, text[0], text[1], act)


def parse_cops(line: str) -> tuple[str | None, AccessTechnology | None]:
    params = _split(line, "+COPS")
    _int(params[0][0], "mode")
    operator = params[2][0] if len(params) > 2 and params[2][0] else None
    act = AccessTechnology(_int(params[3][0], "AcT")) if len(params) > 3 and params[3][0] else None
    return operator, act


def _address(text: str) -> str:
    parts = text.split(".")
    if len(parts) == 16 and all(p.isdigit() and int(p) < 256 for p in parts):
        return str(ipaddress.IPv6Address(bytes(int(p) for p in parts)))
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise AtResponseError("PDP address is not an IP address", value=text[:48]) from None


def parse_cgpaddr(line: str) -> PdpAddress:
    params = _split(line, "+CGPADDR")
    cid = _int(params[0][0], "cid")
    return PdpAddress(cid, tuple(_address(p[0]) for p in params[1:] if p[0]))


class ModemStatusTracker:
    """Folds completed status commands and URCs into the latest :class:`ModemStatus`."""

    def __init__(self) -> None:
        self.status = ModemStatus()

    def apply(self, event: CommandCompleted | UnsolicitedResult) -> ModemStatus:
        """Update from one event; AtResponseError for a malformed line (status unchanged)."""
        if isinstance(event, UnsolicitedResult):
            self.status = self._line(self.status, event.line, solicited=False)
        elif event.command == CGPADDR:
            pdp = tuple(parse_cgpaddr(line) for line in event.lines)
            self.status = replace(self.status, pdp_addresses=pdp)
        else:
            status = self.status
            for line in event.lines:
                status = self._line(status, line, solicited=True)
            if event.command == COPS and not event.lines:
                status = replace(status, operator=None, access_technology=None)
            self.status = status
        return self.status

    @staticmethod
    def _line(status: ModemStatus, line: str, *, solicited: bool) -> ModemStatus:
        head = line.partition(":")[0].strip().upper()
        if head == CSQ.prefix:
            rssi, ber = parse_csq(line)
            return replace(status, rssi_dbm=rssi, ber=ber)
        if head in {d.value for d in Domain}:
            domain, reg = parse_registration(line, solicited=solicited)
            if domain is Domain.CS:
                return replace(status, cs=reg)
            if domain is Domain.EPS:
                return replace(status, eps=reg)
            return replace(status, fivegs=reg)
        if head == COPS.prefix and solicited:
            operator, act = parse_cops(line)
            return replace(status, operator=operator, access_technology=act)
        return status  # a URC or line we do not track (RING, +CMTI, vendor codes)
