"""Pulse Oximeter: PLX Spot-check 0x2A5E, PLX Continuous 0x2A5F, PLX Features 0x2A60."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.ble.measure import Reading
from drivers.ble.pulse_oximeter import (
    MDC_PULS_OXIM_PERF_REL,
    ContinuousMeasurement,
    PlxFeatures,
    SpotCheckMeasurement,
)
from gateway.errors import DecodeError
from gateway.fhir.codes import MDC_PULS_OXIM_PULS_RATE, MDC_PULS_OXIM_SAT_O2
from gateway.model import AbsentReason, MeasurementStatus, TimeQuality
from tests.ble.helpers import (
    DATE_TIME_BYTES,
    decode_or_reject,
    fixed,
    measurements_of,
    same,
    wall,
)

WHEN = wall(2024, 5, 1, 9, 15)
SPO2, PR = MDC_PULS_OXIM_SAT_O2, MDC_PULS_OXIM_PULS_RATE
# Spot-check, flags 0x00: SpO2 97 % (0x0061), pulse rate 72 bpm (0x0048).
SPOT_MINIMAL = bytes.fromhex("00 6100 4800")
# Spot-check, flags 0x1F: timestamp, measurement status, device and sensor status, PAI present
# and "device clock is not set" (bit 4). 97 % / 72 bpm; Date Time 2024-05-01 09:15:00; status
# 0x0080 (validated data); device and sensor status 0x000020 (low perfusion, uint24); PAI 2.5 %
# (mantissa 25, exponent -1: 0xF019).
SPOT_FULL = bytes.fromhex("1f 6100 4800 e8070501090f00 8000 200000 19f0")
# Spot-check with both values NaN (0x07FF): finger out.
SPOT_NAN = bytes.fromhex("00 ff07 ff07")
# Spot-check, flags 0x02, measurement status 0x0800 (data for testing).
SPOT_TEST_DATA = bytes.fromhex("02 6100 4800 0008")
# Continuous, flags 0x00: normal 97 % / 72 bpm.
CONT_MINIMAL = bytes.fromhex("00 6100 4800")
# Continuous, flags 0x1F: fast, slow, measurement status, device and sensor status, PAI. Normal
# 97/72; fast 96/74 (0x0060, 0x004A); slow 98/70 (0x0062, 0x0046); status 0x0020 (measurement
# ongoing); device and sensor status 0x008000 (sensor disconnected); PAI 1.8 (0xF012).
CONT_FULL = bytes.fromhex("1f 6100 4800 6000 4a00 6200 4600 2000 008000 12f0")
# Continuous, flags 0x02: only the slow average after the normal one.
CONT_SLOW_ONLY = bytes.fromhex("02 6100 4800 6200 4600")
# Features 0x000C (spot-check storage + timestamp), nothing further.
FEATURES_SHORT = bytes.fromhex("0c00")
# Features 0x0003: measurement status support 0xFFE0 and device and sensor status support
# 0x00EFFF (uint24) follow.
FEATURES_FULL = bytes.fromhex("0300 e0ff ffef00")


def test_spot_check_minimal() -> None:
    value = SpotCheckMeasurement.decode(SPOT_MINIMAL)
    assert same(value, SpotCheckMeasurement(0x00, Decimal(97), Decimal(72)))
    assert same(
        value.readings(), (Reading(SPO2, Decimal(97), "%"), Reading(PR, Decimal(72), "/min"))
    )


def test_spot_check_full_with_statuses_and_unset_clock() -> None:
    value = SpotCheckMeasurement.decode(SPOT_FULL)
    assert same(
        value,
        SpotCheckMeasurement(
            0x1F, Decimal(97), Decimal(72), WHEN, 0x0080, 0x000020, Decimal("2.5")
        ),
    )
    status = MeasurementStatus.VALIDATED | MeasurementStatus.QUESTIONABLE
    assert same(
        value.readings(),
        (
            Reading(SPO2, Decimal(97), "%", device_time=WHEN, clock_set=False, status=status),
            Reading(PR, Decimal(72), "/min", device_time=WHEN, clock_set=False, status=status),
            Reading(
                MDC_PULS_OXIM_PERF_REL,
                Decimal("2.5"),
                "%",
                device_time=WHEN,
                clock_set=False,
                status=status,
            ),
        ),
    )
    # The device says its clock is not set: its timestamp is kept but never trusted.
    assert {m.time_quality for m in measurements_of(value)} == {TimeQuality.UNSYNCED}
    assert value.flag_summary() == {
        "timestamp_present": True,
        "measurement_status_present": True,
        "device_and_sensor_status_present": True,
        "pulse_amplitude_index_present": True,
        "device_clock_not_set": True,
        "measurement_status": ["validated_data"],
        "device_and_sensor_status": ["low_perfusion_detected"],
        "unknown_flags": 0,
    }


def test_spot_check_nan_values_are_absent() -> None:
    assert same(
        SpotCheckMeasurement.decode(SPOT_NAN).readings(),
        (Reading(SPO2, None, "%", AbsentReason.NAN), Reading(PR, None, "/min", AbsentReason.NAN)),
    )


def test_test_data_status_is_carried() -> None:
    (spo2, _) = SpotCheckMeasurement.decode(SPOT_TEST_DATA).readings()
    assert spo2.status is MeasurementStatus.TEST_DATA


def test_continuous_minimal() -> None:
    value = ContinuousMeasurement.decode(CONT_MINIMAL)
    assert same(
        value.readings(), (Reading(SPO2, Decimal(97), "%"), Reading(PR, Decimal(72), "/min"))
    )


def test_continuous_full_with_fast_and_slow_averages() -> None:
    value = ContinuousMeasurement.decode(CONT_FULL)
    assert same(
        value,
        ContinuousMeasurement(
            0x1F,
            Decimal(97),
            Decimal(72),
            (Decimal(96), Decimal(74)),
            (Decimal(98), Decimal(70)),
            0x0020,
            0x008000,
            Decimal("1.8"),
        ),
    )
    status = MeasurementStatus.MEASUREMENT_ONGOING | MeasurementStatus.QUESTIONABLE
    assert same(
        value.readings(),
        (
            Reading(SPO2, Decimal(97), "%", status=status),
            Reading(PR, Decimal(72), "/min", status=status),
            Reading(SPO2, Decimal(96), "%", status=status, supplemental="fast"),
            Reading(PR, Decimal(74), "/min", status=status, supplemental="fast"),
            Reading(SPO2, Decimal(98), "%", status=status, supplemental="slow"),
            Reading(PR, Decimal(70), "/min", status=status, supplemental="slow"),
            Reading(MDC_PULS_OXIM_PERF_REL, Decimal("1.8"), "%", status=status),
        ),
    )
    assert value.flag_summary()["device_and_sensor_status"] == ["sensor_disconnected"]


def test_continuous_slow_only() -> None:
    value = ContinuousMeasurement.decode(CONT_SLOW_ONLY)
    assert value.fast is None
    assert [r.supplemental for r in value.readings()] == ["", "", "slow", "slow"]


def test_features() -> None:
    short = PlxFeatures.decode(FEATURES_SHORT)
    assert short == PlxFeatures(0x000C)
    assert short.spot_check_storage
    assert short.flag_summary() == {
        "supported_features": ["spot_check_measurement_storage", "spot_check_timestamp"],
        "measurement_status_support": None,
        "device_and_sensor_status_support": None,
    }
    full = PlxFeatures.decode(FEATURES_FULL)
    assert full == PlxFeatures(0x0003, 0xFFE0, 0x00EFFF)
    assert full.encode() == FEATURES_FULL


@pytest.mark.parametrize(
    ("decode", "payload", "uuid", "reason"),
    [
        (
            SpotCheckMeasurement.decode,
            bytes.fromhex("01 6100 4800 e807"),
            "2a5e",
            "too short: timestamp needs 5 more bytes, 0 left",
        ),
        (
            SpotCheckMeasurement.decode,
            SPOT_MINIMAL + b"\x00",
            "2a5e",
            "too long: 1 bytes after the last field",
        ),
        (
            ContinuousMeasurement.decode,
            bytes.fromhex("08 6100 4800 2000"),
            "2a5f",
            "too short: device and sensor status needs 3 more bytes, 2 left",
        ),
        (
            PlxFeatures.decode,
            bytes.fromhex("0200 e0ff"),
            "2a60",
            "too short: device and sensor status support needs 3 more bytes, 2 left",
        ),
    ],
)
def test_length_is_validated_against_the_flags(
    decode: object, payload: bytes, uuid: str, reason: str
) -> None:
    assert callable(decode)
    with pytest.raises(DecodeError) as caught:
        decode(payload)
    assert caught.value.fields == {"uuid": uuid, "reason": reason}


@st.composite
def _spot_payloads(draw: st.DrawFn) -> bytes:
    flags = draw(st.integers(0, 0xFF))
    out = bytes([flags]) + draw(fixed(4))
    out += draw(DATE_TIME_BYTES) if flags & 0x01 else b""
    out += draw(fixed(2)) if flags & 0x02 else b""
    out += draw(fixed(3)) if flags & 0x04 else b""
    out += draw(fixed(2)) if flags & 0x08 else b""
    return out


@st.composite
def _continuous_payloads(draw: st.DrawFn) -> bytes:
    flags = draw(st.integers(0, 0xFF))
    sizes = ((0x01, 4), (0x02, 4), (0x04, 2), (0x08, 3), (0x10, 2))
    return (
        bytes([flags])
        + draw(fixed(4))
        + b"".join(draw(fixed(n)) for bit, n in sizes if flags & bit)
    )


@given(st.one_of(_spot_payloads(), st.binary(max_size=24)))
def test_spot_check_arbitrary_bytes_give_a_value_or_decode_error(payload: bytes) -> None:
    value = decode_or_reject(SpotCheckMeasurement.decode, payload)
    if isinstance(value, SpotCheckMeasurement):
        assert same(SpotCheckMeasurement.decode(value.encode()), value)
        assert measurements_of(value)


@given(st.one_of(_continuous_payloads(), st.binary(max_size=24)))
def test_continuous_arbitrary_bytes_give_a_value_or_decode_error(payload: bytes) -> None:
    value = decode_or_reject(ContinuousMeasurement.decode, payload)
    if isinstance(value, ContinuousMeasurement):
        assert same(ContinuousMeasurement.decode(value.encode()), value)
        assert measurements_of(value)


@given(st.binary(max_size=8))
def test_features_arbitrary_bytes_give_a_value_or_decode_error(payload: bytes) -> None:
    value = decode_or_reject(PlxFeatures.decode, payload)
    if isinstance(value, PlxFeatures):
        assert PlxFeatures.decode(value.encode()) == value
