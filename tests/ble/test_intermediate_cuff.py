"""Intermediate Cuff Pressure 0x2A36: subscribed by the blood-pressure profile, decoded by the
intake, and on the stream lane; the final 0x2A35 measurement keeps the spot lane."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from drivers.ble.blood_pressure import (
    BP_MEASUREMENT_UUID,
    INTERMEDIATE_CUFF_PRESSURE_UUID,
    MDC_PRESS_CUFF,
)
from drivers.ble.clock_sync import ClockSync
from drivers.ble.intake import Intake, LinkState
from drivers.ble.profiles import PROFILES, STREAM_PROFILES
from tests.ble.helpers import DEVICE, RECEIVED_AT
from tests.ble.test_ghs import MDC_PRESS_BLD_NONINV, MDC_PULS_RATE_NON_INV

# Intermediate Cuff Pressure, flags 0x00 (mmHg): current cuff pressure SFLOAT 152 (0x0098),
# diastolic and MAP NaN (0x07FF), as the Blood Pressure Service sends them while inflating.
CUFF_152 = bytes.fromhex("00 9800 ff07 ff07")
# BP Measurement, flags 0x06 (mmHg, time stamp, pulse): 120 / 80 / 93, 2024-05-01 10:05:00, 72.
FINAL = bytes.fromhex("06 7800 5000 5d00 e80705010a0500 4800")


def _intake() -> tuple[Intake, LinkState]:
    spec = PROFILES["blood-pressure"]
    return Intake(DEVICE, spec, state=None, seen=None), LinkState(ClockSync(timedelta(hours=2)))


def test_the_profile_subscribes_to_cuff_pressure_as_a_stream() -> None:
    spec = PROFILES["blood-pressure"]
    assert INTERMEDIATE_CUFF_PRESSURE_UUID in spec.optional
    assert spec.stream == frozenset({INTERMEDIATE_CUFF_PRESSURE_UUID})
    assert "blood-pressure" not in STREAM_PROFILES  # the device's main lane stays spot


def test_cuff_pressure_streams_and_the_final_measurement_is_spot() -> None:
    intake, link = _intake()
    (cuff,) = intake.handle(link, INTERMEDIATE_CUFF_PRESSURE_UUID, CUFF_152, RECEIVED_AT)
    assert (cuff.mdc_code, cuff.value, cuff.unit, cuff.supplemental) == (
        MDC_PRESS_CUFF, Decimal(152), "mm[Hg]", "intermediate")
    assert cuff.raw == CUFF_152
    assert intake.streamed(cuff)
    final = intake.handle(link, BP_MEASUREMENT_UUID, FINAL, RECEIVED_AT)
    assert [m.mdc_code for m in final] == [MDC_PRESS_BLD_NONINV,
                                           MDC_PULS_RATE_NON_INV]
    assert not any(intake.streamed(m) for m in final)


def test_a_malformed_cuff_pressure_is_counted_not_raised() -> None:
    intake, link = _intake()
    assert intake.handle(link, INTERMEDIATE_CUFF_PRESSURE_UUID, CUFF_152[:-1], RECEIVED_AT) == []
    assert intake.malformed == 1
