"""The device-time policy and Measurement construction shared by every profile."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from drivers.ble.blood_pressure import BloodPressureMeasurement
from drivers.ble.measure import (
    Reading,
    clock_offset_from,
    place_device_time,
    to_measurements,
)
from gateway.errors import ModelError
from gateway.fhir import codes
from gateway.model import AbsentReason, Component, Measurement, MeasurementStatus, TimeQuality
from tests.ble.helpers import DEVICE, RECEIVED_AT, wall

WALL = wall(2024, 5, 1, 10, 5)
CEST = timezone(timedelta(hours=2))
# BP Measurement: flags 0x06 (mmHg, time stamp, pulse rate); SFLOAT 120 / 80 / 93; Date Time
# 2024-05-01 10:05:00; SFLOAT pulse 72 (0x0048).
BP_PAYLOAD = bytes.fromhex("06 7800 5000 5d00 e80705010a0500 4800")


def test_no_device_time_is_quality_absent() -> None:
    assert place_device_time(None, timedelta(hours=2)) == (None, TimeQuality.ABSENT)


def test_accurate_clock_keeps_wall_digits_and_gets_its_zone() -> None:
    placed, quality = place_device_time(WALL, timedelta(hours=2, seconds=3))
    assert placed == WALL.replace(tzinfo=CEST)
    assert placed is not None
    assert placed.utcoffset() == timedelta(hours=2)
    assert quality is TimeQuality.SYNCED


def test_drift_beyond_tolerance_is_unsynced_but_kept() -> None:
    placed, quality = place_device_time(WALL, timedelta(hours=2, minutes=5))
    assert placed == WALL.replace(tzinfo=CEST)
    assert quality is TimeQuality.UNSYNCED


def test_tolerance_is_configurable() -> None:
    _, quality = place_device_time(WALL, timedelta(minutes=5), tolerance=timedelta(minutes=10))
    assert quality is TimeQuality.SYNCED


def test_unknown_offset_labels_the_wall_clock_utc_and_unsynced() -> None:
    placed, quality = place_device_time(WALL, None)
    assert placed == WALL.replace(tzinfo=UTC)
    assert quality is TimeQuality.UNSYNCED


def test_a_clock_never_set_gets_no_invented_zone() -> None:
    """A device still at its factory date (years off) must not get a +13:45 zone."""
    placed, quality = place_device_time(WALL, timedelta(days=-9000))
    assert placed == WALL.replace(tzinfo=UTC)
    assert quality is TimeQuality.UNSYNCED


def test_device_flagging_its_own_clock_unset_is_unsynced() -> None:
    placed, quality = place_device_time(WALL, timedelta(hours=2), clock_set=False)
    assert placed == WALL.replace(tzinfo=CEST)
    assert quality is TimeQuality.UNSYNCED


def test_aware_device_time_keeps_the_devices_zone() -> None:
    aware = WALL.replace(tzinfo=CEST)
    assert place_device_time(aware, timedelta(hours=2)) == (aware, TimeQuality.SYNCED)
    assert place_device_time(aware, timedelta(hours=1)) == (aware, TimeQuality.UNSYNCED)
    assert place_device_time(aware, None) == (aware, TimeQuality.UNSYNCED)


def test_clock_offset_is_device_wall_clock_minus_gateway_utc() -> None:
    gateway_now = datetime(2024, 5, 1, 8, 5, tzinfo=UTC)
    assert clock_offset_from(WALL, gateway_now) == timedelta(hours=2)
    assert clock_offset_from(WALL.replace(tzinfo=CEST), gateway_now) == timedelta(hours=2)
    with pytest.raises(ModelError):
        clock_offset_from(WALL, WALL)


def test_to_measurements_builds_the_full_measurements() -> None:
    parsed = BloodPressureMeasurement.decode(BP_PAYLOAD)
    measured = to_measurements(parsed, DEVICE, RECEIVED_AT, timedelta(hours=2), raw=BP_PAYLOAD)
    when = datetime(2024, 5, 1, 10, 5, tzinfo=CEST)
    assert measured == (
        Measurement(
            device=DEVICE,
            mdc_code=codes.MDC_PRESS_BLD_NONINV,
            value=None,
            unit="mm[Hg]",
            received_at=RECEIVED_AT,
            source="ble.blood_pressure",
            raw=BP_PAYLOAD,
            device_time=when,
            time_quality=TimeQuality.SYNCED,
            components=(
                Component(codes.MDC_PRESS_BLD_NONINV_SYS, Decimal("120"), "mm[Hg]"),
                Component(codes.MDC_PRESS_BLD_NONINV_DIA, Decimal("80"), "mm[Hg]"),
                Component(codes.MDC_PRESS_BLD_NONINV_MEAN, Decimal("93"), "mm[Hg]"),
            ),
        ),
        Measurement(
            device=DEVICE,
            mdc_code=codes.MDC_PULS_RATE_NON_INV,
            value=Decimal("72"),
            unit="/min",
            received_at=RECEIVED_AT,
            source="ble.blood_pressure",
            raw=BP_PAYLOAD,
            device_time=when,
            time_quality=TimeQuality.SYNCED,
        ),
    )


def test_to_measurements_refuses_a_naive_reception_time() -> None:
    parsed = BloodPressureMeasurement.decode(BP_PAYLOAD)
    with pytest.raises(ModelError):
        to_measurements(parsed, DEVICE, wall(2024, 5, 1), None)


def test_reading_of_splits_numbers_and_absent_reasons() -> None:
    assert Reading.of(1, Decimal("2.0"), "Cel") == Reading(1, Decimal("2.0"), "Cel")
    assert Reading.of(1, AbsentReason.NAN, "Cel", status=MeasurementStatus.INVALID) == Reading(
        1, None, "Cel", AbsentReason.NAN, status=MeasurementStatus.INVALID
    )
