"""ASTM result records as Measurements: LOINC + UCUM, precision, censoring, status, identity."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from drivers.serial.astm_records import Message, parse_messages
from drivers.serial.astm_results import (
    CRP,
    GLUCOSE,
    AstmOptions,
    LabResults,
    lab_results,
)
from gateway.fhir.codes import (
    MDC_CONC_GLU_UNDETERMINED_PLASMA,
    MDC_CONC_HBA1C,
    MDC_PRIVATE_CRP,
    MDC_RATIO_INR_COAG,
)
from gateway.model import (
    AbsentReason,
    DeviceId,
    DeviceIdKind,
    Measurement,
    MeasurementStatus,
    TimeQuality,
)

RECEIVED = datetime(2024, 3, 1, 10, 30, tzinfo=UTC)
HEADER = "H|\\^&|||Afinion 2^1.10^AS0012345|||||||P|LIS2-A2|20240301102000\r"
CRP_RESULT = "R|1|^^^CRP|5.0|mg/L|0 to 10|N||F||OP1|20240301101200|20240301101500|AS0012345\r"
CRP_MESSAGE = HEADER + "P|1\rO|1|S-0042||^^^CRP|R||||||N||||||||||||||F\r" + CRP_RESULT + "L|1|N\r"


def message(*results: str, header: str = HEADER, order: str = "O|1|S-1||^^^CRP|R\r") -> Message:
    (msg,), errors = parse_messages(header + order + "".join(results) + "L|1|N\r")
    assert errors == []
    return msg


def decode(msg: Message, options: AstmOptions | None = None) -> LabResults:
    return lab_results(msg, received_at=RECEIVED, options=options)


def test_the_crp_result_becomes_exactly_this_measurement() -> None:
    (msg,), _ = parse_messages(CRP_MESSAGE)
    batch = decode(msg)
    assert batch.errors == ()
    assert batch.warnings == ()
    (result,) = batch.results
    assert result.measurement == Measurement(
        device=DeviceId(DeviceIdKind.SERIAL, "AS0012345"),
        mdc_code=MDC_PRIVATE_CRP,
        value=Decimal("5.0"),
        unit="mg/L",
        received_at=RECEIVED,
        source="serial.astm",
        raw=CRP_RESULT[:-1].encode(),
        device_time=datetime(2024, 3, 1, 10, 15, tzinfo=UTC),
        time_quality=TimeQuality.UNSYNCED,
        interpretation=("N",),  # the analyser's abnormal flag: normal
        supplemental="astm/specimen:S-0042/patient:1/order:1/result:1/test:^^^CRP"
        "/instrument:AS0012345",
    )
    assert not result.measurement.alarm
    assert result.loinc.code == "1988-5"
    assert result.analyte is CRP
    assert (result.test_code, result.result_status, result.abnormal_flags) == ("CRP", "F", ("N",))
    assert result.reference_range == "0 to 10"
    assert result.comparator is None


def test_transmitted_precision_is_kept() -> None:
    one, two = decode(message(CRP_RESULT, CRP_RESULT.replace("5.0", "5.00"))).results
    assert str(one.measurement.value) == "5.0"
    assert str(two.measurement.value) == "5.00"
    assert one.measurement != two.measurement


@pytest.mark.parametrize(
    ("test", "value", "units", "mdc", "loinc", "ucum"),
    [
        ("GLU", "5.6", "mmol/l", MDC_CONC_GLU_UNDETERMINED_PLASMA, "14749-6", "mmol/L"),
        ("GLU", "101", "mg/dL", MDC_CONC_GLU_UNDETERMINED_PLASMA, "2345-7", "mg/dL"),
        ("HBA1C", "6.1", "%", MDC_CONC_HBA1C, "4548-4", "%"),
        ("A1C", "43", "mmol/mol", MDC_CONC_HBA1C, "59261-8", "mmol/mol"),
        ("INR", "2.4", "", MDC_RATIO_INR_COAG, "34714-6", "{INR}"),
        ("HGB", "13.2", "g/dL", None, "718-7", "g/dL"),
        ("HB", "8.1", "mmol/L", None, "59260-0", "mmol/L"),
        ("WBC", "6.80", "10&S&9/L", None, "6690-2", "10*9/L"),
        ("WBC", "6.80", "10^9/L", None, "6690-2", "10*9/L"),  # unescaped "^" as analysers do
        ("WBC", "6.8", "K/uL", None, "6690-2", "10*3/uL"),
    ],
)
def test_analyser_test_codes_map_to_loinc_and_ucum(
    test: str, value: str, units: str, mdc: int | None, loinc: str, ucum: str
) -> None:
    record = f"R|1|^^^{test}|{value}|{units}||N||F||||20240301101500\r"
    (result,) = decode(message(record)).results
    assert result.loinc.code == loinc
    assert result.measurement.unit == ucum
    assert result.measurement.value == Decimal(value)
    if mdc is not None:
        assert result.measurement.mdc_code == mdc


def test_a_below_limit_result_is_absent_with_its_limit_kept_never_a_number() -> None:
    (result,) = decode(message("R|1|^^^CRP|<5|mg/L||L||F\r")).results
    assert result.measurement.value is None
    assert result.measurement.absent_reason is AbsentReason.NEGATIVE_INFINITY
    assert (result.comparator, result.limit) == ("<", Decimal("5"))


def test_an_above_limit_result_is_absent_with_positive_infinity() -> None:
    (result,) = decode(message("R|1|^^^CRP|>= 200|mg/L||>||F\r")).results
    assert result.measurement.absent_reason is AbsentReason.POSITIVE_INFINITY
    assert (result.comparator, result.limit) == (">=", Decimal("200"))


def test_a_number_flagged_off_scale_low_is_treated_as_a_limit() -> None:
    (result,) = decode(message("R|1|^^^CRP|0.5|mg/L||<||F\r")).results
    assert result.measurement.value is None
    assert result.measurement.absent_reason is AbsentReason.NEGATIVE_INFINITY
    assert result.limit == Decimal("0.5")


def test_cannot_be_done_is_absent_not_measured() -> None:
    (result,) = decode(message("R|1|^^^CRP||mg/L||||X\r")).results
    assert result.measurement.absent_reason is AbsentReason.NOT_MEASURED
    assert result.measurement.status == MeasurementStatus.NOT_AVAILABLE


@pytest.mark.parametrize(
    ("code", "status", "supplemental"),
    [
        ("F", MeasurementStatus.NONE, ""),
        ("P", MeasurementStatus.EARLY_INDICATION, "/preliminary"),
        ("C", MeasurementStatus.NONE, "/correction"),
        ("W", MeasurementStatus.QUESTIONABLE, ""),
        ("V", MeasurementStatus.VALIDATED, ""),
    ],
)
def test_result_status_maps_to_measurement_status_and_identifier(
    code: str, status: MeasurementStatus, supplemental: str
) -> None:
    (result,) = decode(message(f"R|1|^^^CRP|5.0|mg/L||||{code}\r")).results
    assert result.measurement.status == status
    identity = "astm/specimen:S-1/patient:/order:1/result:1/test:^^^CRP"
    assert result.measurement.supplemental == identity + supplemental


def test_quality_control_results_are_marked_as_test_data() -> None:
    qc_header = HEADER.replace("|||||||P|", "|||||||Q|")
    (by_header,) = decode(message(CRP_RESULT, header=qc_header)).results
    (by_order,) = decode(message(CRP_RESULT, order="O|1|S-1||^^^CRP|R||||||Q\r")).results
    assert by_header.measurement.status == MeasurementStatus.TEST_DATA
    assert by_order.measurement.status == MeasurementStatus.TEST_DATA


def test_unknown_test_codes_and_units_are_errors_not_guesses() -> None:
    batch = decode(message("R|1|^^^TROP|12|ng/L\r", "R|2|^^^CRP|5|mmol/L\r", CRP_RESULT))
    assert [e.message for e in batch.errors] == [
        "test code not in the analyser test table",
        "unit not admitted for this test",
    ]
    assert batch.errors[0].fields == {"test": "TROP"}
    assert len(batch.results) == 1


def test_a_configured_table_maps_a_vendor_code() -> None:
    options = AstmOptions(table={"GLUCOSE_P": GLUCOSE})
    (result,) = decode(message("R|1|^^^GLUCOSE_P|5.5|mmol/L\r"), options).results
    assert result.loinc.code == "14749-6"


def test_a_value_that_is_not_a_number_is_absent_with_a_warning() -> None:
    batch = decode(message("R|1|^^^CRP|5,0|mg/L\r"))
    assert batch.results[0].measurement.absent_reason is AbsentReason.NAN
    assert [w.message for w in batch.warnings] == ["result value is not a number"]


def test_the_device_time_takes_the_configured_zone_and_quality() -> None:
    zone = timezone(timedelta(hours=2))
    options = AstmOptions(device_tz=zone, time_quality=TimeQuality.SYNCED)
    (result,) = decode(message(CRP_RESULT), options).results
    assert result.measurement.device_time == datetime(2024, 3, 1, 10, 15, tzinfo=zone)
    assert result.measurement.time_quality is TimeQuality.SYNCED


def test_a_result_without_time_has_no_device_time_and_a_bad_time_warns() -> None:
    batch = decode(message("R|1|^^^CRP|5|mg/L\r", "R|2|^^^CRP|6|mg/L||||F||||2024\r"))
    missing, bad = batch.results
    assert missing.measurement.device_time is None
    assert missing.measurement.time_quality is TimeQuality.ABSENT
    assert bad.measurement.device_time is None
    assert [w.message for w in batch.warnings] == ["date/time is not YYYYMMDDHHMMSS"]


def test_the_device_identity_falls_back_when_the_header_has_no_serial_number() -> None:
    no_serial = HEADER.replace("Afinion 2^1.10^AS0012345", "Afinion 2")
    batch = decode(message(CRP_RESULT, header=no_serial))
    assert batch.results[0].measurement.device == DeviceId(DeviceIdKind.SERIAL, "Afinion 2")
    assert [w.message for w in batch.warnings] == [
        "header has no serial-number component; using the sender name"
    ]
    bound = DeviceId(DeviceIdKind.SERIAL, "BOUND-1")
    batch = decode(message(CRP_RESULT, header=no_serial), AstmOptions(fallback_device=bound))
    assert batch.results[0].measurement.device == bound
    anonymous = HEADER.replace("Afinion 2^1.10^AS0012345", "")
    batch = decode(message(CRP_RESULT, header=anonymous))
    assert batch.results == ()
    assert batch.errors[0].message == "header names no sender: the analyser cannot be identified"
