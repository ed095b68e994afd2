"""``decode_characteristic``: the JSON shape behind ``gatewayctl decode``."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.ble.decode import SUPPORTED_UUIDS, decode_characteristic
from gateway.errors import DecodeError
from gateway.fhir import codes
from tests.ble.helpers import decode_or_reject

# BP Measurement, flags 0x06 (mmHg, time stamp, pulse); SFLOAT 120 / 80 / 93; Date Time
# 2024-05-01 10:05:00; SFLOAT pulse 72.
BP = bytes.fromhex("06 7800 5000 5d00 e80705010a0500 4800")
# Temperature Measurement, flags 0x02; FLOAT 36.60 (mantissa 3660, exponent -2); Date Time
# 2024-05-01 10:00:00 (the tests/factories.py payload).
THERMOMETER = bytes.fromhex("02 4c0e00fe e80705010a0000")
# PLX Spot-check, flags 0x00; SpO2 NaN (0x07FF), pulse 72.
SPOT_NAN = bytes.fromhex("00 ff07 4800")
MEASUREMENT_KEYS = {"type", "value", "unit", "absent_reason", "device_time"}


def _m(
    mdc: int, value: str | None, unit: str, absent: str | None = None, when: str | None = None
) -> dict[str, Any]:
    return {"type": mdc, "value": value, "unit": unit, "absent_reason": absent, "device_time": when}


def test_blood_pressure_lists_components_then_pulse() -> None:
    when = "2024-05-01T10:05:00"
    assert decode_characteristic(0x2A35, BP) == {
        "uuid": "2a35",
        "measurements": [
            _m(codes.MDC_PRESS_BLD_NONINV_SYS, "120", "mm[Hg]", when=when),
            _m(codes.MDC_PRESS_BLD_NONINV_DIA, "80", "mm[Hg]", when=when),
            _m(codes.MDC_PRESS_BLD_NONINV_MEAN, "93", "mm[Hg]", when=when),
            _m(codes.MDC_PULS_RATE_NON_INV, "72", "/min", when=when),
        ],
        "flags": {
            "kpa": False,
            "time_stamp_present": True,
            "pulse_rate_present": True,
            "user_id_present": False,
            "measurement_status_present": False,
            "user_id": None,
            "measurement_status": None,
            "pulse_rate_range": None,
            "intermediate": False,
            "unknown_flags": 0,
        },
    }


def test_thermometer_value_keeps_the_transmitted_precision() -> None:
    assert decode_characteristic(0x2A1C, THERMOMETER) == {
        "uuid": "2a1c",
        "measurements": [_m(codes.MDC_TEMP_BODY, "36.60", "Cel", when="2024-05-01T10:00:00")],
        "flags": {
            "fahrenheit": False,
            "time_stamp_present": True,
            "temperature_type_present": False,
            "temperature_type": None,
            "intermediate": False,
            "unknown_flags": 0,
        },
    }


def test_absent_values_are_null_with_a_reason() -> None:
    out = decode_characteristic(0x2A5E, SPOT_NAN)
    assert out["measurements"] == [
        _m(codes.MDC_PULS_OXIM_SAT_O2, None, "%", "nan"),
        _m(codes.MDC_PULS_OXIM_PULS_RATE, "72", "/min"),
    ]


def test_characteristics_without_measurements_have_an_empty_list() -> None:
    assert decode_characteristic(0x2A52, bytes.fromhex("05 00 0a00")) == {
        "uuid": "2a52",
        "measurements": [],
        "flags": {"op_code": "number_of_stored_records_response", "number_of_records": 10},
    }
    assert decode_characteristic(0x2A23, bytes.fromhex("257800feff051c00"))["flags"] == {
        "system_id": "001C05FFFE007825"
    }
    assert decode_characteristic(0x2A25, b"SN-1")["flags"] == {"serial_number": "SN-1"}
    assert decode_characteristic(0x2A1D, b"\x06")["flags"] == {"temperature_type": "mouth"}
    assert decode_characteristic(0x2A08, bytes(7))["flags"] == {"date_time": None}


def test_scientific_notation_shows_a_positive_exponent() -> None:
    # BP, flags 0x00; systolic SFLOAT 0x1002 (mantissa 2, exponent +1): 20 known to the tens,
    # which str(Decimal) writes as 2E+1; diastolic 80, MAP 93.
    payload = bytes.fromhex("00 0210 5000 5d00")
    assert decode_characteristic(0x2A35, payload)["measurements"][0]["value"] == "2E+1"


def test_unknown_uuid_is_a_decode_error() -> None:
    with pytest.raises(DecodeError) as caught:
        decode_characteristic(0x2A00, b"\x00")
    assert caught.value.fields == {"uuid": "2a00", "reason": "no decoder for this characteristic"}


def test_malformed_payload_is_a_decode_error_naming_the_uuid() -> None:
    with pytest.raises(DecodeError) as caught:
        decode_characteristic(0x2A35, BP[:-1])
    assert caught.value.fields["uuid"] == "2a35"


@given(st.sampled_from(sorted(SUPPORTED_UUIDS)), st.binary(max_size=24))
def test_every_supported_uuid_gives_the_fixed_shape_or_decode_error(
    uuid16: int, payload: bytes
) -> None:
    out = decode_or_reject(lambda p: decode_characteristic(uuid16, p), payload)
    if out is None:
        return
    assert isinstance(out, dict)
    assert set(out) == {"uuid", "measurements", "flags"}
    assert out["uuid"] == f"{uuid16:04x}"
    for entry in out["measurements"]:
        assert set(entry) - {"samples"} == MEASUREMENT_KEYS  # GHS sample arrays add samples
        assert isinstance(entry["type"], int)
        if "samples" not in entry:
            assert (entry["value"] is None) != (entry["absent_reason"] is None)
    assert isinstance(out["flags"], dict)
    json.dumps(out)
