"""What is wrong with this gateway, in plain words, and what the technician does next.

``diagnose(status)`` reads one health snapshot (what ``gatewayctl status --json`` prints, the
daemon's ``HealthReporter`` report) and returns :class:`Finding` s: every alarm the daemon raised
(gateway/alarms.py) plus what a technician must see that is not an alarm - the uplink not
connected and why, readings waiting too long, the clock, the certificate, each device's state and
the 5G modem's SIM and registration, and a restart after a power-cut shutdown. Pure: no I/O,
so the CLI, the support bundle and tests can all use it on a snapshot. Snapshots carry no
clinical value, and neither do findings.

A finding with severity "problem" makes ``gatewayctl status`` exit 1; a "warning" is shown but is
not by itself a fault (a device out of reach between measurements, a clock nobody can check).
"""

from __future__ import annotations

import enum
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway import alarms
from gateway.cli.catalogue import CATALOGUE, UNKNOWN_ALARM, UNKNOWN_ENTRY, Entry

BACKLOG_OLD_S = 3600.0  # readings waiting longer than this for delivery is a problem
NEVER_SEEN_AFTER_S = 600.0  # a device without contact this long after start is worth a look
CERTIFICATE_WARN_DAYS = 14  # as the daemon's certificate-expires-soon alarm
WEAK_SIGNAL_DBM = -105  # below this a 5G/LTE link drops in and out

# Device states (DeviceHealth.state) that mean "cannot talk to the device", with their codes.
DEVICE_STATES: Mapping[str, str] = {
    "pairing-failed": "device-pairing-failed",
    "out-of-range": "device-out-of-range",
    "failing": "device-failing",
    "bluez-unavailable": "bluetooth-unavailable",
    "unplugged": "device-unplugged",
    "busy": "device-port-busy",
    "no-permission": "device-port-no-permission",
    "bad-settings": "device-port-settings",
    "io-error": "device-port-failing",
    "port-error": "device-port-failing",
    "not-answering": "modem-not-answering",
}
# Which last_error text of the uplink says why it is not connected (first match wins).
_UPLINK_CAUSES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("uplink-certificate-revoked", ("revoked",)),
    ("uplink-broker-untrusted", ("certificate_verify_failed", "certificate verify failed")),
    (
        "uplink-certificate-rejected",
        ("bad certificate", "certificate unknown", "unknown ca", "certificate expired",
         "certificate required", "handshake failure"),
    ),
    ("uplink-tls-files", ("cannot load tls files",)),
    ("uplink-broker-unreachable", ("cannot reach broker", "connection lost", "timed out")),
)
# 3GPP TS 27.007 9.2.1 +CME ERROR codes about the SIM, as the modem driver reports them.
_SIM_CODES = {"not-inserted": "modem-no-sim"}


class Severity(enum.StrEnum):
    PROBLEM = "problem"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Finding:
    code: str  # a catalogue code (gateway/cli/catalogue.py); alarms keep their own code
    severity: Severity
    subject: str  # what it is about: "uplink", a device id, a link or loop name
    what: str  # what is wrong, in plain words
    action: str  # what the technician does next

    def as_json(self) -> dict[str, str]:
        return {
            "code": self.code,
            "severity": str(self.severity),
            "subject": self.subject,
            "what": self.what,
            "action": self.action,
        }


def _finding(code: str, subject: str | None = None, **fields: object) -> Finding:
    entry: Entry = CATALOGUE[code]
    values = {k: "-" if v is None else v for k, v in fields.items()}
    return Finding(
        code=code,
        severity=Severity(entry.severity),
        subject=subject or entry.subject,
        what=entry.what.format(**values),
        action=entry.action.format(**values),
    )


def _num(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "an unknown time"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _short(text: object, limit: int = 160) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def uplink_cause(last_error: str | None) -> str | None:
    """The catalogue code for why the uplink failed, from its last error text (None: unknown)."""
    text = (last_error or "").lower()
    for code, needles in _UPLINK_CAUSES:
        if any(n in text for n in needles):
            return code
    return None


def _uplink(status: Mapping[str, Any], codes: set[str]) -> list[Finding]:
    up = status.get("uplink") or {}
    error = up.get("last_error")
    fields = {"state": up.get("state"), "error": _short(error) if error else "none"}
    # A bare EOF after a TLS alert (TLS 1.3 races them) must not hide what the broker said.
    cause = uplink_cause(error) or uplink_cause(up.get("last_tls_alert"))
    if alarms.UPLINK_REFUSED in codes:
        specific = ("uplink-broker-untrusted", "uplink-certificate-revoked",
                    "uplink-certificate-rejected")
        return [_finding(cause if cause in specific else alarms.UPLINK_REFUSED, **fields)]
    if alarms.VPN_DOWN in codes:
        return [_finding(alarms.VPN_DOWN, **fields)]
    if up.get("state") == "connected":
        return []
    return [_finding(cause or "uplink-not-connected", **fields)]


def _device_label(d: Mapping[str, Any]) -> str:
    driver = str(d.get("driver", ""))
    if driver.startswith("serial.modem."):
        return f"modem {driver.removeprefix('serial.modem.')}"
    return str(d.get("device", "?"))


def _devices(status: Mapping[str, Any], silent: set[str]) -> list[Finding]:
    out: list[Finding] = []
    bluez_down: list[str] = []
    uptime = _num(status.get("uptime_s")) or 0.0
    for d in status.get("devices") or []:
        device, state = str(d.get("device")), str(d.get("state"))
        fields = {"device": _device_label(d), "state": state, "driver": d.get("driver")}
        code = DEVICE_STATES.get(state)
        if code == "bluetooth-unavailable":
            bluez_down.append(device)
            continue
        found = _finding(code, _device_label(d), **fields) if code else None
        if found is not None:
            out.append(found)
        if device in silent and (found is None or found.severity is not Severity.PROBLEM):
            out.append(_finding(alarms.DEVICE_SILENT, device, **fields,
                                last_seen=d.get("last_seen") or "never"))
        elif (found is None and d.get("last_seen") is None and device not in silent
              and d.get("expected_interval_s") is None and uptime > NEVER_SEEN_AFTER_S
              and not str(d.get("driver", "")).startswith("serial.modem.")):
            out.append(_finding("device-never-seen", device, **fields,
                                uptime=_duration(uptime)))
    if bluez_down:
        out.append(_finding("bluetooth-unavailable", "bluetooth",
                            devices=", ".join(sorted(bluez_down))))
    return out


def _modem_code(link: Mapping[str, Any], rssi: float | None) -> str | None:
    sim = link.get("sim")
    if sim:
        return _SIM_CODES.get(str(sim), "modem-sim-unusable")
    if not link.get("registered"):
        if link.get("registration") == "denied":
            return "modem-registration-denied"
        if rssi is None or rssi <= -113:  # +CSQ 0: -113 dBm or less
            return "modem-no-signal"
        return "modem-not-registered"
    if rssi is not None and rssi < WEAK_SIGNAL_DBM:
        return "modem-weak-signal"
    return None


def _modem(name: str, link: Mapping[str, Any]) -> list[Finding]:
    """SIM, registration and signal of a modem that answers (port faults are device states)."""
    if link.get("state") != "answering":
        return []
    rssi = _num(link.get("rssi_dbm"))
    code = _modem_code(link, rssi)
    if code is None:
        return []
    return [_finding(code, f"modem {name}", modem=name,
                     rssi="none" if rssi is None else f"{rssi:.0f} dBm",
                     registration=link.get("registration") or "unknown", sim=link.get("sim"))]


def _links(status: Mapping[str, Any]) -> list[Finding]:
    out: list[Finding] = []
    for name, link in (status.get("links") or {}).items():
        if not isinstance(link, Mapping):
            continue
        if "registered" in link:
            out += _modem(str(name), link)
        elif name == "vpn" and link.get("interface") and link.get("state") == "unknown":
            out.append(_finding("vpn-unchecked", "vpn", interface=link.get("interface"),
                                error=_short(link.get("error") or "no answer")))
    return out


_POWER_ALARMS = frozenset(
    {alarms.POWER_ON_BATTERY, alarms.POWER_BATTERY_LOW, alarms.POWER_FLAPPING,
     alarms.UPS_UNREACHABLE, alarms.UPS_SELF_TEST_FAILED}
)


def _power_fields(power: Mapping[str, Any]) -> dict[str, Any]:
    charge = _num(power.get("charge_pct"))
    return {
        "since": power.get("outage_since") or "an unknown time",
        "charge": "unknown" if charge is None else f"{charge:.0f} %",
        "runtime": _duration(_num(power.get("runtime_s"))),
        "ups": power.get("ups"),
        "error": _short(power.get("error") or "no answer"),
        "result": _short(power.get("self_test_result") or "unknown"),
        "reason": power.get("reason") or "unknown",
    }


def _power(status: Mapping[str, Any]) -> list[Finding]:
    """What the power section says that is not an alarm: a power-cut restart, an odd UPS."""
    power = status.get("power") or {}
    if not isinstance(power, Mapping):
        return []
    out = []
    previous = power.get("previous_stop")
    if isinstance(previous, Mapping) and previous.get("reason") == "power-cut-shutdown":
        out.append(_finding("power-cut-shutdown", at=previous.get("at"),
                            since=previous.get("outage_started") or "an unknown time"))
    if power.get("state") == "unknown" and power.get("ups"):
        out.append(_finding("power-unknown", **_power_fields(power)))
    return out


def _alarm_fields(  # noqa: PLR0911 - one answer per alarm family
    code: str, subject: str | None, status: Mapping[str, Any]
) -> dict[str, Any]:
    """What the catalogue text of a raised alarm needs from the snapshot."""
    links = status.get("links") or {}
    if code in _POWER_ALARMS:
        return _power_fields(status.get("power") or {})
    if code == alarms.LOOP_STALLED:
        loop = (status.get("loops") or {}).get(subject) or {}
        return {"loop": subject, "age": _duration(_num(loop.get("age_s")))}
    if code == alarms.OUTBOX_COMMIT_FAILING:
        return {"error": _short((status.get("ingest") or {}).get("last_error") or "unknown")}
    if code == alarms.OUTBOX_QUOTA_REACHED:
        ob = status.get("outbox") or {}
        return {"quota": ob.get("quota_bytes"), "refused": ob.get("refused_readings")}
    if code == alarms.VPN_HANDSHAKE_STALE:
        vpn = links.get("vpn") or {}
        age = _num(vpn.get("handshake_age_s"))
        return {"interface": vpn.get("interface"),
                "age": "never" if age is None else f"{_duration(age)} ago"}
    if code == alarms.WAN_UNEXPECTED_INTERFACE:
        return {"interface": (links.get("wan-route") or {}).get("interface")}
    if code == alarms.DRIVER_RESTARTING:
        driver, _, error_type = (subject or "").rpartition(":")
        state = (status.get("supervision") or {}).get(driver) or {}
        return {"error_type": error_type or "unknown", "failures": state.get("failures", "?")}
    if code == alarms.DEVICE_INPUT_REJECTED:
        found = [d for d in status.get("devices") or [] if d.get("device") == subject]
        return {"rejected": found[0].get("rejected_input", "?") if found else "?"}
    return {}


def _certificate(status: Mapping[str, Any]) -> list[Finding]:
    cert = status.get("certificate") or {}
    days = _num(cert.get("days_left"))
    if cert.get("not_after") is None:
        return [_finding("certificate-unreadable")]
    if days is not None and days < 0:
        return [_finding("certificate-expired", not_after=cert.get("not_after"))]
    if days is not None and days < CERTIFICATE_WARN_DAYS:
        return [_finding(alarms.CERTIFICATE_EXPIRES_SOON, days=days,
                         not_after=cert.get("not_after"))]
    return []


def _clock(status: Mapping[str, Any]) -> list[Finding]:
    clock = status.get("clock") or {}
    source = clock.get("source") or "unknown"
    if source == "unknown" or clock.get("error"):
        return [_finding("clock-unchecked", source=source,
                         error=_short(clock.get("error") or "no time service found"))]
    if not clock.get("synchronised"):
        offset = clock.get("offset_ms")
        return [_finding("clock-not-synchronised", source=source,
                         offset="unknown" if offset is None else f"{offset} ms")]
    return []


def _outbox(status: Mapping[str, Any]) -> list[Finding]:
    out = []
    ob = status.get("outbox") or {}
    age = _num(ob.get("oldest_age_s"))
    if age is not None and age > BACKLOG_OLD_S:
        out.append(_finding("outbox-backlog-old", age=_duration(age), depth=ob.get("depth")))
    unusable = int(_num((status.get("ingest") or {}).get("unusable_readings")) or 0)
    if unusable:
        out.append(_finding("readings-unusable", count=unusable))
    return out


def _loops(status: Mapping[str, Any], stalled: set[str]) -> list[Finding]:
    return [
        _finding(alarms.LOOP_STALLED, str(name), loop=name, age=_duration(_num(v.get("age_s"))))
        for name, v in (status.get("loops") or {}).items()
        if isinstance(v, Mapping) and v.get("stalled") and name not in stalled
    ]


def diagnose(status: Mapping[str, Any]) -> list[Finding]:
    """Every finding for one health snapshot, problems first (pure; never raises on odd data)."""
    raised = [alarms.split(str(a)) for a in status.get("alarms") or []]
    codes = {code for code, _ in raised}
    silent = {s for c, s in raised if c == alarms.DEVICE_SILENT and s is not None}
    stalled = {s for c, s in raised if c == alarms.LOOP_STALLED and s is not None}
    found = _uplink(status, codes)
    made_apart = {alarms.UPLINK_REFUSED, alarms.VPN_DOWN, alarms.DEVICE_SILENT,
                  alarms.CERTIFICATE_EXPIRES_SOON}
    for code, subject in raised:
        if code in made_apart:
            continue
        if CATALOGUE.get(code, UNKNOWN_ENTRY).alarm:
            found.append(_finding(code, subject, **_alarm_fields(code, subject, status)))
        else:  # a newer daemon's alarm: still shown, as a problem
            found.append(_finding(UNKNOWN_ALARM, subject or code, alarm=code))
    found += _loops(status, stalled)
    found += _outbox(status)
    found += _devices(status, silent)
    found += _links(status)
    found += _certificate(status)
    found += _clock(status)
    found += _power(status)
    return _unique(sorted(found, key=lambda f: f.severity is not Severity.PROBLEM))


def _unique(findings: Iterable[Finding]) -> list[Finding]:
    seen: set[tuple[str, str]] = set()
    out = []
    for f in findings:
        if (f.code, f.subject) not in seen:
            seen.add((f.code, f.subject))
            out.append(f)
    return out


def has_problem(findings: Iterable[Finding]) -> bool:
    return any(f.severity is Severity.PROBLEM for f in findings)


def render_findings(findings: list[Finding], width: int = 100) -> str:
    """The "problems" section of ``gatewayctl status``: what is wrong, then what to do."""
    problems = sum(f.severity is Severity.PROBLEM for f in findings)
    warnings = len(findings) - problems
    head = f"{problems} problem{'s' * (problems != 1)} found" if problems else "no problems found"
    if warnings:
        head += f" ({warnings} warning{'s' * (warnings != 1)})"
    lines = [f"problems     {head}"]
    for f in findings:
        label = "PROBLEM" if f.severity is Severity.PROBLEM else "warning"
        lines += textwrap.wrap(f"{f.subject}: {f.what}", width, initial_indent=f"  {label:<8} ",
                               subsequent_indent=" " * 11, break_on_hyphens=False)
        lines += textwrap.wrap(f"-> {f.action}", width, initial_indent=" " * 11,
                               subsequent_indent=" " * 14, break_on_hyphens=False)
    return "\n".join(lines)
