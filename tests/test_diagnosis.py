"""gatewayctl status diagnosis: every alarm and failure condition becomes plain words and an action.

Each catalogue entry is produced here from a synthetic health snapshot (the shape
HealthReporter._collect makes); the registry test keeps the catalogue and the alarms the code
raises in step, so a new alarm cannot ship without an explanation for the technician.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from buffer.outbox import Outbox
from gateway import alarms
from gateway.cli.catalogue import CATALOGUE, UNKNOWN_ALARM
from gateway.cli.diagnosis import Finding, Severity, diagnose, has_problem, render_findings
from gateway.cli.main import main, render_status
from gateway.control import ControlServer
from gateway.errors import UploadError
from gateway.pipeline.dbthread import DatabaseThread
from gateway.uplink.mqtt import UplinkSettings
from gateway.uplink.upload import UploadLoop, UploadSettings
from tests.factories import VALID_CONFIG, write_config

ROOT = Path(__file__).resolve().parents[1]
TH = "btmac:C0:FF:EE:00:00:31"


def healthy() -> dict[str, Any]:
    """A snapshot of a gateway with nothing wrong (chrony synchronised, modem registered)."""
    return {
        "type": "health",
        "version": 1,
        "gateway_id": "gw-0001",
        "episode": "ep-1",
        "time": "2026-01-05T10:00:00+00:00",
        "software_version": "0.1.0",
        "uptime_s": 3600.0,
        "outbox": {"depth": 0, "bytes": 0, "oldest_age_s": None, "last_seq": 41, "epoch": 1,
                   "quota_bytes": 1048576, "refused_readings": 0},
        "ingest": {"committed_readings": 40, "unusable_readings": 0, "last_error": None},
        "uplink": {"state": "connected", "delivered_records": 41, "last_error": None},
        "devices": [
            {"device": TH, "driver": "ble.thermometer", "state": "connected",
             "last_seen": "2026-01-05T09:59:00+00:00", "expected_interval_s": None,
             "silent": False, "readings": 4, "battery_pct": 80, "rssi_dbm": -60},
            {"device": "serial:modem-wan", "driver": "serial.modem.wan", "state": "answering",
             "last_seen": "2026-01-05T09:59:59+00:00", "expected_interval_s": None,
             "silent": False, "readings": 0, "battery_pct": None, "rssi_dbm": -73},
        ],
        "links": {
            "vpn": {"interface": "wg0", "state": "up", "handshake_age_s": 20.0,
                    "route_via_vpn": True},
            "wan-route": {"interface": "wwan0", "kind": "modem", "carries": "vpn"},
            "wan": {"state": "answering", "updated_at": "2026-01-05T09:59:59+00:00",
                    "registered": True, "rssi_dbm": -73, "operator": "Sim Mobile",
                    "access_technology": "E_UTRAN", "pdp_addresses": ["10.64.12.7"],
                    "registration": "registered-home", "sim": None},
            "bluetooth": {"ignored_advertisers": 1},
        },
        "clock": {"source": "chrony", "synchronised": True, "offset_ms": 0.2, "stratum": 3},
        "certificate": {"not_after": "2026-03-01T00:00:00+00:00", "days_left": 55.0},
        "power": {"state": "mains", "ups": "ups@127.0.0.1:3493", "on_battery": False,
                  "low_battery": False, "charge_pct": 100, "runtime_s": 1800,
                  "low_runtime_s": 300.0, "self_test": "passed",
                  "self_test_result": "Done and passed", "outage_since": None,
                  "flapping": False, "blips": 0, "error": None,
                  "checked_at": "2026-01-05T09:59:59+00:00"},
        "alarms": [],
    }


Change = Callable[[dict[str, Any]], None]


def alarm(code: str, subject: str | None = None) -> Change:
    def raise_it(s: dict[str, Any]) -> None:
        s["alarms"].append(alarms.about(code, subject) if subject else code)

    return raise_it


def uplink_down(error: str | None, *, state: str = "backoff", also: str | None = None) -> Change:
    def down(s: dict[str, Any]) -> None:
        s["uplink"].update(state=state, last_error=error)
        if also:
            s["alarms"].append(also)

    return down


def device(state: str, **more: Any) -> Change:
    def set_state(s: dict[str, Any]) -> None:
        s["devices"][0].update(state=state, **more)

    return set_state


def modem(**link: Any) -> Change:
    def set_link(s: dict[str, Any]) -> None:
        s["links"]["wan"].update(**link)

    return set_link


def both(*changes: Change) -> Change:
    def apply(s: dict[str, Any]) -> None:
        for c in changes:
            c(s)

    return apply


def setter(path: tuple[str, ...], **values: Any) -> Change:
    def apply(s: dict[str, Any]) -> None:
        target = s
        for key in path:
            target = target[key]
        target.update(values)

    return apply


TLS_ALERT = "cannot reach broker 127.0.0.1:8883: [SSL: TLSV1_ALERT_{}] tlsv1 alert {} (_ssl.c:2580)"
# For each catalogue code: a snapshot change that must produce it (and the subject it names).
SCENARIOS: dict[str, tuple[Change, str]] = {
    alarms.OUTBOX_REPLACED: (alarm(alarms.OUTBOX_REPLACED), "outbox"),
    alarms.COMMAND_LEDGER_UNUSABLE: (alarm(alarms.COMMAND_LEDGER_UNUSABLE), "commands"),
    alarms.OUTBOX_COMMIT_FAILING: (
        both(alarm(alarms.OUTBOX_COMMIT_FAILING),
             setter(("ingest",), last_error="disk I/O error")), "outbox"),
    alarms.OUTBOX_QUOTA_REACHED: (
        both(alarm(alarms.OUTBOX_QUOTA_REACHED), setter(("outbox",), refused_readings=12)),
        "outbox"),
    alarms.STREAM_CHUNK_LOST: (alarm(alarms.STREAM_CHUNK_LOST), "outbox"),
    alarms.UPLINK_REFUSED: (
        uplink_down("broker refused a batch: Not authorized (0x87)", state="connected",
                    also=alarms.UPLINK_REFUSED), "uplink"),
    alarms.VPN_DOWN: (
        uplink_down("the route to 10.77.0.1 goes through eth0, not the VPN wg0",
                    also=alarms.VPN_DOWN), "uplink"),
    alarms.VPN_HANDSHAKE_STALE: (
        both(alarm(alarms.VPN_HANDSHAKE_STALE),
             setter(("links", "vpn"), state="stale", handshake_age_s=900.0)), "vpn"),
    alarms.WAN_UNEXPECTED_INTERFACE: (
        both(alarm(alarms.WAN_UNEXPECTED_INTERFACE),
             setter(("links", "wan-route"), interface="wlan0", kind="unexpected")), "wan-route"),
    alarms.CERTIFICATE_EXPIRES_SOON: (
        both(alarm(alarms.CERTIFICATE_EXPIRES_SOON), setter(("certificate",), days_left=6.5)),
        "certificate"),
    alarms.DEVICE_SILENT: (
        both(alarm(alarms.DEVICE_SILENT, TH), device("connected", silent=True,
                                                      expected_interval_s=60.0)), TH),
    alarms.LOOP_STALLED: (
        both(alarm(alarms.LOOP_STALLED, f"driver.{TH}"),
             lambda s: s.__setitem__("loops", {f"driver.{TH}": {
                 "age_s": 181.5, "stalled": True, "paused": None}})), f"driver.{TH}"),
    alarms.DRIVER_RESTARTING: (
        both(alarm(alarms.DRIVER_RESTARTING, "serial.astm.crp:KeyError"),
             lambda s: s.__setitem__("supervision", {"serial.astm.crp": {
                 "failures": 3, "error_type": "KeyError", "state": "restarting"}})),
        "serial.astm.crp:KeyError"),
    alarms.DEVICE_INPUT_REJECTED: (
        both(alarm(alarms.DEVICE_INPUT_REJECTED, TH), device("connected", rejected_input=7)),
        TH),
    "uplink-not-connected": (uplink_down(None, state="connecting"), "uplink"),
    "uplink-broker-unreachable": (
        uplink_down("cannot reach broker 127.0.0.1:8883: [Errno 111] Connection refused"),
        "uplink"),
    "uplink-certificate-revoked": (
        uplink_down(TLS_ALERT.format("CERTIFICATE_REVOKED", "certificate revoked")), "uplink"),
    "uplink-certificate-rejected": (
        uplink_down(TLS_ALERT.format("UNKNOWN_CA", "unknown ca")), "uplink"),
    "uplink-broker-untrusted": (
        uplink_down("cannot reach broker 127.0.0.1:8883: [SSL: CERTIFICATE_VERIFY_FAILED] "
                    "certificate verify failed: unable to get local issuer certificate",
                    also=alarms.UPLINK_REFUSED), "uplink"),
    "uplink-tls-files": (
        uplink_down("cannot load TLS files: [Errno 2] No such file or directory"), "uplink"),
    "outbox-backlog-old": (setter(("outbox",), depth=900, oldest_age_s=7300.0), "outbox"),
    "readings-unusable": (setter(("ingest",), unusable_readings=2), "ingest"),
    "device-never-seen": (device("waiting", last_seen=None), TH),
    "device-out-of-range": (device("out-of-range"), TH),
    "device-pairing-failed": (device("pairing-failed"), TH),
    "device-failing": (device("failing"), TH),
    "bluetooth-unavailable": (device("bluez-unavailable"), "bluetooth"),
    "device-unplugged": (device("unplugged"), TH),
    "device-port-busy": (device("busy"), TH),
    "device-port-no-permission": (device("no-permission"), TH),
    "device-port-settings": (device("bad-settings"), TH),
    "device-port-failing": (device("io-error"), TH),
    "modem-not-answering": (
        lambda s: s["devices"][1].update(state="not-answering"), "modem wan"),
    "modem-no-sim": (modem(sim="not-inserted", registered=False,
                           registration="not-registered"), "modem wan"),
    "modem-sim-unusable": (modem(sim="pin-required", registered=False), "modem wan"),
    "modem-registration-denied": (modem(registered=False, registration="denied"), "modem wan"),
    "modem-no-signal": (modem(registered=False, registration="searching", rssi_dbm=None),
                        "modem wan"),
    "modem-not-registered": (modem(registered=False, registration="searching"), "modem wan"),
    "modem-weak-signal": (modem(rssi_dbm=-109), "modem wan"),
    "vpn-unchecked": (setter(("links", "vpn"), state="unknown",
                             error="wg show wg0: Operation not permitted"), "vpn"),
    "certificate-expired": (
        both(alarm(alarms.CERTIFICATE_EXPIRES_SOON), setter(("certificate",), days_left=-2.0)),
        "certificate"),
    "certificate-unreadable": (setter(("certificate",), not_after=None, days_left=None),
                               "certificate"),
    "clock-not-synchronised": (setter(("clock",), synchronised=False, stratum=16), "clock"),
    "clock-unchecked": (lambda s: s.__setitem__("clock", {"source": "unknown",
                                                          "synchronised": False}), "clock"),
    alarms.POWER_ON_BATTERY: (
        both(alarm(alarms.POWER_ON_BATTERY),
             setter(("power",), state="battery", on_battery=True, charge_pct=87, runtime_s=1500,
                    outage_since="2026-01-05T09:40:00+00:00")), "power"),
    alarms.POWER_BATTERY_LOW: (
        both(alarm(alarms.POWER_BATTERY_LOW),
             setter(("power",), state="battery-low", on_battery=True, charge_pct=9,
                    runtime_s=240)), "power"),
    alarms.POWER_FLAPPING: (both(alarm(alarms.POWER_FLAPPING), setter(("power",), flapping=True)),
                            "power"),
    alarms.UPS_UNREACHABLE: (
        both(alarm(alarms.UPS_UNREACHABLE),
             setter(("power",), state="unreachable",
                    error="cannot reach upsd at 127.0.0.1:3493: Connection refused")), "power"),
    alarms.UPS_SELF_TEST_FAILED: (
        both(alarm(alarms.UPS_SELF_TEST_FAILED),
             setter(("power",), self_test="failed", self_test_result="Done and error")), "power"),
    "power-cut-shutdown": (
        setter(("power",), previous_stop={"reason": "power-cut-shutdown",
                                          "at": "2026-01-05T08:00:00+00:00",
                                          "outage_started": "2026-01-05T07:10:00+00:00"}),
        "power"),
    "power-unknown": (setter(("power",), state="unknown", on_battery=None,
                             reason="the UPS reports neither on-line nor on-battery"), "power"),
    UNKNOWN_ALARM: (alarm("flux-capacitor-drained"), "flux-capacitor-drained"),
}


def findings_for(change: Change) -> list[Finding]:
    status = healthy()
    change(status)
    return diagnose(status)


def test_a_healthy_snapshot_has_no_findings_and_says_so() -> None:
    assert diagnose(healthy()) == []
    assert render_findings([]) == "problems     no problems found"
    assert "no problems found" in render_status(healthy())


def test_every_catalogue_entry_has_a_scenario_and_every_scenario_an_entry() -> None:
    assert set(SCENARIOS) == set(CATALOGUE)


@pytest.mark.parametrize("code", sorted(SCENARIOS))
def test_each_failure_mode_is_named_with_an_action(code: str) -> None:
    change, subject = SCENARIOS[code]
    found = {f.code: f for f in findings_for(change)}
    assert code in found, f"{code}: got {sorted(found)}"
    f = found[code]
    assert f.subject == subject
    assert f.severity == Severity(CATALOGUE[code].severity)
    assert f.what
    assert f.action
    assert "{" not in f.what + f.action, "a template field was left unfilled"
    # One cause, one finding: the change brings no second problem along.
    assert [g.code for g in found.values() if g.severity is Severity.PROBLEM] in ([], [code])


def test_alarm_registry_and_catalogue_agree() -> None:
    """Every alarm code has an entry marked as an alarm, and only alarm codes are so marked."""
    assert {e.code for e in CATALOGUE.values() if e.alarm} == alarms.ALL


def test_alarms_with_a_suffix_are_matched_by_prefix() -> None:
    status = healthy()
    status["alarms"] = ["loop-stalled:outbox-writer", "loop-stalled:uplink"]
    status["loops"] = {"outbox-writer": {"age_s": 125.0, "stalled": True, "paused": None},
                       "uplink": {"age_s": 300.0, "stalled": True, "paused": None},
                       "driver.x": {"age_s": 1.0, "stalled": False, "paused": "intake stopped"}}
    found = [(f.code, f.subject) for f in diagnose(status)]
    assert found == [("loop-stalled", "outbox-writer"), ("loop-stalled", "uplink")]
    assert "5 min" in diagnose(status)[1].what
    assert alarms.split("device-silent:btmac:C0:FF:EE:00:00:31") == (
        "device-silent", "btmac:C0:FF:EE:00:00:31")
    assert alarms.split("vpn-down") == ("vpn-down", None)


def test_a_stalled_loop_without_its_alarm_is_still_shown() -> None:
    status = healthy()
    status["loops"] = {"uplink": {"age_s": 200.0, "stalled": True, "paused": None}}
    assert [(f.code, f.subject) for f in diagnose(status)] == [("loop-stalled", "uplink")]


def test_a_silent_device_in_a_fault_state_is_one_finding_not_two() -> None:
    status = healthy()
    SCENARIOS["device-unplugged"][0](status)
    status["alarms"].append(alarms.about(alarms.DEVICE_SILENT, TH))
    assert [f.code for f in diagnose(status)] == ["device-unplugged"]


def test_bluetooth_down_is_one_finding_for_every_ble_device() -> None:
    status = healthy()
    second = dict(status["devices"][0], device="btmac:C0:FF:EE:00:00:32")
    status["devices"].append(second)
    for d in status["devices"]:
        if d["driver"].startswith("ble."):
            d["state"] = "bluez-unavailable"
    (only,) = diagnose(status)
    assert only.code == "bluetooth-unavailable"
    assert "00:31" in only.what
    assert "00:32" in only.what


def test_problems_come_first_and_render_what_then_action() -> None:
    status = healthy()
    status["devices"][0]["state"] = "out-of-range"
    status["uplink"].update(state="backoff", last_error="cannot reach broker x: timed out")
    found = diagnose(status)
    assert [f.severity for f in found] == [Severity.PROBLEM, Severity.WARNING]
    assert has_problem(found)
    text = render_findings(found)
    assert text.splitlines()[0] == "problems     1 problem found (1 warning)"
    assert text.index("cannot be reached") < text.index("-> Check the internet link")
    assert not has_problem(found[1:])


def test_odd_or_partial_snapshots_do_not_crash() -> None:
    assert [f.code for f in diagnose({"alarms": []})] == [
        "uplink-not-connected", "certificate-unreadable", "clock-unchecked"]
    assert diagnose({**healthy(), "links": {"vpn": "garbage"}, "loops": {"x": None}}) == []


# -- every alarm raised in the code is in the registry ------------------------------------------

PACKAGES = ("gateway", "drivers", "buffer", "provisioning")
_CODE_SHAPE = r"[a-z0-9]+(-[a-z0-9]+)+"


def _alarm_arguments(tree: ast.AST) -> list[ast.expr]:
    """Expressions that become alarms: ``*alarms*.append(x)`` / ``.add(x)``, ``alarms += x``,
    ``out.append(x)`` inside a function named ``alarms``, and ``alarm=x`` keyword arguments."""
    found: list[ast.expr] = []

    def visit(node: ast.AST, in_alarms_fn: bool) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            in_alarms_fn = node.name == "alarms"
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr in ("append", "add") and node.args:
                owner = ast.unparse(func.value)
                if "alarm" in owner.lower() or (in_alarms_fn and owner == "out"):
                    found.append(node.args[0])
            found.extend(k.value for k in node.keywords if k.arg == "alarm")
        if isinstance(node, ast.AugAssign) and "alarm" in ast.unparse(node.target).lower():
            found.append(node.value)
        for child in ast.iter_child_nodes(node):
            visit(child, in_alarms_fn)

    visit(tree, False)
    return found


def _codes_in(expr: ast.expr) -> set[str]:
    """Alarm codes an expression names: string literals (up to a ':') and alarms constants."""
    codes = set()
    for node in ast.walk(expr):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            head = node.value.split(":")[0]
            if re.fullmatch(_CODE_SHAPE, head):
                codes.add(head)
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in ("alarms", "alarms_") and node.attr.isupper()):
            codes.add(getattr(alarms, node.attr))
    return codes


def raised_codes() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "/sim/" in path.as_posix() or path.name == "alarms.py":
                continue
            for expr in _alarm_arguments(ast.parse(path.read_text(), str(path))):
                for code in _codes_in(expr):
                    out.setdefault(code, []).append(str(path.relative_to(ROOT)))
    return out


# Codes in the registry that no raising site in this tree uses yet, and why.
NOT_RAISED_HERE: dict[str, str] = {}


def test_every_alarm_raised_in_the_code_has_a_catalogue_entry() -> None:
    raised = raised_codes()
    assert alarms.OUTBOX_REPLACED in raised  # the scan sees daemon.py's literal
    assert alarms.VPN_HANDSHAKE_STALE in raised  # ... and linkmon's alarms()
    unknown = {code: where for code, where in raised.items() if code not in CATALOGUE}
    assert unknown == {}, "alarms without an explanation in gateway/cli/catalogue.py"
    unregistered = set(raised) - alarms.ALL
    assert unregistered == set(), "alarm codes missing from gateway/alarms.py"


def test_every_registered_alarm_is_raised_somewhere() -> None:
    raised = set(raised_codes())
    missing = alarms.ALL - raised - set(NOT_RAISED_HERE)
    assert missing == set(), "registered alarms that nothing raises (remove them?)"
    # A code that gets a raising site must leave the list.
    assert not (set(NOT_RAISED_HERE) & raised), "remove it from NOT_RAISED_HERE"


# -- the command ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("change", "exit_code"), [
    (None, 0),
    (SCENARIOS["device-out-of-range"][0], 0),  # a warning alone is not a failure
    (SCENARIOS["uplink-not-connected"][0], 1),
    (SCENARIOS["modem-no-sim"][0], 1),
])
async def test_status_exit_code_and_json_findings(
    files: Path, capsys: pytest.CaptureFixture[str], change: Change | None, exit_code: int
) -> None:
    snapshot = copy.deepcopy(healthy())
    if change is not None:
        change(snapshot)

    async def status(_: object) -> dict[str, Any]:
        return snapshot

    config = write_config(files, VALID_CONFIG + '\n[control]\nsocket = "run/c.sock"\n')
    (files / "run").mkdir()
    server = ControlServer(files / "run" / "c.sock", {"status": status})
    await server.start()
    try:
        human = await asyncio.to_thread(main, ["status", "--config", str(config)])
        text = capsys.readouterr().out
        as_json = await asyncio.to_thread(main, ["status", "--config", str(config), "--json"])
        data = json.loads(capsys.readouterr().out)
    finally:
        await server.close()
    assert human == as_json == exit_code
    assert [f.as_json() for f in diagnose(snapshot)] == data["findings"]
    if change is None:
        assert "problems     no problems found" in text.splitlines(), text
    else:
        assert data["findings"][0]["action"].split()[0] in text


def test_a_tls_alert_seen_before_a_bare_eof_still_names_the_cause() -> None:
    """TLS 1.3: the broker's alert races the socket's close, so the last attempt may only say
    EOF; the alert kept since the last good connection still names the cause."""
    status = healthy()
    status["uplink"].update(
        state="connecting",
        last_error="connection failed (disconnected: Unspecified error; failed to receive on "
        "socket: EOF occurred in violation of protocol (_ssl.c:2427))",
        last_tls_alert=TLS_ALERT.format("CERTIFICATE_REVOKED", "certificate revoked"),
    )
    assert [f.code for f in diagnose(status)] == ["uplink-certificate-revoked"]
    # A current error that names its own cause wins over the kept alert.
    status["uplink"]["last_error"] = "cannot reach broker 127.0.0.1:8883: connection lost"
    assert [f.code for f in diagnose(status)] == ["uplink-broker-unreachable"]


async def test_the_upload_loop_keeps_the_tls_alert_until_a_connection_succeeds(
    tmp_path: Path,
) -> None:
    alert = "cannot reach broker: [SSL] tlsv13 alert certificate revoked"
    errors = [UploadError(alert), UploadError("connection failed: EOF")]
    seen: list[tuple[str | None, str | None]] = []

    class Uplink:  # the part of MqttUplink the loop uses; connected, it stays idle
        settings = UplinkSettings("broker", 8883, Path("ca"), Path("c"), Path("k"), "gw")

        def __init__(self) -> None:
            self.lost = asyncio.Event()

        def alive(self) -> bool:
            return True

        async def connect(self) -> None:
            seen.append((upload.last_error, upload.last_tls_alert))
            if errors:
                raise errors.pop(0)

        async def close(self) -> None:
            return None

    db = DatabaseThread()
    outbox = await db.run(Outbox, tmp_path / "o.db")
    settings = UploadSettings("t", "h", backoff_initial_s=0.001, backoff_max_s=0.002)
    upload = UploadLoop(outbox, db, Uplink(), settings, asyncio.Event())  # type: ignore[arg-type]
    task = asyncio.create_task(upload.run())
    try:
        await asyncio.wait_for(upload.connected.wait(), 10.0)
        # Before the third attempt the last error was the bare EOF, and the alert was kept.
        said = [e.one_line() for e in (UploadError(alert), UploadError("connection failed: EOF"))]
        assert seen == [(None, None), (said[0], said[0]), (said[1], said[0])]
        assert (upload.last_error, upload.last_tls_alert) == (None, None)  # connected: cleared
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        db.shutdown()
