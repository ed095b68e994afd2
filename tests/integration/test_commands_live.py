"""Every gatewayctl command against one running gatewayd on the simulated rig (issue 7).

The rig: mosquitto with mutual TLS and the provider's verifier, one in-process simulated device,
and a simulated BlueZ with one bound BLE thermometer (bonded with a passkey) and a neighbour's.
Each command runs as the technician runs it (a process, human output and ``--json``) and the
tests assert what it says, not only its exit code.

Planted markers: the bound thermometer's first reading has a value no other number here has,
and the passkey, the signing key's raw bytes and every line of every key file are key material.
None of them may appear in anything gatewayctl prints by default nor in the support bundle.
(``decode`` is the exception by design: it exists to show a captured payload's values.)

The commands that need a provisioned router (enrol, install-check, return, lifecycle) run
against a daemon in tests/provisioning; tests/test_cli_live_coverage.py maps every command to
the tests that run it.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from gateway import __version__
from gateway.seal.keys import load_signing_key
from rig.ble.peripheral import Pairing, PairingMethod
from rig.ble.profiles import Thermometer, neighbour
from rig.ble.rig import SimulatedBluez
from tests.integration.rig import Rig, wait_for

pytestmark = pytest.mark.integration

BLE_TH = "A4:C1:38:30:00:01"  # bound to the episode
NEXT_DOOR = "A4:C1:38:40:00:99"  # the neighbour's thermometer, in range, never bound
SIM_TH = ("thermometer", "C0:FF:EE:00:00:41", 0.5, 10_000)
PASSKEY = 731946
MARKER_TEMP = "38.437"  # three decimals: no count, age or rounded time here looks like it
# Advertised manufacturer data (some thermometers broadcast their last reading in it): scan
# must drop it, so it must not show up in any form.
ADV_DATA = b"\x38\x43\x7a\x5b"


@dataclass
class Live:
    rig: Rig
    air: SimulatedBluez
    config: Path
    work: Path

    def ctl(self, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
        """gatewayctl as a technician runs it, pointed at this rig's config and Bluetooth."""
        return subprocess.run(
            [sys.executable, "-m", "gateway.cli.main", *args, "--config", str(self.config)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            env=self.air.env(),
        )

    def json(self, *args: str) -> object:
        proc = self.ctl(*args, "--json")
        assert proc.stdout.strip(), proc.stderr
        return json.loads(proc.stdout)


def key_material(rig: Rig) -> list[str]:
    """Strings that would mean a key leaked: PEM body lines, the raw signing key in hex and
    base64, the passkey."""
    found = [f"{PASSKEY}"]
    for key_file in rig.pki.directory.rglob("*.key"):
        found += [
            line
            for line in key_file.read_text().splitlines()
            if line and not line.startswith("-----")
        ]
    raw = load_signing_key(rig.pki.gateway(rig.gateway_id).identity_key).private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    return [*found, raw.hex(), raw.hex().upper(), base64.b64encode(raw).decode()]


# An ISO time's fraction ("…:38.437512Z") may contain any digits; masked before searching.
_ISO_TIME = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:?\d\d)?")


def leaks(text: str, rig: Rig) -> list[str]:
    """Every planted marker found in ``text`` (numbers only as whole numbers, not digits of
    longer ones)."""
    masked = _ISO_TIME.sub("<time>", text)
    found = [k for k in key_material(rig) if len(k) > len(str(PASSKEY)) and k in masked]
    found += [
        marker
        for marker in (MARKER_TEMP, str(PASSKEY), ADV_DATA.hex(), "8Cz[")
        if re.search(rf"(?<![\d.]){re.escape(marker)}(?![\d])", masked)
    ]
    return found


def ble_block(address: str, profile: str, extra: str = "") -> str:
    return f'\n[[ble_devices]]\naddress = "{address}"\nprofile = "{profile}"\n{extra}'


def ble_readings(rig: Rig) -> list[Decimal | None]:
    return [m.value for _, m in rig.received.readings if m.device.value == BLE_TH]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    base = tmp_path_factory.mktemp("live")
    bound = Thermometer(
        BLE_TH,
        name="TH-patient",
        rssi=-55,
        manufacturer_data={0x0157: ADV_DATA},
        pairing=Pairing(PairingMethod.PASSKEY_ENTRY, PASSKEY),
    )
    next_door = neighbour(bound, NEXT_DOOR)
    bound.measure(MARKER_TEMP)  # taken before the gateway is up: delivered once it connects
    rig = Rig(base)
    try:
        with SimulatedBluez([bound, next_door], set_env=False) as air:
            rig.start_provider()
            config = rig.write_config([SIM_TH])
            config.write_text(
                config.read_text() + ble_block(BLE_TH, "thermometer", f"passkey = {PASSKEY}\n")
            )
            rig.start_daemon(config, air.env())
            wait_for(lambda: Decimal(MARKER_TEMP) in ble_readings(rig), 60, "the marker reading")
            wait_for(lambda: len(rig.received.readings) >= 4, 30, "simulated readings")
            work = base / "work"
            work.mkdir()
            yield Live(rig, air, config, work)
            assert rig.daemon is not None
            assert rig.daemon.poll() is None, rig.log_text()[-3000:]
    finally:
        rig.close()


def test_the_marker_search_finds_every_planted_marker(live: Live) -> None:
    """The leak checks below are only as good as this: each marker, in each form, is found."""
    planted = [
        f'"value": {MARKER_TEMP}',
        f"passkey={PASSKEY}",
        *key_material(live.rig),
        f"manufacturer_data={ADV_DATA.hex()}",
        ADV_DATA.decode("latin-1"),
    ]
    assert all(leaks(text, live.rig) for text in planted), [
        t for t in planted if not leaks(t, live.rig)
    ]
    # ... and nothing here is mistaken for one: times, longer numbers, fractions of numbers.
    assert leaks("2026-11-23T10:00:38.437123Z 138.437 38.4371 0.731946", live.rig) == []


def test_version_prints_the_installed_version(live: Live) -> None:
    human = live.ctl("version")
    assert human.returncode == 0
    assert "gatewayctl" in human.stdout
    assert __version__ in human.stdout
    assert live.json("version") == {"gatewayctl": __version__}


def test_config_check_names_what_the_file_sets_up(live: Live) -> None:
    human = live.ctl("config-check")
    assert human.returncode == 0, human.stderr
    assert live.rig.gateway_id in human.stdout
    assert f"127.0.0.1:{live.rig.broker.port}" in human.stdout
    found = live.json("config-check")
    assert isinstance(found, dict)
    assert found["valid"] is True
    assert found["gateway_id"] == live.rig.gateway_id
    assert found["simulated_devices"] == 1
    assert leaks(human.stdout + json.dumps(found), live.rig) == []


def test_status_shows_the_uplink_and_both_devices_connected(live: Live) -> None:
    human = live.ctl("status")
    assert human.returncode == 0, human.stdout + human.stderr
    for words in ("connected", live.rig.gateway_id, f"btmac:{BLE_TH}", f"btmac:{SIM_TH[1]}"):
        assert words in human.stdout
    assert f"btmac:{NEXT_DOOR}" not in human.stdout
    found = live.json("status")
    assert isinstance(found, dict)
    assert found["uplink"]["state"] == "connected"
    assert found["uplink"]["delivered_records"] >= 1
    devices = {d["device"]: d for d in found["devices"]}
    assert set(devices) == {f"btmac:{BLE_TH}", f"btmac:{SIM_TH[1]}"}
    assert devices[f"btmac:{BLE_TH}"]["state"] == "connected"
    assert leaks(human.stdout + json.dumps(found), live.rig) == []


def test_devices_lists_the_bound_devices_and_none_silent(live: Live) -> None:
    human = live.ctl("devices")
    assert human.returncode == 0, human.stdout + human.stderr
    assert f"btmac:{BLE_TH}" in human.stdout
    assert f"btmac:{SIM_TH[1]}" in human.stdout
    assert "connected" in human.stdout
    assert "SILENT" not in human.stdout
    found = live.json("devices")
    assert isinstance(found, list)
    ble = next(d for d in found if d["device"] == f"btmac:{BLE_TH}")
    assert (ble["state"], ble["silent"]) == ("connected", False)
    assert isinstance(ble["rssi_dbm"], int)
    assert leaks(human.stdout + json.dumps(found), live.rig) == []


def test_outbox_counts_sealed_records_of_the_running_daemon(live: Live) -> None:
    human = live.ctl("outbox")
    assert human.returncode == 0, human.stderr
    assert str(live.rig.state_dir / "outbox.db") in human.stdout
    assert "undelivered" in human.stdout
    # Every record the provider holds was sealed before the command reads the outbox's head
    # (taken first: the daemon goes on sealing and delivering meanwhile).
    top = max(seq for seq, _ in live.rig.received.readings)
    found = live.json("outbox")
    assert isinstance(found, dict)
    assert found["outbox"] == str(live.rig.state_dir / "outbox.db")
    assert found["last_sequence_number"] >= top
    assert found["undelivered_records"] >= 0
    assert leaks(human.stdout + json.dumps(found), live.rig) == []


def test_selftest_passes_the_keys_outbox_and_daemon(live: Live) -> None:
    human = live.ctl("selftest")
    for name in ("signing key", "provider key", "outbox", "daemon"):
        assert any(
            line.startswith("PASS") and name in line for line in human.stdout.splitlines()
        ), (name, human.stdout)
    found = live.json("selftest")
    assert isinstance(found, list)
    results = {c["name"]: c["ok"] for c in found}
    essential = ("signing key", "provider key", "outbox", "daemon")
    assert {k: results[k] for k in essential} == dict.fromkeys(essential, True)
    # Without chrony here the clock check may fail; the exit code must then say so.
    assert human.returncode == (0 if all(results.values()) else 1)
    assert leaks(human.stdout + json.dumps(found), live.rig) == []


def test_uplink_test_reaches_the_broker_beside_the_daemon(live: Live) -> None:
    human = live.ctl("uplink-test")
    assert human.returncode == 0, human.stdout + human.stderr
    assert any(line.startswith("PASS") and "broker" in line for line in human.stdout.splitlines())
    found = live.json("uplink-test")
    assert isinstance(found, list)
    checks = {c["name"]: c for c in found}
    assert checks["broker"]["ok"] is True
    assert "CONNACK" in checks["broker"]["detail"]
    # Its own client id: the daemon's session is still up and delivering.
    before = len(live.rig.received.readings)
    wait_for(lambda: len(live.rig.received.readings) > before, 30, "readings after the test")


def test_decode_shows_a_captured_payloads_value(live: Live) -> None:
    # The example of its help: a temperature of 36.6 degC (FLOAT mantissa 366, exponent -1).
    args = ("decode", "--uuid", "2a1c", "--hex", "00 6e 01 00 ff")
    human = live.ctl(*args)
    assert human.returncode == 0, human.stderr
    found = live.json(*args)
    assert json.loads(human.stdout) == found  # its output is JSON either way
    assert "36.6" in human.stdout


def test_logs_shows_the_daemons_own_recent_events_redacted(live: Live) -> None:
    human = live.ctl("logs", "--lines", "2000")
    assert human.returncode == 0, human.stderr
    for event in ("outbox.opened", "control.listening", "uplink.connected", "ble.connected"):
        assert event in human.stdout, event
    found = live.json("logs", "--lines", "2000")
    assert isinstance(found, list)
    names = {e.get("event") for e in found}
    assert {"outbox.opened", "control.listening", "uplink.connected", "ble.connected"} <= names
    assert all(e.get("level") in {"debug", "info", "warning", "error", "critical"} for e in found)
    assert leaks(human.stdout + json.dumps(found), live.rig) == []
    # --lines and --since narrow it down the way journalctl does.
    assert len(live.json("logs", "--lines", "5")) == 5  # type: ignore[arg-type]
    recent = live.json("logs", "--since", "10 min ago", "--lines", "2000")
    assert isinstance(recent, list)
    assert {"outbox.opened", "control.listening"} <= {e.get("event") for e in recent}
    future = live.ctl("logs", "--since", "2999-01-01")
    assert future.returncode == 0, future.stderr
    assert "no log lines" in future.stdout


def test_scan_marks_the_bound_device_bound_and_the_other_a_neighbour_without_their_data(
    live: Live,
) -> None:
    args = ("scan", "--seconds", "1.5", "--serial-dir", str(live.work / "no-serial"))
    proc = live.ctl(*args, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = json.loads(proc.stdout)
    by_address = {a["address"]: a for a in found["ble"]}
    assert (by_address[NEXT_DOOR]["bound"], by_address[NEXT_DOOR]["connected"]) == (False, False)
    assert by_address[NEXT_DOOR]["services"] == ["thermometer"]
    assert by_address[NEXT_DOOR]["name"] == "TH-patient (neighbour)"
    # The daemon holds the bound thermometer's connection, so it does not advertise: scan
    # takes it from the daemon instead of calling it missing (exit 0, not 1).
    assert (by_address[BLE_TH]["bound"], by_address[BLE_TH]["connected"]) == (True, True)
    # Only what an advertisement may say, and the simulated device (not on the air) not at all.
    assert set(by_address) == {BLE_TH, NEXT_DOOR}
    assert all(
        set(a) == {"address", "name", "rssi_dbm", "services", "bound", "connected"}
        for a in found["ble"]
    )
    assert found["serial"] == []
    human = live.ctl(*args)
    assert human.returncode == 0, human.stdout + human.stderr
    lines = human.stdout.splitlines()
    assert "bound, connected" in next(line for line in lines if BLE_TH in line)
    assert "neighbour" in next(line for line in lines if NEXT_DOOR in line)
    assert leaks(human.stdout + json.dumps(found), live.rig) == []


def test_support_bundle_holds_the_daemons_story_but_no_key_and_no_clinical_value(
    live: Live,
) -> None:
    """The planted markers went through the running daemon (the provider received the marker
    reading; the daemon bonded with the passkey and signs with the key) and are searched for
    in every byte of the archive, member by member and as one decompressed stream."""
    assert Decimal(MARKER_TEMP) in ble_readings(live.rig)
    out = live.work / "bundles"
    out.mkdir()
    proc = live.ctl("support-bundle", "--output", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    archive = Path(json.loads(proc.stdout)["bundle"])
    assert archive.parent == out
    assert live.rig.gateway_id in archive.name
    with tarfile.open(archive) as tar:
        members = {
            m.name: tar.extractfile(m).read().decode()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }
    assert set(members) == {
        f"support/{name}.json" for name in ("versions", "config", "selftest", "journal", "status")
    }
    status = json.loads(members["support/status.json"])
    assert status["uplink"]["state"] == "connected"
    assert f"btmac:{BLE_TH}" in {d["device"] for d in status["devices"]}
    # The daemon's own events are in it (from its memory here: this machine keeps no journal).
    events = {e.get("event") for e in json.loads(members["support/journal.json"])}
    assert {"outbox.opened", "control.listening", "uplink.connected", "ble.connected"} <= events
    assert "PRIVATE KEY" not in "".join(members.values())
    assert leaks("\n".join(members.values()), live.rig) == []
    whole = gzip.decompress(archive.read_bytes()).decode("latin-1")
    assert leaks(whole, live.rig) == []
    human = live.ctl("support-bundle", "--output", str(out))
    assert human.returncode == 0, human.stderr
    assert "support bundle written to" in human.stdout
    assert str(out) in human.stdout
    assert len(list(out.iterdir())) == 2  # never overwritten: a second one in the same second
    # gets a suffix (gateway/cli/support_bundle.py)
