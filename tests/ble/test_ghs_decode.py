"""``gatewayctl decode --uuid 2b8b|2bdd``: GHS observations in the JSON shape of every profile."""

from __future__ import annotations

import json
from typing import Any

import pytest

from drivers.ble.decode import SUPPORTED_UUIDS, decode_characteristic
from gateway.errors import DecodeError
from tests.ble.test_ghs import (
    CUFF_IMPROPERLY_PLACED,
    CUFF_LOOSE,
    LIVE_BUNDLE,
    LIVE_COMPOUND_BP,
    LIVE_COMPOUND_DISCRETE,
    LIVE_DISCRETE_TICKS,
    LIVE_NUMERIC_ALL_FIELDS,
    LIVE_SAMPLE_ARRAY,
    LIVE_STRING,
    LIVE_UNKNOWN_CLASS,
    MDC_BLP_MEASUREMENT_STATUS,
    MDC_ECG_ELEC_POTL_I,
    MDC_MODALITY_SPOT,
    MDC_PRESS_BLD_NONINV_DIA,
    MDC_PRESS_BLD_NONINV_MEAN,
    MDC_PRESS_BLD_NONINV_SYS,
    MDC_PULS_OXIM_PULS_RATE,
    MDC_PULS_OXIM_SAT_O2,
    NUMERIC_SPECIAL,
    STORED_NUMERIC,
)

AT = "2024-05-01T08:00:00+00:00"
UTC_STAMP = {"tick_counter": False, "utc": True, "resolution": "second",
             "current_timeline": True, "tz_dst_offset_min": None, "time_sync_source": 6,
             "time_value": 767865600}


def _m(mdc: int, value: str | None, unit: str | None, absent: str | None = None,
       when: str | None = None) -> dict[str, Any]:
    return {"type": mdc, "value": value, "unit": unit, "absent_reason": absent,
            "device_time": when}


def _header(cls: str, fields: list[str], mdc: int | None, **more: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "class": cls, "fields": fields, "type": mdc, "time_stamp": None,
        "measurement_status": None, "object_id": None, "patient": None,
        "supplemental_information": None, "derived_from": None, "is_member_of": None,
    }
    out.update(more)
    return out


def test_uuids_are_supported() -> None:
    assert {0x2B8B, 0x2BDD, 0x2BF1, 0x2BF3, 0x2BF4} <= SUPPORTED_UUIDS


def test_numeric_nan_with_every_header_field() -> None:
    out = decode_characteristic(0x2B8B, LIVE_NUMERIC_ALL_FIELDS)
    assert out == {
        "uuid": "2b8b",
        "measurements": [_m(MDC_PULS_OXIM_PULS_RATE, None, "/min", "nan",
                            "2024-05-01T10:00:00.250000+02:00")],
        "flags": {
            "record_number": None,
            "observation": _header(
                "numeric",
                ["observation_type", "time_stamp", "measurement_duration", "measurement_status",
                 "object_id", "patient", "supplemental_information", "derived_from",
                 "is_member_of"],
                MDC_PULS_OXIM_PULS_RATE,
                time_stamp={"tick_counter": False, "utc": False, "resolution": "millisecond",
                            "current_timeline": True, "tz_dst_offset_min": 120,
                            "time_sync_source": 1, "time_value": 767872800250},
                measurement_status=["questionable"], object_id=7, patient=1,
                supplemental_information=[MDC_MODALITY_SPOT], derived_from=[5],
                is_member_of=[9], unit_code=2720),
            "unusable": [],
        },
    }
    json.dumps(out)


@pytest.mark.parametrize("reason", sorted(NUMERIC_SPECIAL))
def test_special_values_print_null_with_the_reason(reason: Any) -> None:
    (entry,) = decode_characteristic(0x2B8B, NUMERIC_SPECIAL[reason])["measurements"]
    assert entry == _m(MDC_PULS_OXIM_SAT_O2, None, "%", reason.value)


def test_simple_discrete_prints_its_code_and_a_tick_counter_no_time() -> None:
    out = decode_characteristic(0x2B8B, LIVE_DISCRETE_TICKS)
    assert out["measurements"] == [_m(MDC_BLP_MEASUREMENT_STATUS, str(CUFF_LOOSE), None)]
    assert out["flags"]["observation"]["time_stamp"] == {
        "tick_counter": True, "utc": False, "resolution": "decisecond",
        "current_timeline": False, "tz_dst_offset_min": None, "time_sync_source": 0,
        "time_value": 12345}


def test_string_prints_its_text_and_is_usable() -> None:
    out = decode_characteristic(0x2B8B, LIVE_STRING)
    assert out["measurements"] == [_m(CUFF_IMPROPERLY_PLACED, "Café ok", None)]
    assert out["flags"]["unusable"] == []  # the model carries text (FHIR valueString)


def test_sample_array_prints_one_entry_with_its_scaled_samples() -> None:
    (entry,) = decode_characteristic(0x2B8B, LIVE_SAMPLE_ARRAY)["measurements"]
    assert entry == {**_m(MDC_ECG_ELEC_POTL_I, None, "mV", when=AT),
                     "samples": ["0.000", "0.010", "-0.290"]}


def test_compound_prints_one_entry_per_component() -> None:
    assert decode_characteristic(0x2B8B, LIVE_COMPOUND_BP)["measurements"] == [
        _m(MDC_PRESS_BLD_NONINV_SYS, "120", "mm[Hg]", when=AT),
        _m(MDC_PRESS_BLD_NONINV_DIA, "80", "mm[Hg]", when=AT),
        _m(MDC_PRESS_BLD_NONINV_MEAN, "93", "mm[Hg]", when=AT),
    ]
    assert decode_characteristic(0x2B8B, LIVE_COMPOUND_DISCRETE)["measurements"] == [
        _m(MDC_BLP_MEASUREMENT_STATUS, str(CUFF_LOOSE), None),
        _m(MDC_BLP_MEASUREMENT_STATUS, str(CUFF_IMPROPERLY_PLACED), None),
    ]


def test_bundle_prints_one_entry_per_member() -> None:
    out = decode_characteristic(0x2B8B, LIVE_BUNDLE)
    assert out["measurements"] == [
        _m(MDC_PULS_OXIM_SAT_O2, "97.5", "%", when=AT),
        _m(MDC_PULS_OXIM_PULS_RATE, "72", "/min", when=AT),
    ]
    member = _header("numeric", ["observation_type"], MDC_PULS_OXIM_SAT_O2, unit_code=544)
    assert out["flags"]["observation"] == _header(
        "bundle", ["time_stamp", "supplemental_information"], None, time_stamp=UTC_STAMP,
        supplemental_information=[MDC_MODALITY_SPOT],
        members=[member, {**member, "type": MDC_PULS_OXIM_PULS_RATE, "unit_code": 2720}])


def test_stored_prints_the_record_number() -> None:
    out = decode_characteristic(0x2BDD, STORED_NUMERIC)
    assert out["uuid"] == "2bdd"
    assert out["measurements"] == [_m(MDC_PULS_OXIM_SAT_O2, "97.5", "%", when=AT)]
    assert out["flags"]["record_number"] == 42


def test_unknown_class_prints_no_measurement_and_says_why() -> None:
    out = decode_characteristic(0x2B8B, LIVE_UNKNOWN_CLASS)
    assert out["measurements"] == []
    assert out["flags"] == {
        "record_number": None,
        "observation": {"class_type": 0x42, "octets": 4,
                        "reason": "unknown observation class type 66"},
        "unusable": [{"class_type": 0x42, "type": None,
                      "reason": "unknown observation class type 66"}],
    }


def test_part_of_a_segmented_observation_is_an_error() -> None:
    with pytest.raises(DecodeError) as caught:
        decode_characteristic(0x2B8B, b"\x01" + LIVE_STRING[1:])
    assert caught.value.fields == {
        "uuid": "2b8b",
        "reason": "only part of a segmented observation (first=True, last=False); "
                  "reassemble first"}


def test_features_schedule_and_control_point() -> None:
    # Features: flags 0x01; 2 observation types (SpO2, pulse rate); 1 specialization: term code
    # 4103 (blood pressure monitor), version 1.
    features = bytes.fromhex("01 02 b84b0200 1a480200 01 0710 01")
    assert decode_characteristic(0x2BF3, features)["flags"] == {
        "observation_types": [MDC_PULS_OXIM_SAT_O2, MDC_PULS_OXIM_PULS_RATE],
        "device_specializations": [{"term_code": 4103, "version": 1}],
        "unknown_flags": 0,
    }
    # Schedule: SpO2, measurement period FLOAT 1.0 s (10 x 10^-1), update interval 1.0 s.
    schedule = bytes.fromhex("b84b0200 0a0000ff 0a0000ff")
    assert decode_characteristic(0x2BF1, schedule)["flags"] == {
        "observation_type": MDC_PULS_OXIM_SAT_O2, "measurement_period_s": "1.0",
        "update_interval_s": "1.0"}
    assert decode_characteristic(0x2BF4, b"\x01")["flags"] == {
        "op_code": "start_send_live_observations", "operand": ""}
    assert decode_characteristic(0x2BF4, b"\x80")["flags"]["op_code"] == "success"
