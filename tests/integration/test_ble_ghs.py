"""A Generic Health Sensor end to end: the simulated spirometer -> real bleak in gatewayd ->
mosquitto (mutual TLS) -> provider verifier. Stored manoeuvres by RACP (uint32 record numbers),
a live one after the control point started live observations, the curve as SampledData, and
an observation the gateway cannot map accounted for by a gap record. Bounded: < 30 s."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from drivers.ble.elapsed_time import FLAG_CURRENT_TIMELINE, FLAG_UTC, ElapsedTime
from drivers.ble.ghs_values import (
    FLAG_TIME_STAMP,
    FLAG_TYPE,
    Bundle,
    NumericValue,
    Observation,
    ObservationHeader,
)
from gateway.fhir import codes
from gateway.model import Measurement, TimeQuality
from rig.ble.clock import DeviceClock
from rig.ble.ghs import Spirometer
from rig.ble.rig import SimulatedBluez
from tests.integration.rig import Rig, rig_fixture, wait_for
from tests.integration.test_ble_devices import ble_block, readings_of
from tests.integration.test_end_to_end import assert_no_clinical_values_logged

pytestmark = pytest.mark.integration

SPIRO = "A4:C1:38:10:00:09"
FIRST_RECORD = 0xFFFF  # the stored records cross the 16-bit boundary
TEST_BUDGET_S = 30


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    yield from rig_fixture(tmp_path)


def kinds(ms: list[Measurement]) -> list[int]:
    return [m.mdc_code for m in ms]


def test_a_spirometer_arrives_verified_with_its_curve_and_an_unusable_part_gapped(
        rig: Rig) -> None:
    started = time.monotonic()
    device = Spirometer(SPIRO, first_record=FIRST_RECORD,
                        clock=DeviceClock(zone=timedelta(hours=1)))
    device.fill(2)  # two manoeuvres waiting behind RACP
    stamp = ElapsedTime(FLAG_UTC | FLAG_CURRENT_TIMELINE, 850_000_000)
    device.observe(Bundle(ObservationHeader(FLAG_TIME_STAMP, time_stamp=stamp), (
        Observation(ObservationHeader(FLAG_TYPE, codes.MDC_VOL_AWAY_EXP_FORCED_1S),
                    NumericValue(1600, Decimal("2.75"))),
        Observation(ObservationHeader(FLAG_TYPE, codes.MDC_VOL_AWAY_EXP_FORCED_CAPACITY),
                    NumericValue(9, Decimal("3.5"))),  # a unit code we cannot map
    )))
    with SimulatedBluez([device], set_env=False) as air:
        rig.start_provider()
        config = rig.write_config([])
        config.write_text(config.read_text() + ble_block(SPIRO, "generic-health-sensor"))
        rig.start_daemon(config, air.env())
        wait_for(lambda: len(readings_of(rig, SPIRO)) >= 9, 20, "the stored manoeuvres")
        wait_for(lambda: air.call(lambda: device.live_enabled), 10, "live observations started")
        air.call(lambda: device.measure("3.40", "4.30", 490))
        wait_for(lambda: len(readings_of(rig, SPIRO)) >= 13, 10, "the live manoeuvre")
        wait_for(lambda: bool(rig.received.gaps), 10, "the unusable observation's gap record")
        assert rig.daemon is not None
        assert rig.daemon.poll() is None, rig.log_text()[-3000:]
        assert rig.stop_daemon() == 0, rig.log_text()[-3000:]
    assert time.monotonic() - started < TEST_BUDGET_S

    got = readings_of(rig, SPIRO)
    spiro = [codes.MDC_VOL_AWAY_EXP_FORCED_1S, codes.MDC_VOL_AWAY_EXP_FORCED_CAPACITY,
             codes.MDC_FLOW_AWAY_EXP_FORCED_PEAK, codes.MDC_VOL_AWAY]
    assert kinds(got) == spiro * 2 + [codes.MDC_VOL_AWAY_EXP_FORCED_1S] + spiro
    assert [m.device_record_id for m in got[:9]] == (
        [FIRST_RECORD] * 4 + [FIRST_RECORD + 1] * 4 + [FIRST_RECORD + 2])
    live = got[9:]
    assert [(m.value, m.unit) for m in live[:3]] == [
        (Decimal("3.40"), "L"), (Decimal("4.30"), "L"), (Decimal(490), "L/min")]
    curve = live[3]
    assert (curve.value, curve.unit, len(curve.samples)) == (None, "L", 30)
    assert curve.samples[-1] == Decimal("4.30")
    assert curve.sample_period_ms == Decimal(100)
    assert {m.time_quality for m in got[:8] + live} == {TimeQuality.SYNCED}
    assert got[8].value == Decimal("2.75")
    (gap,) = rig.received.gaps
    refused = gap["refused"]
    assert isinstance(refused, list)
    (entry,) = refused
    assert entry["reason"] == "unusable-result"
    assert entry["device"] == f"btmac:{SPIRO}"
    assert "unit code 9" in entry["error"]
    result = rig.verifier.summary()
    assert result["missing"] == 0, result
    assert result["signature_failures"] == 0
    assert result["failures"] == {}
    assert_no_clinical_values_logged(rig)
