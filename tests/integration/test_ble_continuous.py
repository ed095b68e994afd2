"""Continuous BLE profiles, device clocks, a replayed backlog and a bluetoothd restart, end to end:
simulated BlueZ -> real bleak in gatewayd -> mosquitto (mutual TLS) -> provider verifier.

Streams are sealed in chunks of ``[outbox] stream_chunk_s`` (1 s here, so they arrive fast)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from drivers.ble.heart_rate import rr_seconds
from gateway.fhir.codes import MDC_CONC_GLU_ISF
from gateway.fhir.observation import observation_identifier
from gateway.model import Measurement, TimeQuality
from gateway.pipeline.ingest import Lane
from rig.ble.clock import DeviceClock
from rig.ble.profiles import HeartRateSensor, PulseOximeter, Thermometer, WeightScale
from rig.ble.rig import SimulatedBluez
from rig.ble.stored import CgmSensor
from tests.integration.rig import Rig, rig_fixture, wait_for
from tests.integration.test_ble_devices import ble_block, readings_of
from tests.integration.test_end_to_end import assert_no_clinical_values_logged

pytestmark = pytest.mark.integration

HR, PLX, CGM, TH, SC = (f"A4:C1:38:30:00:0{i}" for i in range(1, 6))


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    yield from rig_fixture(tmp_path)


def lane(rig: Rig, address: str) -> set[int]:
    return {rig.received.lanes[seq] for seq, m in rig.received.readings
            if m.device.value == address}


def values(ms: list[Measurement]) -> list[tuple[Decimal | None, str, str]]:
    return [(m.value, m.unit, m.supplemental) for m in ms]


def test_continuous_profiles_clocks_and_backlog_survive_a_bluetoothd_restart(rig: Rig) -> None:
    hr = HeartRateSensor(HR, period_s=0.5)
    plx = PulseOximeter(PLX, continuous_period_s=0.5)
    cgm = CgmSensor(CGM, clock=DeviceClock(zone=timedelta(hours=1)))
    slow = DeviceClock(offset=timedelta(minutes=-5))  # a drifted clock the gateway may set
    thermometer = Thermometer(TH, clock=slow)
    scale = WeightScale(SC, replay_backlog=True, clock_settable=False)
    cgm.measure(101)  # offsets 0 and 5, stored before the gateway is up
    cgm.measure(104)
    backlog = thermometer.measure("36.6")  # stamped by the slow clock
    scale.measure("80.5")
    scale.measure("80.4")

    with SimulatedBluez([hr, plx, cgm, thermometer, scale], set_env=False) as air:
        rig.start_provider()
        config = rig.write_config([])
        config.write_text(config.read_text() + "\n[outbox]\nstream_chunk_s = 1\n"
                          + ble_block(HR, "heart-rate")
                          + ble_block(PLX, "pulse-oximeter-continuous")
                          + ble_block(CGM, "cgm") + ble_block(TH, "thermometer")
                          + ble_block(SC, "weight-scale"))
        rig.start_daemon(config, air.env())
        wait_for(lambda: len(readings_of(rig, HR)) >= 4 and len(readings_of(rig, PLX)) >= 4
                 and len(readings_of(rig, CGM)) >= 2 and bool(readings_of(rig, TH))
                 and len(readings_of(rig, SC)) >= 2, 40, "a reading of every device")
        hr_before = len(readings_of(rig, HR))

        air.run(lambda: air.restart_bluetoothd(down_s=1.0))
        wait_for(lambda: rig.log_text().count('"ble.connected"') >= 10, 30,
                 "every device reconnected after bluetoothd came back")
        air.call(lambda: cgm.measure(120))
        new = air.call(lambda: thermometer.measure("37.1", intermediate=("36.8",)))
        wait_for(lambda: len(readings_of(rig, CGM)) >= 3 and len(readings_of(rig, TH)) >= 3
                 and len(readings_of(rig, HR)) >= hr_before + 4, 30,
                 "readings after the restart")
        status = rig.status(config)
        assert rig.daemon is not None
        assert rig.daemon.poll() is None, rig.log_text()[-3000:]
        assert rig.stop_daemon() == 0, rig.log_text()[-3000:]
        start = air.call(lambda: cgm.session_start)
        scale_sent = air.call(lambda: len(scale.sent))

    # Heart rate with its RR interval, continuous SpO2 / pulse: streams, values as sent.
    heart = readings_of(rig, HR)
    assert set(values(heart)) == {(Decimal(72), "/min", ""), (rr_seconds(853), "s", "rr[0]")}
    assert set(values(readings_of(rig, PLX))) == {(Decimal(97), "%", ""),
                                                  (Decimal(72), "/min", "")}
    assert lane(rig, HR) == lane(rig, PLX) == lane(rig, CGM) == {Lane.STREAM}
    # CGM: every record once, timed from the session start (the sensor's zone kept).
    glucose = readings_of(rig, CGM)
    assert [(m.mdc_code, m.value, m.unit, m.device_record_id) for m in glucose] == [
        (MDC_CONC_GLU_ISF, Decimal(v), "mg/dL", k) for v, k in ((101, 0), (104, 5), (120, 10))]
    assert start is not None
    zone = timezone(timedelta(hours=1))
    assert [m.device_time for m in glucose] == [
        (start + timedelta(minutes=k)).replace(tzinfo=zone) for k in (0, 5, 10)]
    assert {m.time_quality for m in glucose} == {TimeQuality.SYNCED}
    # Thermometer: the backlog keeps the slow clock's digits, flagged; the clock was then set,
    # the new reading is synced; the intermediate value streams.
    # (lanes upload in priority order: the final reading may overtake the streamed one)
    [settling] = [m for m in readings_of(rig, TH) if m.supplemental]
    first, final = [m for m in readings_of(rig, TH) if not m.supplemental]
    assert backlog.timestamp is not None
    assert new.timestamp is not None
    assert (first.value, first.device_time, first.time_quality) == (
        Decimal("36.6"), backlog.timestamp.replace(tzinfo=UTC), TimeQuality.UNSYNCED)
    assert (settling.value, settling.supplemental) == (Decimal("36.8"), "intermediate")
    assert (final.value, final.time_quality) == (Decimal("37.1"), TimeQuality.SYNCED)
    assert final.device_time is not None
    assert abs(final.device_time - first.received_at) < timedelta(minutes=2)
    seqs = {m.value: seq for seq, m in rig.received.readings if m.device.value == TH}
    assert rig.received.lanes[seqs[Decimal("36.8")]] == Lane.STREAM
    assert rig.received.lanes[seqs[Decimal("37.1")]] == Lane.SPOT
    # The scale replayed its memory on every connection; each reading arrived once.
    assert [m.value for m in readings_of(rig, SC)] == [Decimal("80.500"), Decimal("80.400")]
    assert scale_sent >= 4, "the scale did not replay its memory after the restart"
    keys = Counter(observation_identifier(m, "ep-it") for _, m in rig.received.readings)
    assert [k for k, n in keys.items() if n > 1] == []
    result = rig.verifier.summary()
    assert result["missing"] == 0, result
    assert result["failures"] == {}
    devices = {d["device"]: d for d in status["devices"]}
    for address in (HR, PLX, CGM, TH, SC):
        assert devices[f"btmac:{address}"]["state"] == "connected", devices
        assert isinstance(devices[f"btmac:{address}"]["rssi_dbm"], int), devices
    assert '"ble.clock"' in rig.log_text()
    assert_no_clinical_values_logged(rig)
