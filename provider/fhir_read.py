"""Provider side of the FHIR mapping: Observations back into the exact Measurements sent.

The inverse of :mod:`gateway.fhir.observation`. It checks what it reads (identifier, status, test
marking must
agree with the reading) and raises ``FhirMappingError`` (a ``VerifyError``) on anything else, so a
receiver never turns a malformed Bundle into a plausible-looking but wrong reading.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from gateway.errors import ModelError
from gateway.fhir import codes
from gateway.fhir.device import device_ref
from gateway.fhir.observation import observation_identifier
from gateway.fhir.vocab import (  # the shared vocabulary of both directions
    CS_ABSENT,
    CS_STATUS,
    CS_TIME_QUALITY,
    CS_V3_INTERPRETATION,
    EXT_GATEWAY,
    EXT_RAW,
    EXT_RECEIVED_AT,
    EXT_RECORD_ID,
    EXT_SOURCE,
    EXT_SUPPLEMENTAL,
    EXT_UNIT,
    HTEST,
    SID_BTMAC,
    SID_OBSERVATION,
    SID_SERIAL,
    SID_SIM,
    SID_SYSID,
    STATUS_BITS,
    FhirMappingError,
    fhir_status,
    is_test,
)
from gateway.model import (
    AbsentReason,
    Component,
    DeviceId,
    DeviceIdKind,
    Measurement,
    MeasurementStatus,
    TimeQuality,
)


def _obj(node: object, where: str) -> Mapping[str, Any]:
    if not isinstance(node, Mapping):
        raise FhirMappingError("expected a JSON object", where=where)
    return node


def _list(node: object, where: str) -> Sequence[Any]:
    if not isinstance(node, list):
        raise FhirMappingError("expected a JSON array", where=where)
    return node


def _str(node: object, where: str) -> str:
    if not isinstance(node, str) or not node:
        raise FhirMappingError("expected a non-empty string", where=where)
    return node


def _need(obj: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in obj:
        raise FhirMappingError("missing", where=f"{where}.{key}")
    return obj[key]


def _extensions(obj: Mapping[str, Any], where: str) -> dict[str, Mapping[str, Any]]:
    out: dict[str, Mapping[str, Any]] = {}
    for i, node in enumerate(_list(obj.get("extension", []), f"{where}.extension")):
        ext = _obj(node, f"{where}.extension[{i}]")
        url = _str(ext.get("url"), f"{where}.extension[{i}].url")
        if url in out:
            raise FhirMappingError(f"extension {url} repeated", where=where)
        out[url] = ext
    return out


def _ext_value(exts: Mapping[str, Mapping[str, Any]], url: str, key: str, where: str) -> str | None:
    ext = exts.get(url)
    return None if ext is None else _str(ext.get(key), f"{where}.extension({url}).{key}")


def _time(node: object, where: str) -> datetime:
    try:
        t = datetime.fromisoformat(_str(node, where))
    except ValueError:
        raise FhirMappingError("not an ISO 8601 date-time", where=where) from None
    if t.tzinfo is None:
        raise FhirMappingError("date-time without a UTC offset", where=where)
    try:
        t.astimezone(UTC)  # year 1 / 9999 with an offset has no UTC equivalent in Python
    except OverflowError:
        raise FhirMappingError("date-time out of range", where=where) from None
    return t


def _codes_in(concept: object, system: str, where: str) -> list[str]:
    coding = _list(_obj(concept, where).get("coding", []), f"{where}.coding")
    return [
        _str(_obj(c, f"{where}.coding").get("code"), f"{where}.coding.code")
        for c in coding
        if _obj(c, f"{where}.coding").get("system") == system
    ]


def _mdc_code(concept: object, where: str) -> int:
    found = _codes_in(concept, codes.MDC_SYSTEM, where)
    if len(found) != 1 or not found[0].isdigit():
        raise FhirMappingError("needs exactly one numeric MDC coding", where=where)
    return int(found[0])


def _value_of(
    obj: Mapping[str, Any], where: str
) -> tuple[Decimal | None, AbsentReason | None, str]:
    exts = _extensions(obj, where)
    quantity, dar = obj.get("valueQuantity"), obj.get("dataAbsentReason")
    if quantity is not None:
        q = _obj(quantity, f"{where}.valueQuantity")
        if dar is not None or EXT_UNIT in exts or q.get("system") != codes.UCUM_SYSTEM:
            raise FhirMappingError("valueQuantity needs UCUM and excludes any absence", where=where)
        number = _need(q, "value", f"{where}.valueQuantity")
        # A float has already lost the transmitted precision (2.00 -> 2.0): refuse it.
        if isinstance(number, bool) or not isinstance(number, int | Decimal):
            raise FhirMappingError("value must be an exact decimal", where=f"{where}.valueQuantity")
        return Decimal(number), None, _str(q.get("code"), f"{where}.valueQuantity.code")
    unit = _ext_value(exts, EXT_UNIT, "valueCode", where)
    if unit is None:
        raise FhirMappingError("no valueQuantity and no unit extension", where=where)
    if dar is None:
        return None, None, unit
    found = _codes_in(dar, CS_ABSENT, f"{where}.dataAbsentReason")
    try:
        (absent,) = (AbsentReason(code) for code in found)
    except ValueError:  # none, several, or an unknown code
        raise FhirMappingError(
            "needs one known absent-reason coding", where=f"{where}.dataAbsentReason"
        ) from None
    return None, absent, unit


# samples, sample period (ms), text, coded value, unit
_SampledOrText = tuple[tuple[Decimal, ...], Decimal | None, str | None, int | None, str]


def _decimal(number: object, where: str) -> Decimal:
    # A float has already lost the transmitted precision (2.00 -> 2.0): refuse it.
    if isinstance(number, bool) or not isinstance(number, int | Decimal):
        raise FhirMappingError("must be an exact decimal", where=where)
    return Decimal(number)


def _sampled_or_text(obs: Mapping[str, Any], where: str) -> _SampledOrText | None:
    """(samples, period ms, text, code, unit) of a valueSampledData / valueString /
    valueCodeableConcept, None otherwise."""
    sampled, text = obs.get("valueSampledData"), obs.get("valueString")
    concept = obs.get("valueCodeableConcept")
    given = [v for v in (sampled, text, concept) if v is not None]
    if not given:
        return None
    if "valueQuantity" in obs or "dataAbsentReason" in obs or "component" in obs or len(given) > 1:
        raise FhirMappingError("a sample array, text or code excludes any other value", where=where)
    if text is not None or concept is not None:
        unit = _ext_value(_extensions(obs, where), EXT_UNIT, "valueCode", where)
        if unit is None:
            raise FhirMappingError("a text or code without the unit extension", where=where)
        if concept is not None:
            code = _mdc_code(concept, f"{where}.valueCodeableConcept")
            return (), None, None, code, unit
        return (), None, _str(text, f"{where}.valueString"), None, unit
    at = f"{where}.valueSampledData"
    data = _obj(sampled, at)
    origin = _obj(_need(data, "origin", at), f"{at}.origin")
    if (
        origin.get("system") != codes.UCUM_SYSTEM
        or _decimal(_need(origin, "value", f"{at}.origin"), f"{at}.origin.value") != 0
        or data.get("dimensions") != 1
        or set(data) - {"origin", "period", "dimensions", "data"}
    ):
        raise FhirMappingError("only origin 0 (UCUM), one dimension, no factor or limits", where=at)
    period = _decimal(_need(data, "period", at), f"{at}.period")
    tokens = _str(_need(data, "data", at), f"{at}.data").split(" ")
    try:
        samples = tuple(Decimal(t) for t in tokens)
    except ArithmeticError:  # decimal.InvalidOperation: "E", "L", "U" or garbage
        raise FhirMappingError("data must be decimals only", where=f"{at}.data") from None
    return samples, period, None, None, _str(origin.get("code"), f"{at}.origin.code")


def _status_of(obs: Mapping[str, Any]) -> MeasurementStatus:
    bits = 0
    for i, concept in enumerate(_list(obs.get("interpretation", []), "Observation.interpretation")):
        for code in _codes_in(concept, CS_STATUS, f"Observation.interpretation[{i}]"):
            match = re.fullmatch(r"bit-([0-9]{1,3})", code)
            bit = STATUS_BITS.get(code, int(match.group(1)) if match else None)
            if bit is None:
                raise FhirMappingError(
                    f"unknown status code {code!r}", where=f"Observation.interpretation[{i}]"
                )
            bits |= 1 << bit
    return MeasurementStatus(bits)


def _interpretation_of(obs: Mapping[str, Any]) -> tuple[str, ...]:
    """The device's own judgement of the result (v3 ObservationInterpretation), in order."""
    found: list[str] = []
    for i, concept in enumerate(_list(obs.get("interpretation", []), "Observation.interpretation")):
        found += _codes_in(concept, CS_V3_INTERPRETATION, f"Observation.interpretation[{i}]")
    return tuple(found)


def device_id_from_resource(device: object) -> DeviceId:
    """The DeviceId a PHD Device resource (from ``device_resource``) identifies."""
    res = _obj(device, "Device")
    if res.get("resourceType") != "Device":
        raise FhirMappingError("not a Device", where="Device.resourceType")
    found: dict[str, str] = {}
    for i, node in enumerate(_list(_need(res, "identifier", "Device"), "Device.identifier")):
        ident = _obj(node, f"Device.identifier[{i}]")
        system = _str(ident.get("system"), f"Device.identifier[{i}].system")
        found[system] = _str(ident.get("value"), f"Device.identifier[{i}].value")
    kinds = {
        SID_BTMAC: DeviceIdKind.BTMAC,
        SID_SERIAL: DeviceIdKind.SERIAL,
        SID_SIM: DeviceIdKind.SIM,
    }
    named = [(kind, found[system]) for system, kind in kinds.items() if system in found]
    if not named and SID_SYSID in found:
        named = [(DeviceIdKind.EUI64, found[SID_SYSID])]
    if len(named) != 1:
        raise FhirMappingError("needs exactly one device identity", where="Device.identifier")
    try:
        return DeviceId(*named[0])
    except ModelError as exc:
        raise FhirMappingError(exc.message, where="Device.identifier") from None


def measurement_from_observation(
    obs: object, device: object, *, test_episode: bool = False
) -> Measurement:
    """The Measurement an Observation (from ``observation``) carries; ``device`` is its PHD.
    ``test_episode``: the Bundle was labelled HTEST (every Observation must then be too)."""
    o = _obj(obs, "Observation")
    if o.get("resourceType") != "Observation":
        raise FhirMappingError("not an Observation", where="Observation.resourceType")
    device_id = device_id_from_resource(device)
    ref = _obj(_need(o, "device", "Observation"), "Observation.device")
    if ref.get("identifier") != device_ref(device_id)["identifier"]:
        raise FhirMappingError("does not identify the Device given", where="Observation.device")
    exts = _extensions(o, "Observation")
    tags = _codes_in(
        {"coding": _obj(o.get("meta", {}), "Observation.meta").get("tag", [])},
        CS_TIME_QUALITY,
        "Observation.meta.tag",
    )
    try:
        (quality,) = (TimeQuality(code) for code in tags)
    except ValueError:
        raise FhirMappingError("needs one time-quality tag", where="Observation.meta.tag") from None
    effective = _time(_need(o, "effectiveDateTime", "Observation"), "Observation.effectiveDateTime")
    received_at = _time(
        _ext_value(exts, EXT_RECEIVED_AT, "valueInstant", "Observation"),
        "Observation.extension(received-at)",
    )
    if quality is TimeQuality.ABSENT and effective != received_at:
        raise FhirMappingError(
            "without a device time it must be the reception time",
            where="Observation.effectiveDateTime",
        )
    record = _ext_value(exts, EXT_RECORD_ID, "valueString", "Observation")
    if record is not None and not re.fullmatch(r"-?[0-9]+", record):
        raise FhirMappingError("not an integer", where="Observation.extension(device-record-id)")
    raw = _ext_value(exts, EXT_RAW, "valueBase64Binary", "Observation")
    try:
        raw_bytes = b"" if raw is None else base64.b64decode(raw, validate=True)
    except binascii.Error:
        where = "Observation.extension(raw-device-bytes)"
        raise FhirMappingError("bad base64", where=where) from None
    special = _sampled_or_text(o, "Observation")
    samples: tuple[Decimal, ...] = ()
    period: Decimal | None = None
    text: str | None = None
    value_code: int | None = None
    if special is None:
        value, absent, unit = _value_of(o, "Observation")
    else:
        (samples, period, text, value_code, unit), value, absent = special, None, None
    status = _status_of(o)
    episode = _str(
        _obj(
            _obj(_need(o, "subject", "Observation"), "Observation.subject").get("identifier"),
            "Observation.subject.identifier",
        ).get("value"),
        "Observation.subject.identifier.value",
    )
    try:
        components = tuple(
            _component_of(c, f"Observation.component[{i}]")
            for i, c in enumerate(_list(o.get("component", []), "Observation.component"))
        )
        m = Measurement(
            device=device_id,
            mdc_code=_mdc_code(_need(o, "code", "Observation"), "Observation.code"),
            value=value,
            unit=unit,
            received_at=received_at,
            source=_ext_value(exts, EXT_SOURCE, "valueString", "Observation") or "",
            raw=raw_bytes,
            absent_reason=absent,
            device_time=None if quality is TimeQuality.ABSENT else effective,
            time_quality=quality,
            status=status,
            components=components,
            device_record_id=None if record is None else int(record),
            supplemental=_ext_value(exts, EXT_SUPPLEMENTAL, "valueString", "Observation") or "",
            interpretation=_interpretation_of(o),
            samples=samples,
            sample_period_ms=period,
            text=text,
            value_code=value_code,
        )
    except ModelError as exc:
        raise FhirMappingError(exc.message, where="Observation") from None
    _check_consistent(o, m, episode, test_episode=test_episode)
    return m


def _component_of(node: object, where: str) -> Component:
    comp = _obj(node, where)
    value, absent, unit = _value_of(comp, where)
    code = _mdc_code(_need(comp, "code", where), f"{where}.code")
    return Component(code, value, unit, absent_reason=absent)


def _check_consistent(
    o: Mapping[str, Any], m: Measurement, episode: str, *, test_episode: bool
) -> None:
    """Elements derived from the measurement must match it: a mismatch means tampering or a
    mapping bug, and silently preferring either side could hide an altered reading."""
    ids = [
        _obj(i, "Observation.identifier")
        for i in _list(o.get("identifier"), "Observation.identifier")
    ]
    expected = observation_identifier(m, episode)
    if [(i.get("system"), i.get("value")) for i in ids] != [(SID_OBSERVATION, expected)]:
        raise FhirMappingError("does not match the reading", where="Observation.identifier")
    if o.get("status") != fhir_status(m.status):
        raise FhirMappingError("does not match the measurement status", where="Observation.status")
    security = _obj(o.get("meta"), "Observation.meta").get("security", [])
    expected_test = test_episode or is_test(m.status, m.device)
    if (HTEST in _list(security, "Observation.meta.security")) != expected_test:
        raise FhirMappingError("test-data marking does not match", where="Observation.meta")


def _resolve(by_url: Mapping[str, Mapping[str, Any]], ref: object, where: str) -> Mapping[str, Any]:
    target = by_url.get(_str(_obj(ref, where).get("reference"), f"{where}.reference"))
    if target is None or target.get("resourceType") != "Device":
        raise FhirMappingError("does not resolve to a Device in the Bundle", where=where)
    return target


def measurements_from_bundle(bundle: object) -> list[Measurement]:
    """Every Measurement of a transaction Bundle from ``bundle``, in entry order."""
    b = _obj(bundle, "Bundle")
    if b.get("resourceType") != "Bundle" or b.get("type") != "transaction":
        raise FhirMappingError("not a transaction Bundle", where="Bundle")
    by_url: dict[str, Mapping[str, Any]] = {}
    observations: list[tuple[str, Mapping[str, Any]]] = []
    for i, node in enumerate(_list(_need(b, "entry", "Bundle"), "Bundle.entry")):
        where = f"Bundle.entry[{i}]"
        entry = _obj(node, where)
        url = _str(entry.get("fullUrl"), f"{where}.fullUrl")
        resource = _obj(_need(entry, "resource", where), f"{where}.resource")
        if url in by_url:
            raise FhirMappingError(f"fullUrl {url} repeated", where=where)
        by_url[url] = resource
        if resource.get("resourceType") == "Observation":
            observations.append((where, resource))
    test = is_test_episode(b)
    out = []
    for where, obs in observations:
        try:
            gateway = _extensions(obs, "Observation").get(EXT_GATEWAY, {}).get("valueReference")
            _resolve(by_url, gateway, "Observation.extension(gatewayDevice)")
            device = _resolve(by_url, obs.get("device"), "Observation.device")
            out.append(measurement_from_observation(obs, device, test_episode=test))
        except FhirMappingError as exc:
            raise FhirMappingError(exc.problem, where=f"{where}.resource/{exc.where}") from None
    return out


def test_labelled(bundle: Mapping[str, Any]) -> int:
    """How many Observations of a (mapped, so well-formed) Bundle carry meta.security HTEST."""
    return sum(
        1
        for e in bundle.get("entry", [])
        if e["resource"].get("resourceType") == "Observation"
        and HTEST in e["resource"].get("meta", {}).get("security", [])
    )


def is_test_episode(bundle: Mapping[str, Any]) -> bool:
    """Is this Bundle from a test episode (``Bundle.meta.security`` HTEST)?"""
    meta = _obj(bundle.get("meta", {}), "Bundle.meta")
    return HTEST in _list(meta.get("security", []), "Bundle.meta.security")
