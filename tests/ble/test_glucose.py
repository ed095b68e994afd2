"""Glucose: Measurement 0x2A18, Measurement Context 0x2A34 and the GlucoseJoiner."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.ble.glucose import (
    MDC_CONC_GLU_CONTROL,
    MDC_CONC_GLU_GEN,
    GlucoseJoiner,
    GlucoseMeasurement,
    GlucoseRecord,
    GlucoseType,
    SampleLocation,
)
from drivers.ble.glucose_context import (
    CarbohydrateId,
    GlucoseContext,
    Health,
    Meal,
    MedicationId,
    SampleTester,
)
from drivers.ble.measure import Reading
from gateway.errors import DecodeError, ModelError
from gateway.fhir import codes
from gateway.model import AbsentReason, MeasurementStatus, TimeQuality
from tests.ble.helpers import (
    DATE_TIME_BYTES,
    decode_or_reject,
    fixed,
    is_exactly,
    measurements_of,
    same,
    wall,
)

# flags 0x0B (time offset, concentration/type/location, sensor status; kg/L); sequence 5;
# base time 2024-05-01 07:45:00; time offset +60 min (0x003C); concentration 0.00120 kg/L
# (SFLOAT mantissa 120, exponent -5: 0xB078); type 2 capillary plasma (low nibble), location 1
# finger (high nibble) = 0x12; sensor status 0x0000.
FULL = bytes.fromhex("0b 0500 e8070501072d00 3c00 78b0 12 0000")
# flags 0x06 (concentration, mol/L); sequence 6; base time 2024-05-01 08:00:00; 0.0067 mol/L
# (mantissa 67, exponent -4: 0xC043); type 1 capillary whole blood, location 1 finger.
MMOL = bytes.fromhex("06 0600 e8070501080000 43c0 11")
# flags 0x03; sequence 7; base time 2024-05-01 00:10:00; offset -30 min (0xFFE2, sint16):
# the reading is on the previous day; 0.00095 kg/L (0xB05F); type 9 ISF, location 15 n/a.
NEGATIVE_OFFSET = bytes.fromhex("03 0700 e8070501000a00 e2ff 5fb0 f9")
# flags 0x02; sequence 8; 0.00110 kg/L (0xB06E); type 10 control solution, location 4 control.
CONTROL = bytes.fromhex("02 0800 e8070501090000 6eb0 4a")
# flags 0x08 (sensor status only, no concentration); sequence 9; status 0x0008 strip insertion
# error: an error record, no value.
ERROR_RECORD = bytes.fromhex("08 0900 e8070501090000 0800")
# flags 0x0A; sequence 10; 110 mg/dL; status 0x0800 (time fault): the meter's clock is wrong.
TIME_FAULT = bytes.fromhex("0a 0a00 e8070501090000 6eb0 12 0008")
# flags 0x12 (concentration + context follows); sequence 5.
CONTEXT_FOLLOWS = bytes.fromhex("12 0500 e8070501072d00 78b0 12")
# Context, flags 0xFF (every field; medication in liters; extended flags); sequence 5; extended
# flags 0x00; carbohydrate id 1 breakfast, 0.050 kg (0xD032); meal 1 preprandial; tester 1 self
# (low nibble) / health 5 no issues (high nibble) = 0x51; exercise 1800 s (0x0708) at 50 %;
# medication id 1 rapid-acting insulin, 0.00005 L (0xB005); HbA1c 6.5 % (0xF041).
CONTEXT_FULL = bytes.fromhex("ff 0500 00 01 32d0 01 51 0807 32 01 05b0 41f0")
# Context, flags 0x02 (meal only), sequence 5, meal 2 postprandial.
CONTEXT_MEAL = bytes.fromhex("02 0500 02")


def test_full_measurement_converts_kg_per_l_to_mg_per_dl() -> None:
    value = GlucoseMeasurement.decode(FULL)
    assert same(
        value,
        GlucoseMeasurement(
            0x0B,
            5,
            wall(2024, 5, 1, 7, 45),
            60,
            Decimal("0.00120"),
            GlucoseType.CAPILLARY_PLASMA,
            SampleLocation.FINGER,
            0,
        ),
    )
    assert same(
        value.readings(),
        (
            Reading(
                codes.MDC_CONC_GLU_CAPILLARY_PLASMA,
                Decimal("120"),
                "mg/dL",
                device_time=wall(2024, 5, 1, 8, 45),
                record_id=5,
            ),
        ),
    )
    (measured,) = measurements_of(value)
    assert measured.device_record_id == 5
    assert measured.time_quality is TimeQuality.SYNCED


def test_mol_per_l_becomes_mmol_per_l_with_the_same_digits() -> None:
    (reading,) = GlucoseMeasurement.decode(MMOL).readings()
    assert reading.mdc_code == codes.MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD
    assert reading.unit == "mmol/L"
    assert is_exactly(reading.value, "6.7")


def test_negative_time_offset_moves_to_the_previous_day() -> None:
    value = GlucoseMeasurement.decode(NEGATIVE_OFFSET)
    assert value.time_offset_min == -30
    assert same(
        value.readings(),
        (
            Reading(
                codes.MDC_CONC_GLU_ISF,
                Decimal("95"),
                "mg/dL",
                device_time=wall(2024, 4, 30, 23, 40),
                record_id=7,
            ),
        ),
    )


def test_control_solution_is_test_data_not_clinical() -> None:
    (reading,) = GlucoseMeasurement.decode(CONTROL).readings()
    assert reading.mdc_code == MDC_CONC_GLU_CONTROL
    assert reading.status is MeasurementStatus.TEST_DATA


def test_error_record_without_concentration_is_reported_absent() -> None:
    value = GlucoseMeasurement.decode(ERROR_RECORD)
    assert same(
        value.readings(),
        (
            Reading(
                MDC_CONC_GLU_GEN,
                None,
                "mg/dL",
                AbsentReason.NOT_MEASURED,
                device_time=wall(2024, 5, 1, 9, 0),
                record_id=9,
                status=MeasurementStatus.QUESTIONABLE,
            ),
        ),
    )
    assert value.flag_summary()["sensor_status"] == ["strip_insertion_error"]


def test_time_fault_makes_the_time_untrusted() -> None:
    value = GlucoseMeasurement.decode(TIME_FAULT)
    (reading,) = value.readings()
    assert not reading.clock_set
    assert reading.status is MeasurementStatus.NONE
    (measured,) = measurements_of(value)
    assert measured.time_quality is TimeQuality.UNSYNCED


def test_unknown_type_and_location_codes_are_kept() -> None:
    value = GlucoseMeasurement.decode(bytes.fromhex("02 0100 e8070501090000 6eb0 b0"))
    assert value.sample_type == 0
    assert value.sample_location == 0x0B
    assert value.flag_summary()["sample_type"] == "unknown_0"
    assert value.readings()[0].mdc_code == MDC_CONC_GLU_GEN


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (FULL[:-1], "too short: sensor status annunciation needs 2 more bytes, 1 left"),
        (FULL + b"\x00", "too long: 1 bytes after the last field"),
        (
            bytes.fromhex("02 0100 e8070501090000 6eb0"),
            "too short: type-sample location needs 1 more bytes, 0 left",
        ),
    ],
)
def test_length_is_validated_against_the_flags(payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        GlucoseMeasurement.decode(payload)
    assert caught.value.fields == {"uuid": "2a18", "reason": reason}


def test_inconsistent_construction_is_refused() -> None:
    with pytest.raises(ModelError):
        GlucoseMeasurement(0x02, 1, None, concentration=Decimal("0.001"))


def test_context_decodes_every_field() -> None:
    value = GlucoseContext.decode(CONTEXT_FULL)
    assert same(
        value,
        GlucoseContext(
            0xFF,
            5,
            0x00,
            (CarbohydrateId.BREAKFAST, Decimal("0.050")),
            Meal.PREPRANDIAL,
            (SampleTester.SELF, Health.NO_HEALTH_ISSUES),
            (1800, 50),
            (MedicationId.RAPID_ACTING_INSULIN, Decimal("0.00005")),
            Decimal("6.5"),
        ),
    )
    assert value.medication_unit == "L"
    assert value.encode() == CONTEXT_FULL


def test_context_summary_has_no_clinical_numbers() -> None:
    assert GlucoseContext.decode(CONTEXT_MEAL).flag_summary() == {
        "sequence_number": 5,
        "extended_flags": None,
        "carbohydrate_present": False,
        "carbohydrate_id": None,
        "meal": "postprandial",
        "tester": None,
        "health": None,
        "exercise_present": False,
        "exercise_overrun": False,
        "medication_present": False,
        "medication_id": None,
        "medication_liters": False,
        "hba1c_present": False,
    }


def test_context_length_is_validated() -> None:
    with pytest.raises(DecodeError) as caught:
        GlucoseContext.decode(CONTEXT_FULL[:-1])
    assert caught.value.fields == {
        "uuid": "2a34",
        "reason": "too short: HbA1c needs 2 more bytes, 1 left",
    }


def test_joiner_passes_a_measurement_without_context_straight_through() -> None:
    joiner = GlucoseJoiner()
    full = GlucoseMeasurement.decode(FULL)
    assert joiner.add_measurement(full) == (GlucoseRecord(full),)
    assert joiner.pending == 0


def test_joiner_pairs_measurement_and_context_by_sequence_number() -> None:
    joiner = GlucoseJoiner()
    measurement = GlucoseMeasurement.decode(CONTEXT_FOLLOWS)
    context = GlucoseContext.decode(CONTEXT_MEAL)
    assert joiner.add_measurement(measurement) == ()
    assert joiner.add_context(context) == (GlucoseRecord(measurement, context),)
    assert joiner.flush() == ()


def test_joiner_counts_a_context_without_its_measurement() -> None:
    joiner = GlucoseJoiner()
    measurement = GlucoseMeasurement.decode(CONTEXT_FOLLOWS)
    joiner.add_measurement(measurement)
    other = GlucoseContext.decode(bytes.fromhex("02 0600 02"))  # sequence 6
    assert joiner.add_context(other) == ()
    assert joiner.unmatched_contexts == 1
    assert joiner.flush() == (GlucoseRecord(measurement),)  # released without context


def test_joiner_never_holds_more_than_max_pending() -> None:
    joiner = GlucoseJoiner(max_pending=1)
    first = GlucoseMeasurement.decode(CONTEXT_FOLLOWS)
    second = GlucoseMeasurement(
        0x12,
        6,
        first.base_time,
        None,
        first.concentration,
        first.sample_type,
        first.sample_location,
    )
    assert joiner.add_measurement(first) == ()
    assert joiner.add_measurement(second) == (GlucoseRecord(first),)
    assert joiner.pending == 1


def test_joiner_releases_a_repeated_sequence_number_instead_of_dropping_it() -> None:
    joiner = GlucoseJoiner()
    measurement = GlucoseMeasurement.decode(CONTEXT_FOLLOWS)
    joiner.add_measurement(measurement)
    assert joiner.add_measurement(measurement) == (GlucoseRecord(measurement),)
    assert joiner.pending == 1


def test_record_readings_are_the_measurements() -> None:
    record = GlucoseRecord(GlucoseMeasurement.decode(FULL), None)
    assert same(record.readings(), GlucoseMeasurement.decode(FULL).readings())
    assert measurements_of(record)[0].source == "ble.glucose"


@st.composite
def _measurement_payloads(draw: st.DrawFn) -> bytes:
    flags = draw(st.integers(0, 0xFF))
    out = bytes([flags]) + draw(fixed(2)) + draw(DATE_TIME_BYTES)
    out += draw(fixed(2)) if flags & 0x01 else b""
    out += draw(fixed(3)) if flags & 0x02 else b""
    out += draw(fixed(2)) if flags & 0x08 else b""
    return out


@st.composite
def _context_payloads(draw: st.DrawFn) -> bytes:
    flags = draw(st.integers(0, 0xFF))
    sizes = ((0x80, 1), (0x01, 3), (0x02, 1), (0x04, 1), (0x08, 3), (0x10, 3), (0x40, 2))
    return (
        bytes([flags])
        + draw(fixed(2))
        + b"".join(draw(fixed(n)) for bit, n in sizes if flags & bit)
    )


@given(st.one_of(_measurement_payloads(), st.binary(max_size=20)))
def test_measurement_arbitrary_bytes_give_a_value_or_decode_error(payload: bytes) -> None:
    value = decode_or_reject(GlucoseMeasurement.decode, payload)
    if isinstance(value, GlucoseMeasurement):
        assert same(GlucoseMeasurement.decode(value.encode()), value)
        assert len(measurements_of(value)) == 1


@given(st.one_of(_context_payloads(), st.binary(max_size=20)))
def test_context_arbitrary_bytes_give_a_value_or_decode_error(payload: bytes) -> None:
    value = decode_or_reject(GlucoseContext.decode, payload)
    if isinstance(value, GlucoseContext):
        assert same(GlucoseContext.decode(value.encode()), value)
        value.flag_summary()


def test_time_offset_past_the_end_of_the_calendar_is_a_decode_error() -> None:
    # flags 0x01; sequence 1; base time 9999-12-31 23:59:00; time offset +32767 min.
    payload = bytes.fromhex("01 0100 0f270c1f173b00 ff7f")
    with pytest.raises(DecodeError) as caught:
        GlucoseMeasurement.decode(payload)
    assert caught.value.fields == {
        "uuid": "2a18",
        "reason": "time offset moves the base time out of range",
    }
