"""``gatewayctl status`` alone diagnoses each failure the rig can produce, against a real daemon.

Every fault is induced for real (mosquitto stopped or refusing, certificates revoked, expired,
unreadable or from another CA, the outbox full, damaged or killed mid-stream, serial ports
missing, busy or not a tty, a modem without SIM or network, BLE devices out of reach, refusing
the passkey or silent, bluetoothd stopped, the clock not synchronised) and the human output must
name the problem and the action, with exit code 1 (a warning alone: 0). The last test checks that
every catalogue code is covered here or excluded with a reason.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import serial  # type: ignore[import-untyped, unused-ignore]  # stubs: types-pyserial
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from buffer.staging import staged_rows_on_disk, staging_path
from gateway.cli import diagnosis
from gateway.cli.catalogue import CATALOGUE
from gateway.commands.ledger import LEDGER_FILE
from gateway.control import ControlError, ask
from gateway.daemon.overrides import COMMAND_KEY_FILE
from provider.broker import MosquittoBroker
from provider.commands import public_key_text
from rig.ble.peripheral import Pairing, PairingMethod
from rig.ble.profiles import BloodPressureMonitor, Thermometer, WeightScale
from rig.ble.rig import SimulatedBluez
from rig.serial.process import SimProcess
from tests.integration.rig import Rig, rig_fixture, wait_for
from tests.integration.test_ble_devices import ble_block

pytestmark = pytest.mark.integration

F = TypeVar("F", bound=Callable[..., Any])
COVERED: dict[str, str] = {}  # catalogue code -> the test here that induces it


def covers(*codes: str) -> Callable[[F], F]:
    def register(test: F) -> F:
        for code in codes:
            COVERED[code] = test.__name__
        return test

    return register


POWER_LIVE = "induced live against NUT's upsd with dummy-ups in tests/integration/test_power.py"
# Codes no test here induces, and why (each is produced from a synthetic snapshot in
# tests/test_diagnosis.py).
EXCLUDED = {
    "uplink-certificate-rejected": "depends on paho passing the broker's TLS alert on: under "
    "TLS 1.3 an expired client certificate often shows only as an EOF (flaky on a loaded "
    "machine); the alert texts are classified in tests/test_diagnosis.py, and the expired "
    "certificate itself is diagnosed steadily (certificate-expired, covered here)",
    "loop-stalled": "a loop must stay stuck for WATCHDOG_STALL_S (120 s); the marks, the pump's "
    "paused/stalled decision and the alarm are pinned in tests/test_watchdog.py and "
    "tests/test_diagnosis.py, and the live daemon's loops in tests/integration/test_quota.py",
    "vpn-handshake-stale": "needs a WireGuard peer that stops answering: network namespaces and "
    "CAP_NET_ADMIN (tests/integration/netns.py); the alarm is pinned in tests/test_linkmon.py",
    "device-port-no-permission": "root ignores device-node permissions; the classifier is "
    "pinned in tests/serial_io/test_port.py",
    "device-port-failing": "an I/O error on an open tty cannot be provoked on a pty; the "
    "classifier is pinned in tests/serial_io/test_port.py",
    "device-failing": "needs a BLE link that fails after connecting in a way that is not a "
    "disconnect; the simulated BlueZ has no such fault",
    "device-never-seen": "needs 10 minutes of uptime without contact (NEVER_SEEN_AFTER_S)",
    "outbox-backlog-old": "needs readings undelivered for an hour (BACKLOG_OLD_S)",
    "uplink-not-connected": "the cause-less state exists only between start and the first "
    "connect attempt; every failed attempt has an error text with its own code, covered here",
    "power-on-battery": POWER_LIVE,
    "power-battery-low": "the daemon stops (and powers off) as soon as it sees it; the stop is "
    "induced live in tests/integration/test_power.py, the finding in tests/test_diagnosis.py",
    "power-flapping": POWER_LIVE,
    "ups-unreachable": POWER_LIVE,
    "ups-self-test-failed": "a failed self-test is one variable of the scripted UPS; the alarm is "
    "pinned in tests/power/test_monitor.py and the finding in tests/test_diagnosis.py",
    "power-cut-shutdown": "the restart after a power-cut shutdown is induced live in "
    "tests/integration/test_power.py (its first health report)",
    "power-unknown": "needs a UPS that reports neither OL nor OB; pinned in "
    "tests/test_diagnosis.py from a snapshot",
    "device-input-rejected": "induced live in tests/integration/test_hostile.py: every hostile "
    "device's alarm is checked in gatewayctl status --json and in the health reports",
    "driver-restarting": "no live device can make a driver fail any more (device input becomes "
    "typed errors at each driver's border); the supervisor, its back-off and the alarm are "
    "pinned in tests/test_supervise.py, the finding in tests/test_diagnosis.py",
    "unknown-alarm": "the daemon raises only registered alarms (tests/test_diagnosis.py checks "
    "the source); this is for a daemon newer than gatewayctl",
}

CHRONY_SYNCED = "C0A80001,ntp.example,3,1767600000.0,0.000012,0.000001,0.000002,-1.2,0.001,0.01,"
CHRONY_SYNCED += "0.02,0.001,64.2,Normal\n"
CHRONY_UNSYNCED = "00000000,,0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,1.0,1.0,0.0,Not synchronised\n"


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    yield from rig_fixture(tmp_path)


def fake_chronyc(base: Path, answer: str) -> tuple[dict[str, str], Path]:
    """A ``chronyc`` on the daemon's PATH that prints what ``state`` holds (the NTP state)."""
    bindir = base / "bin"
    bindir.mkdir(exist_ok=True)
    state = base / "chrony.state"
    state.write_text(answer)
    script = bindir / "chronyc"
    script.write_text(f'#!/bin/sh\ncat "{state}"\n')
    script.chmod(0o755)
    return {"PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}, state


def snapshot(rig: Rig) -> dict[str, Any]:
    """The daemon's status straight from the control socket (cheaper than a gatewayctl run)."""
    try:
        status: dict[str, Any] = ask(rig.control_socket, "status")
    except ControlError:
        return {}
    return status


def codes_now(rig: Rig) -> set[str]:
    status = snapshot(rig)
    return {f.code for f in diagnosis.diagnose(status)} if status else set()


def gatewayctl_status(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli.main", "status", "--config", str(config)],
        capture_output=True, text=True, timeout=30, check=False,
    )


def flat(text: str) -> str:
    return " ".join(text.split())


def names(proc: subprocess.CompletedProcess[str], code: str) -> bool:
    """Does this ``gatewayctl status`` output state the finding ``code``: its words (up to the
    first detail filled in from the snapshot) and its whole action, and exit 1 for a problem?"""
    entry = CATALOGUE[code]
    text = flat(proc.stdout)
    return (flat(entry.what.split("{")[0]) in text and flat(f"-> {entry.action}") in text
            and (entry.severity != "problem" or proc.returncode == 1))


def diagnosed(rig: Rig, config: Path, *codes: str, timeout_s: float = 30.0) -> str:
    """Wait until the daemon's snapshot yields ``codes`` (cheap, over the socket); then the human
    ``gatewayctl status`` must name each with its action and exit 1 if one is a problem (asked
    again while a flapping uplink error settles)."""
    wait_for(lambda: set(codes) <= codes_now(rig), timeout_s, f"findings {codes}")
    last: list[subprocess.CompletedProcess[str]] = []

    def named() -> bool:
        last[:] = [gatewayctl_status(config)]
        return all(names(last[0], code) for code in codes)

    try:
        wait_for(named, 20, f"gatewayctl status to name {codes}")
    except AssertionError:
        raise AssertionError(f"{codes} not named in:\n{last[0].stdout}{last[0].stderr}") from None
    return last[0].stdout


def issue_client_cert(
    rig: Rig, name: str, *, days: tuple[float, float], ca: tuple[Path, Path] | None = None
) -> tuple[Path, Path]:
    """A client certificate for the rig's gateway id, valid from/to ``days`` from now, signed
    by the rig CA (or by ``ca``: another CA's certificate and key)."""
    ca_cert_path, ca_key_path = ca or (rig.pki.ca_cert, rig.pki.ca_key)
    ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, rig.gateway_id)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + timedelta(days=days[0]))
        .not_valid_after(now + timedelta(days=days[1]))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    folder = rig.base / "certs"
    folder.mkdir(exist_ok=True)
    cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def other_ca(base: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Some Other CA")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = base / "other-ca.crt", base / "other-ca.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def write_crl(rig: Rig, path: Path, revoked: list[Path]) -> None:
    """A CRL of the rig CA listing the certificates in ``revoked``."""
    ca_cert = x509.load_pem_x509_certificate(rig.pki.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(rig.pki.ca_key.read_bytes(), None)
    now = datetime.now(UTC)
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject)
               .last_update(now - timedelta(minutes=5)).next_update(now + timedelta(days=1)))
    for cert_path in revoked:
        serial_number = x509.load_pem_x509_certificate(cert_path.read_bytes()).serial_number
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial_number)
            .revocation_date(now - timedelta(minutes=1)).build())
    crl = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))


def restart(rig: Rig, config: Path, env: dict[str, str] | None = None,
            sig: int = signal.SIGTERM) -> None:
    if rig.daemon is not None and rig.daemon.poll() is None:
        rig.stop_daemon(sig)
    rig.start_daemon(config, env)
    wait_for(lambda: bool(snapshot(rig)), 30, "the restarted daemon's control socket")


STREAM = '\n[[sim_devices]]\nkind = "pulse-oximeter"\naddress = "C0:FF:EE:00:00:52"\n'
STREAM += "interval_s = 0.1\nstream = true\n"


@covers("clock-not-synchronised", "stream-chunk-lost", "outbox-replaced",
        "uplink-broker-unreachable", "uplink-certificate-revoked")
def test_healthy_rig_then_clock_crash_damaged_outbox_broker_down_and_revocation(rig: Rig) -> None:
    crl = rig.base / "crl.pem"
    write_crl(rig, crl, [])
    rig.broker = MosquittoBroker(rig.pki, rig.base / "broker", host=rig.broker.host, crl_file=crl)
    rig.start_provider()
    env, chrony = fake_chronyc(rig.base, CHRONY_SYNCED)
    config = rig.write_config([("thermometer", "C0:FF:EE:00:00:51", 0.5, 100000)])
    config.write_text(config.read_text().replace("[uplink]", "[outbox]\nstream_chunk_s = 60\n\n"
                                                 "[uplink]") + STREAM)
    rig.start_daemon(config, env)
    wait_for(lambda: len(rig.received.readings) >= 2, 30, "readings")
    wait_for(lambda: codes_now(rig) == set(), 30, "a gateway without findings")
    healthy = gatewayctl_status(config)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert "problems     no problems found" in healthy.stdout.splitlines()

    chrony.write_text(CHRONY_UNSYNCED)  # a warning: shown, exit code still 0
    diagnosed(rig, config, "clock-not-synchronised")
    warned = gatewayctl_status(config)
    assert warned.returncode == 0, warned.stdout
    assert "problems     no problems found (1 warning)" in warned.stdout.splitlines()
    chrony.write_text(CHRONY_SYNCED)

    # kill -9 while a stream chunk is open: its staged readings are sent at the next start,
    # nothing lost. A staged chunk that cannot be read (its file damaged) is reported as lost.
    staging = staging_path(rig.state_dir / "outbox.db")
    wait_for(lambda: staged_rows_on_disk(staging) > 0, 30, "a staged stream chunk")
    rig.stop_daemon(signal.SIGKILL)
    for chunk in staging.glob("*.stg"):
        chunk.write_bytes(b"\x00damaged" * 10)
    restart(rig, config, env)
    diagnosed(rig, config, "stream-chunk-lost")

    rig.stop_daemon()
    (rig.state_dir / "outbox.db").write_bytes(b"\x00not a database" * 100)
    restart(rig, config, env)
    diagnosed(rig, config, "outbox-replaced")

    rig.broker.stop()
    diagnosed(rig, config, "uplink-broker-unreachable")

    write_crl(rig, crl, [rig.pki.gateway(rig.gateway_id).client_cert])
    rig.broker.start()
    restart(rig, config, env)  # not to wait out the backoff the outage built up
    diagnosed(rig, config, "uplink-certificate-revoked")
    assert rig.stop_daemon() == 0, rig.log_text()[-2000:]


@covers("outbox-commit-failing")
def test_outbox_locked_by_another_program_then_released_loses_nothing(rig: Rig) -> None:
    """Another program holding a write lock on the outbox (say ``sqlite3`` left open in a
    transaction): commits fail, status says so, and once the lock goes every reading arrives."""
    rig.start_provider()
    config = rig.write_config([("thermometer", "C0:FF:EE:00:00:57", 0.2, 100000)])
    rig.start_daemon(config)
    wait_for(lambda: len(rig.received.readings) >= 2, 30, "readings")
    lock = sqlite3.connect(str(rig.state_dir / "outbox.db"), timeout=5.0, isolation_level=None)
    try:
        lock.execute("BEGIN EXCLUSIVE")
        diagnosed(rig, config, "outbox-commit-failing")
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    wait_for(lambda: "outbox-commit-failing" not in codes_now(rig), 60, "commits to succeed again")
    arrived = len(rig.received.readings)
    wait_for(lambda: len(rig.received.readings) > arrived + 2, 30, "readings after the lock")
    assert rig.stop_daemon() == 0, rig.log_text()[-2000:]
    summary = rig.verifier.summary()
    assert summary["missing"] == 0, summary
    assert summary["failures"] == {}


@covers("command-ledger-unusable")
def test_damaged_command_ledger_is_named_and_readings_still_flow(rig: Rig) -> None:
    """A commands.db that is not a database: the daemon takes no commands (it could not refuse
    a replay), ``gatewayctl status`` names the problem and its action, and readings flow."""
    rig.start_provider()
    rig.state_dir.mkdir(parents=True, exist_ok=True)
    key = public_key_text(ed25519.Ed25519PrivateKey.generate())
    (rig.state_dir / COMMAND_KEY_FILE).write_text(key + "\n")
    (rig.state_dir / LEDGER_FILE).write_bytes(b"this is not a database" * 100)
    config = rig.write_config([("thermometer", "C0:FF:EE:00:00:5C", 0.2, 100000)])
    rig.start_daemon(config)
    diagnosed(rig, config, "command-ledger-unusable")
    arrived = len(rig.received.readings)
    wait_for(lambda: len(rig.received.readings) > arrived + 2, 30, "readings all the same")
    assert rig.stop_daemon() == 0, rig.log_text()[-2000:]
    assert rig.verifier.summary()["missing"] == 0


@covers("certificate-expires-soon", "certificate-expired",
        "certificate-unreadable", "uplink-tls-files", "uplink-broker-untrusted", "uplink-refused")
def test_certificate_and_broker_refusals(rig: Rig) -> None:
    rig.start_provider()
    env, _ = fake_chronyc(rig.base, CHRONY_SYNCED)
    base = rig.write_config([("thermometer", "C0:FF:EE:00:00:61", 0.5, 100000)]).read_text()
    config = rig.base / "gateway.toml"
    gw = rig.pki.gateway(rig.gateway_id)

    def run_with(text: str) -> None:
        config.write_text(text)
        restart(rig, config, env)

    def tls(cert: Path, key: Path) -> str:
        return base.replace(f'cert_file = "{gw.client_cert}"', f'cert_file = "{cert}"').replace(
            f'key_file = "{gw.client_key}"', f'key_file = "{key}"')

    run_with(tls(*issue_client_cert(rig, "short", days=(-1, 5))))
    wait_for(lambda: snapshot(rig)["uplink"]["state"] == "connected", 30, "a connection")
    diagnosed(rig, config, "certificate-expires-soon")

    run_with(tls(*issue_client_cert(rig, "expired", days=(-30, -1))))
    # Our own certificate is read, so this finding is steady; what the broker's refusal looks
    # like is not (under TLS 1.3 paho often reports a bare EOF instead of the alert).
    diagnosed(rig, config, "certificate-expired")

    garbage = rig.base / "certs" / "garbage.crt"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    run_with(tls(garbage, gw.client_key))
    diagnosed(rig, config, "certificate-unreadable", "uplink-tls-files")

    run_with(base.replace(f'ca_file = "{rig.pki.ca_cert}"',
                          f'ca_file = "{other_ca(rig.base)[0]}"'))
    diagnosed(rig, config, "uplink-broker-untrusted")

    run_with(base.replace("keepalive_s = 5\n", 'keepalive_s = 5\ntopic_prefix = "homecare/v0"\n'))
    diagnosed(rig, config, "uplink-refused")
    assert rig.stop_daemon() == 0, rig.log_text()[-2000:]


@covers("vpn-down", "vpn-unchecked", "wan-unexpected-interface", "outbox-quota-reached",
        "clock-unchecked", "readings-unusable", "device-port-busy", "device-port-settings",
        "device-unplugged", "modem-no-sim", "modem-sim-unusable", "modem-registration-denied",
        "modem-no-signal", "modem-not-registered", "modem-weak-signal", "modem-not-answering")
def test_local_faults_links_quota_serial_ports_and_modem(rig: Rig, tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    dev.mkdir()
    rig.broker.start()
    rig.broker.stop()  # never reached anyway: the route bypasses the (missing) VPN
    env, chrony = fake_chronyc(rig.base, "garbage\n")  # chrony answers nonsense: unchecked
    not_a_tty = dev / "not-a-tty"
    not_a_tty.write_text("")
    sims = [SimProcess("modem", dev / "modem", []).start(),
            SimProcess("astm", dev / "crp", ["--reply-timeout", "15"]).start(),
            SimProcess("nonin", dev / "spo2", []).start()]
    held = serial.Serial(str(dev / "spo2"), exclusive=True)  # another program holds the port
    try:
        config = rig.write_config(
            [], vpn_interface='"wgdiag0"', wan_interfaces='["wwandiag0"]')
        config.write_text(
            config.read_text().replace("[uplink]", "[outbox]\nquota_bytes = 16384\n\n[uplink]")
            + '\n[[sim_devices]]\nkind = "thermometer"\naddress = "C0:FF:EE:00:00:71"\n'
            "interval_s = 0.02\n"
            + "".join(
                f'\n[[serial_devices]]\nkind = "{kind}"\nname = "{name}"\npath = "{path}"\n'
                + ('serial = "501234567"\n' if kind in ("nonin", "cms50") else "")
                for kind, name, path in (
                    ("modem", "wan", dev / "modem"), ("astm", "crp", dev / "crp"),
                    ("nonin", "spo2", dev / "spo2"), ("cms50", "tty", not_a_tty),
                    ("cms50", "gone", dev / "unplugged"),
                )
            ).replace('name = "wan"\n', 'name = "wan"\npoll_interval_s = 0.5\n')
        )
        rig.start_daemon(config, env)
        wait_for(lambda: bool(snapshot(rig)), 30, "the daemon")
        sims[1].command("crp 83.97 furlong/fortnight")  # a unit the mapping refuses
        diagnosed(rig, config, "vpn-down", "vpn-unchecked", "wan-unexpected-interface",
                  "clock-unchecked", "device-port-busy", "device-port-settings",
                  "device-unplugged", "readings-unusable", "outbox-quota-reached",
                  timeout_s=60)
        chrony.write_text(CHRONY_SYNCED)
        modem = sims[0]
        for setting, code in (
            ("sim=absent", "modem-no-sim"),
            ("sim=pin", "modem-sim-unusable"),
            ("sim=ready cereg=3 c5greg=3", "modem-registration-denied"),
            ("cereg=2 c5greg=2 rssi=99", "modem-no-signal"),
            ("rssi=20", "modem-not-registered"),
            ("cereg=1 c5greg=1 rssi=3", "modem-weak-signal"),
        ):
            modem.command(f"set {setting}")
            diagnosed(rig, config, code)
        modem.command("silent on")
        diagnosed(rig, config, "modem-not-answering")
        assert rig.stop_daemon() == 0, rig.log_text()[-2000:]
    finally:
        held.close()
        for sim in sims:
            sim.stop()


TH, BP, SC = "A4:C1:38:30:00:01", "A4:C1:38:30:00:02", "A4:C1:38:30:00:03"


@covers("device-pairing-failed", "device-silent", "device-out-of-range", "bluetooth-unavailable")
def test_ble_wrong_passkey_silent_out_of_range_and_bluetoothd_stopped(rig: Rig) -> None:
    bp = BloodPressureMonitor(BP, pairing=Pairing(PairingMethod.PASSKEY_ENTRY, 246810))
    thermometer, scale = Thermometer(TH), WeightScale(SC)
    with SimulatedBluez([bp, thermometer, scale], set_env=False) as air:
        rig.broker.start()
        rig.broker.stop()
        env, _ = fake_chronyc(rig.base, CHRONY_SYNCED)
        config = rig.write_config([])
        config.write_text(config.read_text()
                          + ble_block(BP, "blood-pressure", "passkey = 135791\n")
                          + ble_block(TH, "thermometer", "expected_interval_s = 1\n")
                          + ble_block(SC, "weight-scale"))
        rig.start_daemon(config, air.env(env))
        wait_for(lambda: all(d["state"] == "connected" for d in snapshot(rig).get("devices", [])
                             if d["device"] == f"btmac:{SC}"), 30, "the scale connected")
        air.run(lambda: air.out_of_range(scale))
        diagnosed(rig, config, "device-pairing-failed", "device-silent", "device-out-of-range",
                  timeout_s=60)
        status = snapshot(rig)
        findings = {(f.code, f.subject) for f in diagnosis.diagnose(status)}
        assert ("device-silent", f"btmac:{TH}") in findings
        assert ("device-pairing-failed", f"btmac:{BP}") in findings

        address = air.address
        air.run(lambda: air.service.stop(crash=True))
        diagnosed(rig, config, "bluetooth-unavailable", timeout_s=60)
        air.run(lambda: air.service.start(address))
        assert rig.stop_daemon() == 0, rig.log_text()[-2000:]


def test_every_catalogue_code_is_induced_here_or_excluded_with_a_reason() -> None:
    assert not set(COVERED) & set(EXCLUDED), "both covered and excluded"
    assert set(COVERED) | set(EXCLUDED) == set(CATALOGUE), (
        f"not covered: {sorted(set(CATALOGUE) - set(COVERED) - set(EXCLUDED))}; "
        f"unknown: {sorted((set(COVERED) | set(EXCLUDED)) - set(CATALOGUE))}"
    )
    assert all(len(reason) > 20 for reason in EXCLUDED.values())
    assert json.dumps(COVERED)  # the map names tests of this module
    assert all(name in globals() for name in COVERED.values())
