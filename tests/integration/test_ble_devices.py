"""BLE devices end to end: simulated BlueZ -> real bleak in gatewayd -> mosquitto (mutual TLS) ->
provider verifier. One device per profile, a neighbour's device, a passkey bond through the
daemon's own agent, and a link lost in the middle of a RACP transfer."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.fhir.observation import observation_identifier
from gateway.model import Measurement
from rig.ble.peripheral import Pairing, PairingMethod
from rig.ble.profiles import BloodPressureMonitor, PulseOximeter, Thermometer, WeightScale
from rig.ble.rig import SimulatedBluez
from rig.ble.stored import GlucoseMeter
from tests.integration.rig import Rig, rig_fixture, wait_for
from tests.integration.test_end_to_end import assert_no_clinical_values_logged

pytestmark = pytest.mark.integration

TH, BP, OX, SC, GLU = (f"A4:C1:38:10:00:0{i}" for i in range(1, 6))
NEIGHBOUR = "A4:C1:38:20:00:99"
PASSKEY = 246810
GLUCOSE_STORED = 8
GLUCOSE_DROP_AFTER = 3  # the meter's link drops after this many records of the first transfer


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    yield from rig_fixture(tmp_path)


def ble_block(address: str, profile: str, extra: str = "") -> str:
    return f'\n[[ble_devices]]\naddress = "{address}"\nprofile = "{profile}"\n{extra}'


def readings_of(rig: Rig, address: str) -> list[Measurement]:
    return [m for _, m in rig.received.readings if m.device.value == address]


def summary(m: Measurement) -> tuple[int, Decimal | None, str, tuple[tuple[int, Decimal | None,
                                                                            str], ...]]:
    return (m.mdc_code, m.value, m.unit,
            tuple((c.mdc_code, c.value, c.unit) for c in m.components))


def test_every_profile_arrives_verified_once_the_neighbour_is_ignored_and_racp_resumes(
        rig: Rig) -> None:
    thermometer = Thermometer(TH)
    bp = BloodPressureMonitor(BP, pairing=Pairing(PairingMethod.PASSKEY_ENTRY, PASSKEY))
    oximeter = PulseOximeter(OX)
    scale = WeightScale(SC)
    meter = GlucoseMeter(GLU)
    next_door = Thermometer(NEIGHBOUR, name="TH-neighbour", rssi=-85)
    meter.fill(GLUCOSE_STORED)  # the backlog behind RACP: 90..97 mg/dL
    meter.script.disconnect_after_records = GLUCOSE_DROP_AFTER
    # Readings taken before the gateway is up wait on the devices (indications are stored).
    thermometer.measure("37.2")
    bp.measure(132, 84, 71)
    oximeter.measure(96, 70)
    scale.measure("81.35")
    next_door.measure("39.1")

    with SimulatedBluez([thermometer, bp, oximeter, scale, meter, next_door],
                        set_env=False) as air:
        rig.start_provider()
        config = rig.write_config([])
        config.write_text(config.read_text()
                          + ble_block(TH, "thermometer", "expected_interval_s = 3600\n")
                          + ble_block(BP, "blood-pressure", f"passkey = {PASSKEY}\n")
                          + ble_block(OX, "pulse-oximeter")
                          + ble_block(SC, "weight-scale")
                          + ble_block(GLU, "glucose"))
        rig.start_daemon(config, air.env())

        wait_for(lambda: len(readings_of(rig, GLU)) >= GLUCOSE_STORED, 60,
                 "the glucose backlog, across the link lost mid-transfer")
        wait_for(lambda: all(readings_of(rig, a) for a in (TH, BP, OX, SC)), 30,
                 "a reading of every profile")
        # Live readings while connected, then a new glucose record (asked for on reconnect or
        # sent live: either way exactly once).
        for value in ("36.9", "38.4", "36.6"):
            air.call(lambda v=value: thermometer.measure(v))  # type: ignore[misc]
        air.call(lambda: scale.measure("80.9"))
        wait_for(lambda: len(readings_of(rig, TH)) >= 4 and len(readings_of(rig, SC)) >= 2, 30,
                 "the live readings")
        status = rig.status(config)
        assert rig.daemon is not None
        assert rig.daemon.poll() is None, rig.log_text()[-3000:]
        assert rig.stop_daemon() == 0, rig.log_text()[-3000:]
        neighbour_sent = air.call(lambda: list(next_door.sent))
        neighbour_kept = air.call(lambda: len(next_door.stored.get(0x2A1C, ())))
        glucose_sent = air.call(lambda: len(meter.sent))

    # Values, units, codes: exactly what the devices measured, once each.
    temps = [summary(m) for m in readings_of(rig, TH)]
    assert [(t[1], t[2]) for t in temps] == [
        (Decimal(v), "Cel") for v in ("37.2", "36.9", "38.4", "36.6")]
    [bp_reading] = [m for m in readings_of(rig, BP) if m.components]
    assert {(c.value, c.unit) for c in bp_reading.components} == {
        (Decimal(132), "mm[Hg]"), (Decimal(84), "mm[Hg]"), (Decimal(100), "mm[Hg]")}
    assert Decimal(71) in {m.value for m in readings_of(rig, BP)}  # the pulse rate
    assert sorted((m.value, m.unit) for m in readings_of(rig, OX)) == [
        (Decimal(70), "/min"), (Decimal(96), "%")]
    assert [(m.value, m.unit) for m in readings_of(rig, SC)] == [
        (Decimal("81.350"), "kg"), (Decimal("80.900"), "kg")]
    glucose = readings_of(rig, GLU)
    assert [m.device_record_id for m in glucose] == list(range(1, GLUCOSE_STORED + 1))
    assert [m.value for m in glucose] == [Decimal(v) for v in range(90, 90 + GLUCOSE_STORED)]
    assert {m.unit for m in glucose} == {"mg/dL"}
    assert glucose_sent > GLUCOSE_STORED, "the transfer was not interrupted and resent"
    # Exactly once at the provider: no conditional-create identifier twice.
    keys = Counter(observation_identifier(m, "ep-it") for _, m in rig.received.readings)
    assert [k for k, n in keys.items() if n > 1] == []
    # The neighbour: never connected, never read, its reading still on the device.
    assert neighbour_sent == []
    assert neighbour_kept == 1
    assert readings_of(rig, NEIGHBOUR) == []
    # The provider can prove completeness; the health report names every BLE device.
    result = rig.verifier.summary()
    assert result["missing"] == 0, result
    assert result["signature_failures"] == 0
    assert result["failures"] == {}
    devices = {d["device"]: d for d in status["devices"]}
    for address in (TH, BP, OX, SC, GLU):
        assert devices[f"btmac:{address}"]["state"] == "connected", devices
    assert devices[f"btmac:{TH}"]["battery_pct"] == 90
    assert f"btmac:{NEIGHBOUR}" not in devices
    # Counted only when a discovery of ours saw it before finding our own device (best
    # effort: deterministic in tests/ble_session); our own devices are never counted.
    assert status["links"]["bluetooth"]["ignored_advertisers"] in {0, 1}
    assert all(isinstance(devices[f"btmac:{a}"]["rssi_dbm"], int) for a in (TH, BP, OX, SC, GLU))
    # Each BLE driver's loop is watched by name (two of one profile get distinct names).
    ble_loops = {n: v for n, v in status["loops"].items() if n.startswith("driver.ble.")}
    assert len(ble_loops) == 5, status["loops"]
    assert not any(v["stalled"] for v in ble_loops.values()), ble_loops
    # The monitor's measurement characteristic needs a bond: the daemon's agent typed the key.
    assert '"ble.agent_asked"' in rig.log_text()
    assert "ble.pairing_failed" not in rig.log_text()
    assert_no_clinical_values_logged(rig)


def test_a_wrong_passkey_is_reported_and_the_daemon_keeps_reading_the_other_devices(
        rig: Rig) -> None:
    bp = BloodPressureMonitor(BP, pairing=Pairing(PairingMethod.PASSKEY_ENTRY, PASSKEY))
    thermometer = Thermometer(TH)
    bp.measure(132, 84, 71)
    with SimulatedBluez([bp, thermometer], set_env=False) as air:
        rig.start_provider()
        config = rig.write_config([])
        config.write_text(config.read_text() + ble_block(BP, "blood-pressure", "passkey = 135791\n")
                          + ble_block(TH, "thermometer"))
        rig.start_daemon(config, air.env())
        wait_for(lambda: '"ble.pairing_failed"' in rig.log_text(), 30, "the failed pairing")
        air.call(lambda: thermometer.measure("37.7"))
        wait_for(lambda: bool(readings_of(rig, TH)), 30, "the thermometer's reading")
        status = rig.status(config)
        assert rig.daemon is not None
        assert rig.daemon.poll() is None, rig.log_text()[-3000:]
        assert rig.stop_daemon() == 0, rig.log_text()[-3000:]
        kept = air.call(lambda: len(bp.stored.get(0x2A35, ())))
    devices = {d["device"]: d for d in status["devices"]}
    assert devices[f"btmac:{BP}"]["state"] == "pairing-failed"
    assert readings_of(rig, BP) == []
    assert kept == 1, "the reading stays on the monitor until a bond delivers it"
    [line] = [ln for ln in rig.log_text().splitlines() if '"ble.pairing_failed"' in ln][:1]
    assert "wrong passkey" in line
    assert "binding" in line  # the hint: what the technician should check
    assert "135791" not in rig.log_text()
