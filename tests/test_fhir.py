"""FHIR mapping (PHD IG): golden resources, R4B validation, lossless round trip, identifiers, flags.

Validation uses fhir.resources' R4B models: version 8 defaults to R5 and ships no R4 package, and
R4B differs from R4 only outside the Observation / Device / Bundle elements used here.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import urllib.parse
import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.observation import Observation
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.errors import ModelError, VerifyError
from gateway.fhir import codes
from gateway.fhir import device as fhir_device
from gateway.fhir import observation as fhir
from gateway.fhir import vocab as fhir_vocab
from gateway.model import (
    INTERPRETATION_CODES,
    AbsentReason,
    Component,
    DeviceId,
    DeviceIdKind,
    Measurement,
    MeasurementStatus,
    TimeQuality,
)
from gateway.seal import cjson
from provider import fhir_read
from tests.factories import make_bp_measurement, make_gateway_info, make_measurement

GW = make_gateway_info()
OURS = "https://homecare-gateway.invalid/fhir"
MDC = "urn:iso:std:iso:11073:10101"
UCUM = "http://unitsofmeasure.org"
GATEWAY_REF = {
    "reference": "urn:uuid:ae29ade6-ee55-5bb9-b8de-8fa645b919db",
    "type": "Device",
    "identifier": {"system": f"{OURS}/sid/gateway", "value": "gw-test-0001"},
}
SUBJECT = {"type": "Patient", "identifier": {"system": f"{OURS}/sid/episode", "value": "ep-7f3a9c"}}
SYNCED_TAG = {
    "system": f"{OURS}/CodeSystem/time-quality",
    "code": "synced",
    "display": "effective time is the device's timestamp; device clock synchronised",
}
VITAL = [
    {
        "coding": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                "code": "vital-signs",
            }
        ]
    }
]


def _ext(name: str, key: str, value: str) -> dict[str, str]:
    return {"url": f"{OURS}/StructureDefinition/{name}", key: value}


def _qty(value: str, unit: str) -> dict[str, Any]:
    return {"value": Decimal(value), "unit": unit, "system": UCUM, "code": unit}


def _concept(mdc: int, ref_id: str, loinc: str, display: str, text: str) -> dict[str, Any]:
    return {
        "coding": [
            {"system": MDC, "code": str(mdc), "display": ref_id},
            {"system": "http://loinc.org", "code": loinc, "display": display},
        ],
        "text": text,
    }


GOLDEN_THERMOMETER = {
    "resourceType": "Observation",
    "meta": {"tag": [SYNCED_TAG]},
    "extension": [
        {
            "url": "http://hl7.org/fhir/StructureDefinition/observation-gatewayDevice",
            "valueReference": GATEWAY_REF,
        },
        _ext("received-at", "valueInstant", "2024-05-01T08:00:05.250000+00:00"),
        _ext("source", "valueString", "ble.health_thermometer"),
        _ext("raw-device-bytes", "valueBase64Binary", "AkwOAP7oBwUBCgAA"),
    ],
    "identifier": [
        {
            "system": f"{OURS}/sid/phd-observation",
            # device-patient-type-value-unit-timestamp(s since 2000 in wall time, +8 x 15 min)-supp-rec  # noqa: E501
            "value": "btmac:A4:C1:38:00:12:34-ep%2D7f3a9c-150364-36.60-Cel-767872800+8--",
        }
    ],
    "status": "final",
    "category": VITAL,
    "code": _concept(150364, "MDC_TEMP_BODY", "8310-5", "Body temperature", "Body temperature"),
    "subject": SUBJECT,
    "effectiveDateTime": "2024-05-01T10:00:00+02:00",
    "device": {
        "reference": "urn:uuid:cab4b5bf-33d5-5a7a-bec0-2cce07ed5c29",
        "type": "Device",
        "identifier": {
            "system": "http://hl7.org/fhir/sid/eui-48/bluetooth",
            "value": "A4-C1-38-00-12-34",
        },
    },
    "valueQuantity": _qty("36.60", "Cel"),
}

GOLDEN_BP = {
    "resourceType": "Observation",
    "meta": {"tag": [SYNCED_TAG]},
    "extension": [
        {
            "url": "http://hl7.org/fhir/StructureDefinition/observation-gatewayDevice",
            "valueReference": GATEWAY_REF,
        },
        _ext("received-at", "valueInstant", "2024-05-01T08:00:05.250000+00:00"),
        _ext("source", "valueString", "ble.blood_pressure"),
        _ext("unit", "valueCode", "mm[Hg]"),
        _ext("raw-device-bytes", "valueBase64Binary", "AngAUABdAOgHBQEKBQA="),
    ],
    "identifier": [
        {
            "system": f"{OURS}/sid/phd-observation",
            "value": "eui64:001C05FFFE007825-ep%2D7f3a9c-150020-;150021,120,mm[Hg];150022,80,mm[Hg];"  # noqa: E501
            "150023,93,mm[Hg]-mm[Hg]-767873100+8--",
        }
    ],
    "status": "final",
    "category": VITAL,
    "code": _concept(
        150020,
        "MDC_PRESS_BLD_NONINV",
        "85354-9",
        "Blood pressure panel with all children optional",
        "Blood pressure",
    ),
    "subject": SUBJECT,
    "effectiveDateTime": "2024-05-01T10:05:00+02:00",
    "device": {
        "reference": "urn:uuid:c40053da-a697-51fe-8ddd-cc63f70cbe5c",
        "type": "Device",
        "identifier": {
            "system": "urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680",
            "value": "00-1C-05-FF-FE-00-78-25",
        },
    },
    "component": [
        {
            "code": _concept(
                150021,
                "MDC_PRESS_BLD_NONINV_SYS",
                "8480-6",
                "Systolic blood pressure",
                "Systolic blood pressure",
            ),
            "valueQuantity": _qty("120", "mm[Hg]"),
        },
        {
            "code": _concept(
                150022,
                "MDC_PRESS_BLD_NONINV_DIA",
                "8462-4",
                "Diastolic blood pressure",
                "Diastolic blood pressure",
            ),
            "valueQuantity": _qty("80", "mm[Hg]"),
        },
        {
            "code": _concept(
                150023,
                "MDC_PRESS_BLD_NONINV_MEAN",
                "8478-0",
                "Mean blood pressure",
                "Mean blood pressure",
            ),
            "valueQuantity": _qty("93", "mm[Hg]"),
        },
    ],
}


def _wire(resource: dict[str, Any]) -> Any:
    """What the provider receives: the canonical JSON bytes, parsed back."""
    return cjson.loads(cjson.dumps(resource))


def _round_trip(m: Measurement, gw: fhir.GatewayInfo = GW) -> Measurement:
    obs, dev = _wire(fhir.observation(m, gw)), _wire(fhir_device.device_resource(m.device))
    return fhir_read.measurement_from_observation(obs, dev)


EXAMPLES = {
    "thermometer": make_measurement(),
    "blood-pressure": make_bp_measurement(),
    "nan": make_measurement(value=None, absent_reason=AbsentReason.NAN, raw=b""),
    "unsynced": make_measurement(time_quality=TimeQuality.UNSYNCED),
    "no-device-time": make_measurement(device_time=None, time_quality=TimeQuality.ABSENT),
    "test-data-early": make_measurement(
        status=MeasurementStatus.TEST_DATA | MeasurementStatus.EARLY_INDICATION
    ),
    "serial-glucose": make_measurement(
        device=DeviceId(DeviceIdKind.SERIAL, "POC-77|a,b$c\\d"),
        mdc_code=160184,
        value=Decimal("5.4"),
        unit="mmol/L",
        device_record_id=4_000_000_000,
        supplemental="x-y",
    ),
    "simulated-spo2": make_measurement(
        device=DeviceId(DeviceIdKind.SIM, "sim-oximeter-1"),
        mdc_code=150456,
        value=Decimal("97"),
        unit="%",
    ),
    "bp-with-absent-mean": make_bp_measurement(
        components=(
            Component(150021, Decimal("120"), "mm[Hg]"),
            Component(150022, Decimal("80"), "mm[Hg]"),
            Component(150023, None, "mm[Hg]", AbsentReason.NRES),
        )
    ),
}


# --- golden resources -----------------------------------------------------------------------------


def test_thermometer_observation_matches_golden() -> None:
    assert fhir.observation(make_measurement(), GW) == GOLDEN_THERMOMETER


def test_blood_pressure_observation_matches_golden() -> None:
    """Compound (IG PhdCompoundNumeric): no value[x], one component per part; unit in extension."""
    assert fhir.observation(make_bp_measurement(), GW) == GOLDEN_BP


def test_device_resources_follow_the_phd_ig() -> None:
    dev = fhir_device.device_resource(make_measurement().device)
    found = [(i["system"], i["value"], i["type"]["coding"][0]["code"]) for i in dev["identifier"]]
    assert found == [
        ("http://hl7.org/fhir/sid/eui-48/bluetooth", "A4-C1-38-00-12-34", "BTMAC"),
        ("urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680", "00-00-00-00-00-00-00-00", "SYSID"),
    ]
    assert dev["type"]["coding"][0]["code"] == "65573"  # MDC_MOC_VMS_MDS_SIMP
    serial = fhir_device.device_resource(DeviceId(DeviceIdKind.SERIAL, "AB123"))
    assert serial["serialNumber"] == "AB123"
    assert serial["identifier"][0]["type"]["coding"][0]["code"] == "SNO"


def test_gateway_device_is_a_phg_with_time_sync_property() -> None:
    phg = fhir_device.gateway_device(make_gateway_info(eui64="fe:ed:ab:ee:de:ad:77:c3"))
    assert phg["type"]["coding"][0]["code"] == "531981"  # MDC_MOC_VMS_MDS_AHD
    assert phg["identifier"][1] == {
        "type": {"coding": [{"system": fhir_vocab.CS_DEVICE_ID_TYPE, "code": "SYSID"}]},
        "system": "urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680",
        "value": "FE-ED-AB-EE-DE-AD-77-C3",
    }
    prop = phg["property"][0]
    assert prop["type"]["coding"][0]["code"] == "68220"  # MDC_TIME_SYNC_PROTOCOL
    assert prop["valueCode"][0]["coding"][0]["code"] == "532226"  # NTPv4
    assert phg["version"][0]["value"] == "0.1.0"


# --- validation against the R4B models ------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_observation_and_device_validate_as_fhir(name: str) -> None:
    m = EXAMPLES[name]
    obs = Observation.model_validate(_wire(fhir.observation(m, GW)))
    Device.model_validate(_wire(fhir_device.device_resource(m.device)))
    assert obs.status in {"final", "preliminary", "cancelled"}
    # obs-6, which fhir.resources does not enforce: dataAbsentReason only without a value.
    assert not (obs.valueQuantity is not None and obs.dataAbsentReason is not None)


def test_bundle_and_gateway_device_validate_as_fhir() -> None:
    Device.model_validate(_wire(fhir_device.gateway_device(make_gateway_info(eui64="0011223344556677"))))
    parsed = Bundle.model_validate(_wire(fhir.bundle(list(EXAMPLES.values()), GW)))
    assert parsed.type == "transaction"


# --- round trip -----------------------------------------------------------------------------------

_printable = st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=12)
_decimals = st.builds(
    lambda mant, exp: Decimal(mant).scaleb(exp), st.integers(-(2**23), 2**23), st.integers(-8, 6)
)
_units = st.sampled_from(["Cel", "mm[Hg]", "%", "/min", "kg", "mg/dL", "mmol/L", "{beat}/min"])
_offsets = st.builds(lambda minutes: timezone(timedelta(minutes=minutes)), st.integers(-840, 840))
# hypothesis takes naive bounds and attaches the time zones itself
_LOW, _HIGH = datetime(1990, 1, 1), datetime(2090, 1, 1)  # noqa: DTZ001
_aware = st.datetimes(min_value=_LOW, max_value=_HIGH, timezones=_offsets)
_devices = st.one_of(
    st.binary(min_size=6, max_size=6).map(lambda b: DeviceId(DeviceIdKind.BTMAC, b.hex(":"))),
    st.binary(min_size=8, max_size=8).map(lambda b: DeviceId(DeviceIdKind.EUI64, b.hex())),
    _printable.filter(str.strip).map(lambda s: DeviceId(DeviceIdKind.SERIAL, s)),
    _printable.filter(str.strip).map(lambda s: DeviceId(DeviceIdKind.SIM, s)),
)
_reading = st.one_of(  # (value, absent_reason)
    st.tuples(_decimals, st.none()), st.tuples(st.none(), st.sampled_from(AbsentReason))
)
_components = st.lists(
    st.builds(
        lambda code, r, unit: Component(code, r[0], unit, r[1]),
        st.sampled_from([150021, 150022, 150023, 149546]),
        _reading,
        _units,
    ),
    max_size=3,
)
_times = st.one_of(  # (device_time, time_quality)
    st.tuples(st.none(), st.just(TimeQuality.ABSENT)),
    st.tuples(_aware, st.sampled_from([TimeQuality.SYNCED, TimeQuality.UNSYNCED])),
)


_texts = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=40)
# (samples, sample_period_ms, text or coded value): most readings are plain numbers
_kinds = st.one_of(
    st.just(((), None, None)),
    st.tuples(
        st.lists(_decimals, min_size=1, max_size=20).map(tuple),
        _decimals.filter(lambda d: d > 0),
        st.none(),
    ),
    st.tuples(st.just(()), st.none(), _texts),
    st.tuples(st.just(()), st.none(), st.integers(1, 2**32 - 1)),
)


@st.composite
def measurements(draw: st.DrawFn) -> Measurement:
    samples, period, text_or_code = draw(_kinds)
    text = text_or_code if isinstance(text_or_code, str) else None
    code = text_or_code if isinstance(text_or_code, int) else None
    special = bool(samples) or text_or_code is not None
    components = tuple(draw(_components)) if not special else ()
    # A compound reading may carry no top-level value of its own.
    value, absent = draw(_reading if not components else st.one_of(_reading, st.just((None, None))))
    if special:
        value, absent = None, None
    device_time, quality = draw(_times)
    return Measurement(
        device=draw(_devices),
        mdc_code=draw(st.one_of(st.sampled_from(sorted(codes.CODES)), st.integers(1, 2**32 - 1))),
        value=value,
        unit=draw(_units),
        absent_reason=absent,
        components=components,
        received_at=draw(st.datetimes(min_value=_LOW, max_value=_HIGH, timezones=st.just(UTC))),
        device_time=device_time,
        time_quality=quality,
        source=draw(_printable),
        raw=draw(st.binary(max_size=24)),
        status=MeasurementStatus(draw(st.integers(0, 0xFFFF))),
        device_record_id=draw(st.none() | st.integers(-(2**40), 2**40)),
        supplemental=draw(st.just("") | _printable),
        interpretation=tuple(
            draw(st.lists(st.sampled_from(sorted(INTERPRETATION_CODES)), max_size=3))
        ),
        samples=samples,
        sample_period_ms=period,
        text=text,
        value_code=code,
    )


@given(measurements())
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_observation_round_trips_through_canonical_json(m: Measurement) -> None:
    """Every field, decimal precision included, comes back: nothing is altered on the way."""
    assert _round_trip(m) == m


@given(measurements())
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_generated_observations_validate_as_fhir(m: Measurement) -> None:
    Observation.model_validate(_wire(fhir.observation(m, GW)))


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_examples_round_trip(name: str) -> None:
    assert _round_trip(EXAMPLES[name]) == EXAMPLES[name]


def test_bundle_round_trips_every_measurement_in_order() -> None:
    ms = [*EXAMPLES.values(), EXAMPLES["thermometer"]]  # a repeated reading is kept, not dropped
    assert fhir_read.measurements_from_bundle(_wire(fhir.bundle(ms, GW))) == ms


def test_precision_is_kept_in_the_canonical_bytes() -> None:
    data = cjson.dumps(fhir.observation(make_measurement(value=Decimal("2.00")), GW))
    assert b'"value":2.00}' in data
    assert _round_trip(make_measurement(value=Decimal("2.00"))).value == Decimal("2.00")
    assert _round_trip(make_measurement(value=Decimal("2.00"))) != make_measurement(
        value=Decimal("2.0")
    )


def test_float_values_are_refused_on_the_provider_side() -> None:
    obs = _wire(fhir.observation(make_measurement(), GW))
    obs["valueQuantity"]["value"] = 36.6
    dev = fhir_device.device_resource(make_measurement().device)
    with pytest.raises(fhir_vocab.FhirMappingError, match="exact decimal"):
        fhir_read.measurement_from_observation(obs, dev)


# --- identifier and time --------------------------------------------------------------------------


def _identifier(m: Measurement) -> str:
    value: str = fhir.observation(m, GW)["identifier"][0]["value"]
    return value


def test_identifier_uses_device_time_not_reception_time() -> None:
    later = make_measurement(received_at=datetime(2024, 5, 3, 9, 0, tzinfo=UTC))
    assert _identifier(later) == _identifier(make_measurement())
    moved = make_measurement(device_time=datetime(2024, 5, 1, 10, 0, 1, tzinfo=UTC))
    assert _identifier(moved) != _identifier(make_measurement())


def test_identifier_is_deterministic_and_falls_back_to_reception_time() -> None:
    absent = make_measurement(device_time=None, time_quality=TimeQuality.ABSENT)
    assert _identifier(absent) == _identifier(absent)
    assert _identifier(absent).endswith("-rx767865605.25+0--")


def test_identifier_fields_cannot_run_into_each_other() -> None:
    """'-' inside a field is escaped: a collision would make the server drop a distinct reading."""
    a = make_measurement(supplemental="a-b", device_record_id=None)
    b = make_measurement(supplemental="a", device_record_id=None)
    c = make_measurement(supplemental="a", device_record_id=-5)
    assert len({_identifier(a), _identifier(b), _identifier(c)}) == 3
    assert _identifier(make_measurement(value=Decimal("-1"))).count("-") == 7


def test_identifier_distinguishes_precision_and_record_id() -> None:
    assert _identifier(make_measurement(value=Decimal("2.0"))) != _identifier(
        make_measurement(value=Decimal("2.00"))
    )
    assert _identifier(make_measurement(device_record_id=1)) != _identifier(
        make_measurement(device_record_id=2)
    )


def test_unsynced_device_time_is_kept_and_flagged() -> None:
    obs = fhir.observation(make_measurement(time_quality=TimeQuality.UNSYNCED), GW)
    assert obs["effectiveDateTime"] == "2024-05-01T10:00:00+02:00"
    assert [t["code"] for t in obs["meta"]["tag"]] == ["unsynced"]


def test_missing_device_time_uses_reception_time_and_is_flagged() -> None:
    obs = fhir.observation(make_measurement(device_time=None, time_quality=TimeQuality.ABSENT), GW)
    assert obs["effectiveDateTime"] == "2024-05-01T08:00:05.250000+00:00"
    assert [t["code"] for t in obs["meta"]["tag"]] == ["absent"]


def test_naive_device_time_is_refused_not_guessed() -> None:
    """The model refuses it at construction, before any mapping could guess a zone."""
    with pytest.raises(ModelError, match="timezone-aware"):
        make_measurement(device_time=datetime(2024, 5, 1, 10, 0))  # noqa: DTZ001 - the point


# --- status, absence, test data -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "fhir_status"),
    [
        (MeasurementStatus.NONE, "final"),
        (MeasurementStatus.QUESTIONABLE | MeasurementStatus.VALIDATED, "final"),
        (MeasurementStatus.EARLY_INDICATION, "preliminary"),
        (MeasurementStatus.MEASUREMENT_ONGOING, "preliminary"),
        (MeasurementStatus.CALIBRATION_ONGOING, "preliminary"),
        (MeasurementStatus.INVALID | MeasurementStatus.EARLY_INDICATION, "cancelled"),
    ],
)
def test_measurement_status_sets_observation_status(
    status: MeasurementStatus, fhir_status: str
) -> None:
    assert fhir.observation(make_measurement(status=status), GW)["status"] == fhir_status


def test_status_bits_become_interpretations_with_the_ig_codes() -> None:
    m = make_measurement(status=MeasurementStatus.QUESTIONABLE | MeasurementStatus(1 << 14))
    assert fhir.observation(m, GW)["interpretation"] == [
        {
            "coding": [
                {"system": fhir_vocab.CS_STATUS, "code": "questionable"},
                {"system": fhir_vocab.CS_POCD_STATUS, "code": "questionable"},
            ]
        },
        {
            "coding": [
                {"system": fhir_vocab.CS_STATUS, "code": "msmt-value-exceed-boundaries"},
                {"system": fhir_vocab.CS_POCD_STATUS, "code": "in-alarm"},
            ]
        },
    ]


def test_the_devices_own_judgement_follows_the_status_bits_as_v3_interpretation() -> None:
    """An analyser's abnormal flags reach the provider as HL7 v3 ObservationInterpretation codes,
    in the order sent, after the status-bit concepts."""
    m = make_measurement(status=MeasurementStatus.QUESTIONABLE, interpretation=("HH", "A"))
    assert fhir.observation(m, GW)["interpretation"][1:] == [
        {"coding": [{"system": fhir_vocab.CS_V3_INTERPRETATION, "code": "HH"}]},
        {"coding": [{"system": fhir_vocab.CS_V3_INTERPRETATION, "code": "A"}]},
    ]
    assert _round_trip(m) == m
    Observation.model_validate(_wire(fhir.observation(m, GW)))


def test_no_interpretation_element_without_status_bits_or_flags() -> None:
    assert "interpretation" not in fhir.observation(make_measurement(), GW)


@pytest.mark.parametrize(
    ("reason", "dar"),
    [
        (AbsentReason.NAN, "not-a-number"),
        (AbsentReason.POSITIVE_INFINITY, "positive-infinity"),
        (AbsentReason.SENSOR_OFF, "not-performed"),
    ],
)
def test_absent_value_becomes_data_absent_reason(reason: AbsentReason, dar: str) -> None:
    obs = fhir.observation(make_measurement(value=None, absent_reason=reason), GW)
    assert "valueQuantity" not in obs
    assert [c["code"] for c in obs["dataAbsentReason"]["coding"]] == [dar, reason.value]


@pytest.mark.parametrize("status", [MeasurementStatus.TEST_DATA, MeasurementStatus.DEMO_DATA])
def test_test_and_demo_data_are_marked_htest(status: MeasurementStatus) -> None:
    obs = fhir.observation(make_measurement(status=status), GW)
    assert obs["meta"]["security"] == [
        {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
            "code": "HTEST",
            "display": "test health data",
        }
    ]
    assert "security" not in fhir.observation(make_measurement(), GW)["meta"]


def test_simulated_devices_readings_are_marked_test_data() -> None:
    m = EXAMPLES["simulated-spo2"]
    assert fhir.observation(m, GW)["meta"]["security"][0]["code"] == "HTEST"
    assert fhir_device.device_resource(m.device)["meta"]["security"][0]["code"] == "HTEST"


# --- bundle ---------------------------------------------------------------------------------------


def test_bundle_is_a_transaction_of_conditional_creates() -> None:
    ms = [make_measurement(), make_bp_measurement(), make_measurement(value=Decimal("37"))]
    b = fhir.bundle(ms, GW)
    assert b["type"] == "transaction"
    kinds = [e["resource"]["resourceType"] for e in b["entry"]]
    assert kinds == ["Device", "Device", "Device", "Observation", "Observation", "Observation"]
    assert b["entry"][0]["request"] == {
        "method": "POST",
        "url": "Device",
        "ifNoneExist": f"identifier={OURS}/sid/gateway|gw-test-0001",
    }
    first = b["entry"][3]
    assert first["request"]["ifNoneExist"] == (
        f"identifier={OURS}/sid/phd-observation|btmac:A4:C1:38:00:12:34-ep%252D7f3a9c-150364-36.60"
        "-Cel-767872800%2B8--"
    )
    urls = {e["fullUrl"] for e in b["entry"]}
    assert len(urls) == 6
    assert all(u.startswith("urn:uuid:") for u in urls)
    for e in b["entry"][3:]:  # every reference resolves inside the bundle
        assert e["resource"]["device"]["reference"] in urls
        gateway = e["resource"]["extension"][0]["valueReference"]
        assert gateway["reference"] == b["entry"][0]["fullUrl"]


def test_bundle_bytes_are_deterministic() -> None:
    ms = list(EXAMPLES.values())
    again = fhir.bundle(list(ms), make_gateway_info())
    assert cjson.dumps(fhir.bundle(ms, GW)) == cjson.dumps(again)


def test_if_none_exist_escapes_search_and_url_characters() -> None:
    b = fhir.bundle([EXAMPLES["serial-glucose"]], GW)
    assert b["entry"][1]["request"]["ifNoneExist"] == (
        f"identifier={OURS}/sid/device-serial|POC-77%5C|a%5C%2Cb%5C%24c%5C%5Cd"
    )


# --- provider side: bad input ---------------------------------------------------------------------


def _good() -> tuple[Any, Any]:
    m = EXAMPLES["blood-pressure"]
    return _wire(fhir.observation(m, GW)), _wire(fhir_device.device_resource(m.device))


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda o, d: o.pop("effectiveDateTime"), "Observation.effectiveDateTime"),
        (lambda o, d: o.update(effectiveDateTime="2024-05-01T10:05:00"), "effectiveDateTime"),
        (
            lambda o, d: o["extension"][1].update(valueInstant="0001-01-01T00:00:00+01:00"),
            "received-at",
        ),
        (lambda o, d: o["component"][0]["valueQuantity"].update(value="120"), "component[0]"),
        (
            lambda o, d: o.update(
                status="final",
                interpretation=[{"coding": [{"system": fhir_vocab.CS_STATUS, "code": "invalid"}]}],
            ),
            "Observation.status",
        ),
        (lambda o, d: o["meta"].update(tag=[]), "Observation.meta.tag"),
        (lambda o, d: o["meta"].update(security=[fhir_vocab.HTEST]), "Observation.meta"),
        (lambda o, d: o["identifier"][0].update(value="x"), "Observation.identifier"),
        (
            lambda o, d: o["component"][1]["valueQuantity"].update(value=Decimal(81)),
            "Observation.identifier",
        ),
        (
            lambda o, d: d["identifier"][0].update(value="00-00-00-00-00-00-00-01"),
            "Observation.device",
        ),
        (lambda o, d: d.update(identifier="nope"), "Device.identifier"),
        (lambda o, d: o["extension"].append(o["extension"][0]), "Observation"),
        (lambda o, d: o["extension"][4].update(valueBase64Binary="!!"), "raw-device-bytes"),
    ],
)
def test_bad_observation_raises_fhir_mapping_error(mutate: Any, where: str) -> None:
    obs, dev = _good()
    mutate(obs, dev)
    with pytest.raises(fhir_vocab.FhirMappingError) as info:
        fhir_read.measurement_from_observation(obs, dev)
    assert where in info.value.where
    assert isinstance(info.value, VerifyError)
    assert info.value.reason == "fhir-mapping"


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    keys: list[Any] = (
        list(node)
        if isinstance(node, dict)
        else list(range(len(node)))
        if isinstance(node, list)
        else []
    )
    out = [prefix] if prefix else []
    for key in keys:
        out += _paths(node[key], (*prefix, key))
    return out


JUNK: list[Any] = [
    None,
    0,
    -1,
    1.5,
    True,
    "",
    "x",
    [],
    {},
    [{}],
    "nan",
    "bit-7",
    "2024-13-01T00:00:00Z",
    "9999-12-31T23:59:59-01:00",
]


@given(st.data())
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_any_corruption_raises_only_fhir_mapping_error(data: st.DataObject) -> None:
    """Fuzz: replace or delete any node of a bundle; the result is a Measurement list or a typed
    error, never KeyError / TypeError / AttributeError."""
    b = _wire(fhir.bundle([EXAMPLES["blood-pressure"], EXAMPLES["test-data-early"]], GW))
    path = data.draw(st.sampled_from(_paths(b)))
    parent = b
    for key in path[:-1]:
        parent = parent[key]
    if isinstance(parent, dict) and data.draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = data.draw(st.sampled_from(JUNK))
    with contextlib.suppress(fhir_vocab.FhirMappingError):
        fhir_read.measurements_from_bundle(copy.deepcopy(b))


def test_bundle_with_dangling_device_reference_is_refused() -> None:
    b = _wire(fhir.bundle([make_measurement()], GW))
    del b["entry"][1]
    with pytest.raises(fhir_vocab.FhirMappingError, match="does not resolve"):
        fhir_read.measurements_from_bundle(b)


def test_gateway_info_rejects_blank_fields_and_normalises_eui64() -> None:
    with pytest.raises(Exception, match="episode_id"):
        make_gateway_info(episode_id=" ")
    assert make_gateway_info(eui64="fe-ed-ab-ee-de-ad-77-c3").eui64 == "FEEDABEEDEAD77C3"


@given(st.lists(st.text(max_size=40), min_size=1, max_size=5))
def test_urns_are_rfc_9562_version_5_uuids(parts: list[str]) -> None:
    expected = uuid.uuid5(fhir_vocab.NAMESPACE, "|".join(parts))
    assert fhir_vocab.urn(*parts) == f"urn:uuid:{expected}"


@given(st.lists(measurements(), min_size=1, max_size=3))
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_bundles_encode_identically_on_the_fast_path(ms: list[Measurement]) -> None:
    bundle = fhir.bundle(ms, GW)
    assert cjson.dumps(bundle, float_free=True) == cjson.dumps_reference(bundle)


# --- sample arrays and text (Generic Health Sensor) -----------------------------------------------

CURVE = make_measurement(
    mdc_code=codes.MDC_VOL_AWAY, value=None, unit="L",
    samples=(Decimal("0.39"), Decimal("0.76"), Decimal("1.10"), Decimal("4.05")),
    sample_period_ms=Decimal(100),
)
NOTE = make_measurement(mdc_code=0x0002_F001, value=None, unit="1", text="effort: poor")


def test_a_sample_array_is_sampled_data_with_the_exact_values() -> None:
    """PHD IG: sample arrays as SampledData; origin 0 in the unit, the period in ms, the values
    as sent (1.10 keeps its trailing zero) - and back to the very same Measurement."""
    obs = _wire(fhir.observation(CURVE, GW))
    assert obs["valueSampledData"] == {
        "origin": {"value": 0, "unit": "L", "system": codes.UCUM_SYSTEM, "code": "L"},
        "period": 100, "dimensions": 1, "data": "0.39 0.76 1.10 4.05"}
    assert "valueQuantity" not in obs
    assert "component" not in obs
    Observation.model_validate(obs)
    assert _round_trip(CURVE) == CURVE


def test_a_text_observation_is_value_string() -> None:
    obs = _wire(fhir.observation(NOTE, GW))
    assert obs["valueString"] == "effort: poor"
    Observation.model_validate(obs)
    assert _round_trip(NOTE) == NOTE


def test_a_coded_value_is_value_codeable_concept_with_its_mdc_coding() -> None:
    coded = make_measurement(mdc_code=8410608, value=None, unit="1", value_code=196848)
    obs = _wire(fhir.observation(coded, GW))
    assert obs["valueCodeableConcept"]["coding"] == [
        {"system": codes.MDC_SYSTEM, "code": "196848"}]
    Observation.model_validate(obs)
    assert _round_trip(coded) == coded
    other = dataclasses.replace(coded, value_code=196846)
    assert fhir.observation_identifier(coded, "ep") != fhir.observation_identifier(other, "ep")


def test_sample_arrays_and_texts_that_differ_get_different_identifiers() -> None:
    other = dataclasses.replace(CURVE, samples=(*CURVE.samples[:-1], Decimal("4.050")))  # precision
    slower = dataclasses.replace(CURVE, sample_period_ms=Decimal(200))
    idents = {fhir.observation_identifier(m, "ep") for m in (CURVE, other, slower, NOTE,
                                                               dataclasses.replace(NOTE, text="x"))}
    assert len(idents) == 5


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda d: d.update(factor=2), "origin 0"),
        (lambda d: d.update(data="0.39 E 1.10"), "decimals only"),
        (lambda d: d.update(period=100.5), "exact decimal"),
        (lambda d: d["origin"].update(value=1), "origin 0"),
    ],
)
def test_sampled_data_we_did_not_write_is_refused(change: Any, problem: str) -> None:
    obs = _wire(fhir.observation(CURVE, GW))
    change(obs["valueSampledData"])
    dev = fhir_device.device_resource(CURVE.device)
    with pytest.raises(fhir_vocab.FhirMappingError, match=problem):
        fhir_read.measurement_from_observation(obs, dev)


@pytest.mark.parametrize(
    "fields",
    [
        {"samples": (Decimal(1),)},  # no period
        {"samples": (Decimal(1),), "sample_period_ms": Decimal(0)},
        {"samples": (Decimal(1),), "sample_period_ms": Decimal(1), "value": Decimal(1)},
        {"text": ""},
        {"text": "a", "samples": (Decimal(1),), "sample_period_ms": Decimal(1)},
        {"sample_period_ms": Decimal(1)},
        {"value_code": 0},
        {"value_code": 5, "text": "a"},
    ],
)
def test_inconsistent_sample_arrays_and_texts_are_model_errors(fields: dict[str, Any]) -> None:
    base: dict[str, Any] = {"value": None}
    with pytest.raises(ModelError):
        make_measurement(**(base | fields))


@given(st.text(max_size=60), st.sampled_from([":/[]{}^*'!+@", ":/|", ""]))
@settings(max_examples=500)
def test_the_fast_percent_encoder_writes_exactly_what_urllib_quote_writes(
    text: str, safe: str
) -> None:
    """Identifiers and ifNoneExist go through our encoder for speed; the bytes must not change."""
    try:
        expected = urllib.parse.quote(text, safe=safe)
    except UnicodeEncodeError:  # a lone surrogate: both refuse it
        with pytest.raises(UnicodeEncodeError):
            fhir.percent_encoder(safe)(text)
        return
    assert fhir.percent_encoder(safe)(text) == expected
