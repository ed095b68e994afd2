"""HL7 FHIR R4 mapping of measurements, after the Personal Health Device IG (PHD IG, STU2).

Pure functions, no I/O. ``observation`` / ``bundle`` run on the gateway; the inverse
(``measurement_from_observation`` / ``measurements_from_bundle``) runs at the provider and gives
back the very ``Measurement`` the driver produced: every field the IG has no element for travels in
an extension under ``https://homecare-gateway.invalid/fhir``, so nothing is altered on the way.

Choices the IG leaves open, made here:
- References: a transaction Bundle with urn:uuid fullUrls (as the IG's bundle example does); each
  reference also carries the target's identifier, so an Observation read on its own still names
  its device, gateway and patient. The urn:uuids are uuid5 of identifiers: same input, same bytes.
- Subject: the pseudonymous episode, by identifier (the gateway holds no Patient resource).
- Status (IG: no rule for Observation.status): INVALID -> "cancelled" ("measurement not completed";
  "entered-in-error" would claim the record should never have existed, and servers treat it as a
  retraction); early-indication / msmt-ongoing / calibration-ongoing -> "preliminary"; else "final".
- Time: effectiveDateTime is the device's own timestamp, never replaced. A meta.tag always states
  its quality: "synced", "unsynced" (kept as the device sent it, flagged), or "absent" (effective is
  the gateway's reception time, as the IG prescribes for devices without a clock).
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from gateway import codes
from gateway.errors import ConfigError, ModelError, VerifyError
from gateway.model import (
    AbsentReason,
    Component,
    DeviceId,
    DeviceIdKind,
    Measurement,
    MeasurementStatus,
    TimeQuality,
)

OURS = "https://homecare-gateway.invalid/fhir"
EXT_RAW = f"{OURS}/StructureDefinition/raw-device-bytes"
EXT_RECEIVED_AT = f"{OURS}/StructureDefinition/received-at"
EXT_SOURCE = f"{OURS}/StructureDefinition/source"
EXT_RECORD_ID = f"{OURS}/StructureDefinition/device-record-id"
EXT_SUPPLEMENTAL = f"{OURS}/StructureDefinition/supplemental-info"
EXT_UNIT = f"{OURS}/StructureDefinition/unit"  # UCUM unit of a reading without valueQuantity
CS_TIME_QUALITY = f"{OURS}/CodeSystem/time-quality"
CS_STATUS = f"{OURS}/CodeSystem/measurement-status"  # one code per 11073 MeasurementStatus bit
CS_ABSENT = f"{OURS}/CodeSystem/absent-reason"  # AbsentReason values, finer than FHIR's codes
SID_OBSERVATION = f"{OURS}/sid/phd-observation"
SID_EPISODE = f"{OURS}/sid/episode"
SID_GATEWAY = f"{OURS}/sid/gateway"
SID_SERIAL = f"{OURS}/sid/device-serial"
SID_SIM = f"{OURS}/sid/simulated-device"

EXT_GATEWAY = "http://hl7.org/fhir/StructureDefinition/observation-gatewayDevice"  # PHD IG, R4
SID_SYSID = "urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680"  # IEEE EUI-64 system id
SID_BTMAC = "http://hl7.org/fhir/sid/eui-48/bluetooth"
CS_DEVICE_ID_TYPE = "http://hl7.org/fhir/uv/phd/CodeSystem/ContinuaDeviceIdentifiers"
CS_V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
CS_DAR = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
CS_POCD_STATUS = "http://hl7.org/fhir/uv/pocd/CodeSystem/measurement-status"
CS_ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
CS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"

_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, OURS)
_Y2K = datetime(2000, 1, 1, tzinfo=UTC)  # epoch of the IG's reported-timestamp identifier part
_HTEST = {"system": CS_ACT_REASON, "code": "HTEST", "display": "test health data"}
_TEST_BITS = MeasurementStatus.TEST_DATA | MeasurementStatus.DEMO_DATA
_PRELIMINARY_BITS = (
    MeasurementStatus.EARLY_INDICATION
    | MeasurementStatus.MEASUREMENT_ONGOING
    | MeasurementStatus.CALIBRATION_ONGOING
)
# bit -> (our code, PHD IG interpretation code in the PoCD measurement-status system or None).
# Bits 14/15 are in IEEE 11073-20601 but not in MeasurementStatus; the IntFlag still carries them.
_STATUS_CODES: Mapping[int, tuple[str, str | None]] = {
    0: ("invalid", None),  # IG: dataAbsentReason "error", which our absent_reason drives
    1: ("questionable", "questionable"),
    2: ("not-available", None),
    3: ("calibration-ongoing", "calibration-ongoing"),
    4: ("test-data", None),  # IG: meta.security HTEST
    5: ("demo-data", None),  # IG: meta.security HTEST
    8: ("validated-data", "validated-data"),
    9: ("early-indication", "early-indication"),
    10: ("msmt-ongoing", "msmt-ongoing"),
    14: ("msmt-value-exceed-boundaries", "in-alarm"),
    15: ("msmt-state-ann-inhibited", "alarm-inhibited"),
}
_STATUS_BITS = {name: bit for bit, (name, _) in _STATUS_CODES.items()}
_ABSENT_TO_DAR = {
    AbsentReason.NAN: "not-a-number",
    AbsentReason.NRES: "error",
    AbsentReason.POSITIVE_INFINITY: "positive-infinity",
    AbsentReason.NEGATIVE_INFINITY: "negative-infinity",
    AbsentReason.RESERVED: "error",
    AbsentReason.SENSOR_OFF: "not-performed",
    AbsentReason.NOT_MEASURED: "not-performed",
}
_TIME_DISPLAY = {
    TimeQuality.SYNCED: "effective time is the device's timestamp; device clock synchronised",
    TimeQuality.UNSYNCED: "effective time is the device's timestamp; device clock NOT synchronised",
    TimeQuality.ABSENT: "device sent no timestamp; effective time is the gateway's reception time",
}


@dataclass(frozen=True, slots=True)
class GatewayInfo:
    """The gateway (PHG) and the episode it serves, as the FHIR mapping needs them."""

    gateway_id: str
    episode_id: str  # pseudonymous patient / episode id; never a name or record number
    eui64: str | None
    time_sync: str  # how the gateway clock is synchronised: "ntp", "sntp", "gps", "mobile"…
    software_version: str

    def __post_init__(self) -> None:
        for name in ("gateway_id", "episode_id", "time_sync", "software_version"):
            text = getattr(self, name)
            if not text or not text.isprintable() or text != text.strip():
                raise ConfigError(name, "must be printable text without surrounding blanks")
        if self.eui64 is not None:
            try:
                norm = DeviceId(DeviceIdKind.EUI64, self.eui64).value
            except ModelError:
                raise ConfigError("eui64", "not an EUI-64 (16 hex digits)") from None
            object.__setattr__(self, "eui64", norm)


class FhirMappingError(VerifyError):
    """A FHIR resource does not follow this module's mapping (provider side)."""

    hint = "keep the sealed record and report it with the gateway's software version"

    def __init__(self, problem: str, *, where: str) -> None:
        super().__init__(f"{where}: {problem}", reason="fhir-mapping", where=where)
        self.problem = problem
        self.where = where


# --- gateway side ------------------------------------------------------------------------------


def _coding(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    out = {"system": system, "code": code}
    return out if display is None else {**out, "display": display}


def _mdc_concept(code: int, unit: str) -> dict[str, Any]:
    """MDC coding first (IG: shall), then the LOINC terms valid for ``unit``."""
    known = codes.info(code)
    if known is None:
        return {"coding": [_coding(codes.MDC_SYSTEM, str(code))], "text": f"MDC code {code}"}
    coding = [_coding(codes.MDC_SYSTEM, str(code), known.reference_id)]
    coding += [_coding(codes.LOINC_SYSTEM, t.code, t.display) for t in known.loinc_for(unit)]
    return {"coding": coding, "text": known.display}


def _dashed(hex_digits: str) -> str:
    """IG format for EUI-48/64 identifier values: upper-case hex bytes joined by dashes."""
    return "-".join(hex_digits[i : i + 2] for i in range(0, len(hex_digits), 2))


def _id_type(system: str, code: str) -> dict[str, Any]:
    return {"coding": [_coding(system, code)]}


def device_identifiers(device: DeviceId) -> list[dict[str, Any]]:
    """PHD Device identifiers; the first is the one references and ifNoneExist use."""
    value = device.value
    if device.kind is DeviceIdKind.BTMAC:
        # IG (PhdDevice): a BLE device without a system id still gets SYSID 00-…-00.
        return [
            {"type": _id_type(CS_DEVICE_ID_TYPE, "BTMAC"), "system": SID_BTMAC,
             "value": _dashed(value.replace(":", ""))},
            {"type": _id_type(CS_DEVICE_ID_TYPE, "SYSID"), "system": SID_SYSID,
             "value": _dashed("00" * 8)},
        ]
    if device.kind is DeviceIdKind.EUI64:
        return [{"type": _id_type(CS_DEVICE_ID_TYPE, "SYSID"), "system": SID_SYSID,
                 "value": _dashed(value)}]
    if device.kind is DeviceIdKind.SERIAL:
        return [{"type": _id_type(CS_V2_0203, "SNO"), "system": SID_SERIAL, "value": value}]
    return [{"system": SID_SIM, "value": value}]


def _urn(*parts: str) -> str:
    return f"urn:uuid:{uuid.uuid5(_NAMESPACE, '|'.join(parts))}"


def _logical(identifier: Mapping[str, Any]) -> dict[str, Any]:
    return {"system": identifier["system"], "value": identifier["value"]}


def _device_ref(device: DeviceId) -> dict[str, Any]:
    primary = device_identifiers(device)[0]
    return {
        "reference": _urn("Device", primary["system"], primary["value"]),
        "type": "Device",
        "identifier": _logical(primary),
    }


def _gateway_ref(gw: GatewayInfo) -> dict[str, Any]:
    return {
        "reference": _urn("Device", SID_GATEWAY, gw.gateway_id),
        "type": "Device",
        "identifier": {"system": SID_GATEWAY, "value": gw.gateway_id},
    }


def device_resource(device: DeviceId) -> dict[str, Any]:
    """The PHD Device (IG PhdDevice: type MDC_MOC_VMS_MDS_SIMP, identifiers by kind)."""
    res: dict[str, Any] = {
        "resourceType": "Device",
        "identifier": device_identifiers(device),
        "type": {
            "coding": [_coding(codes.MDC_SYSTEM, str(codes.MDC_MOC_VMS_MDS_SIMP),
                               "MDC_MOC_VMS_MDS_SIMP")],
            "text": "Personal health device",
        },
    }
    if device.kind is DeviceIdKind.SERIAL:
        res["serialNumber"] = device.value
    if device.kind is DeviceIdKind.SIM:
        res["meta"] = {"security": [_HTEST]}  # a simulator's readings are never clinical data
    return res


def gateway_device(gw: GatewayInfo) -> dict[str, Any]:
    """The PHG Device (IG PhgDevice: type 531981, time-sync property 68220)."""
    identifiers: list[dict[str, Any]] = [{"system": SID_GATEWAY, "value": gw.gateway_id}]
    if gw.eui64 is not None:
        identifiers.append({"type": _id_type(CS_DEVICE_ID_TYPE, "SYSID"), "system": SID_SYSID,
                            "value": _dashed(gw.eui64)})
    sync_code, sync_ref = codes.time_sync_code(gw.time_sync)
    mdc = codes.MDC_SYSTEM
    return {
        "resourceType": "Device",
        "identifier": identifiers,
        "type": {
            "coding": [_coding(mdc, str(codes.MDC_MOC_VMS_MDS_AHD), "MDC_MOC_VMS_MDS_AHD")],
            "text": "Personal health gateway",
        },
        "version": [{
            "type": {"coding": [_coding(mdc, str(codes.MDC_ID_PROD_SPEC_SW),
                                        "MDC_ID_PROD_SPEC_SW")]},
            "value": gw.software_version,
        }],
        "property": [{
            "type": {"coding": [_coding(mdc, str(codes.MDC_TIME_SYNC_PROTOCOL),
                                        "MDC_TIME_SYNC_PROTOCOL")]},
            "valueCode": [{"coding": [_coding(mdc, str(sync_code), sync_ref)],
                           "text": gw.time_sync}],
        }],
    }


def _fhir_time(t: datetime, what: str) -> str:
    offset = t.utcoffset()
    if offset is None:
        raise ModelError(f"{what} must be timezone-aware (FHIR dateTime needs an offset)")
    if offset % timedelta(minutes=1):
        raise ModelError(f"{what} has a UTC offset with seconds, which FHIR cannot express")
    return t.isoformat()


def _q(text: str) -> str:
    """Escape one identifier field so that joining fields with '-' ',' ';' stays injective."""
    return quote(text, safe=":/[]{}^*'!+@").replace("-", "%2D")


def _ig_time(t: datetime) -> str:
    """IG "reported PHD timestamp": seconds of the device's wall clock since 2000-01-01, then the
    UTC offset in 15-minute units ("+4" = one hour)."""
    offset = t.utcoffset()
    if offset is None:
        raise ModelError("device_time must be timezone-aware (the identifier needs its offset)")
    micros = (t.replace(tzinfo=UTC) - _Y2K) // timedelta(microseconds=1)
    secs, frac = divmod(abs(micros), 1_000_000)
    text = ("-" if micros < 0 else "") + str(secs) + (f".{frac:06d}".rstrip("0") if frac else "")
    minutes = offset // timedelta(minutes=1)
    quarters, rest = divmod(abs(minutes), 15)
    sign = "-" if minutes < 0 else "+"
    return text + sign + (str(quarters) if not rest else f"{abs(minutes)}m")


def _number(value: Decimal | None, absent: AbsentReason | None) -> str:
    return str(value) if value is not None else absent.value if absent is not None else ""


def observation_identifier(m: Measurement, episode_id: str) -> str:
    """IG conditional-create identifier: device-patient-type-value-units-timestamp-supplemental,
    plus the device's record id. The timestamp is the device's own (two gateways agree on it), the
    reception time only when the device sent none ("rx" prefix). Fields are escaped, so distinct
    readings never collide: a false match would make the server drop a reading. The model has no
    measurement duration, so the IG's "..duration" suffix never appears."""
    value = _q(_number(m.value, m.absent_reason))
    if m.components:
        value += ";" + ";".join(
            f"{c.mdc_code},{_q(_number(c.value, c.absent_reason))},{_q(c.unit)}"
            for c in m.components
        )
    if m.device_time is not None:
        stamp = _q(_ig_time(m.device_time))
    else:
        stamp = "rx" + _q(_ig_time(m.received_at))
    record = "" if m.device_record_id is None else _q(str(m.device_record_id))
    fields = (_q(str(m.device)), _q(episode_id), str(m.mdc_code), value, _q(m.unit), stamp,
              _q(m.supplemental), record)
    return "-".join(fields)


def _value_elements(
    value: Decimal | None, absent: AbsentReason | None, unit: str
) -> dict[str, Any]:
    if value is not None:  # the exact Decimal: cjson writes 2.00 as 2.00
        return {"valueQuantity": {"value": value, "unit": unit, "system": codes.UCUM_SYSTEM,
                                  "code": unit}}
    out: dict[str, Any] = {"extension": [{"url": EXT_UNIT, "valueCode": unit}]}
    if absent is not None:
        out["dataAbsentReason"] = {
            "coding": [_coding(CS_DAR, _ABSENT_TO_DAR[absent]), _coding(CS_ABSENT, absent.value)],
            "text": f"device reported no value ({absent.value})",
        }
    return out


def _fhir_status(status: MeasurementStatus) -> str:
    if status & MeasurementStatus.INVALID:
        return "cancelled"
    return "preliminary" if status & _PRELIMINARY_BITS else "final"


def _interpretation(status: MeasurementStatus) -> list[dict[str, Any]]:
    bits = int(status)
    if bits < 0:
        raise ModelError(f"measurement status must be a set of bits, got {bits}")
    out = []
    for bit in range(bits.bit_length()):
        if bits >> bit & 1:
            ours, pocd = _STATUS_CODES.get(bit, (f"bit-{bit}", None))
            coding = [_coding(CS_STATUS, ours)]
            if pocd is not None:
                coding.append(_coding(CS_POCD_STATUS, pocd))
            out.append({"coding": coding})
    return out


def _is_test(status: MeasurementStatus, device: DeviceId) -> bool:
    return bool(status & _TEST_BITS) or device.kind is DeviceIdKind.SIM


def observation(m: Measurement, gw: GatewayInfo) -> dict[str, Any]:
    """The R4 Observation for one measurement (IG PhdNumeric / PhdCompoundNumeric shape)."""
    meta: dict[str, Any] = {"tag": [_coding(CS_TIME_QUALITY, m.time_quality.value,
                                            _TIME_DISPLAY[m.time_quality])]}
    if _is_test(m.status, m.device):
        meta["security"] = [_HTEST]  # IG: test-data / demo-data -> HTEST
    values = _value_elements(m.value, m.absent_reason, m.unit)
    ext: list[dict[str, Any]] = [
        {"url": EXT_GATEWAY, "valueReference": _gateway_ref(gw)},
        {"url": EXT_RECEIVED_AT, "valueInstant": _fhir_time(m.received_at, "received_at")},
        {"url": EXT_SOURCE, "valueString": m.source},
        *values.pop("extension", []),
    ]
    if m.raw:
        ext.append({"url": EXT_RAW, "valueBase64Binary": base64.b64encode(m.raw).decode("ascii")})
    if m.device_record_id is not None:  # valueString: record ids may exceed FHIR's 32-bit integer
        ext.append({"url": EXT_RECORD_ID, "valueString": str(m.device_record_id)})
    if m.supplemental:
        ext.append({"url": EXT_SUPPLEMENTAL, "valueString": m.supplemental})
    effective = m.device_time if m.device_time is not None else m.received_at
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "meta": meta,
        "extension": ext,
        "identifier": [{"system": SID_OBSERVATION,
                        "value": observation_identifier(m, gw.episode_id)}],
        "status": _fhir_status(m.status),
        "code": _mdc_concept(m.mdc_code, m.unit),
        "subject": {"type": "Patient",
                    "identifier": {"system": SID_EPISODE, "value": gw.episode_id}},
        "effectiveDateTime": _fhir_time(effective, "device_time"),
        "device": _device_ref(m.device),
        **values,
    }
    known = codes.info(m.mdc_code)
    if known is not None and known.category is not None:
        obs["category"] = [{"coding": [_coding(CS_CATEGORY, known.category)]}]
    if m.status:
        obs["interpretation"] = _interpretation(m.status)
    if m.components:
        obs["component"] = [
            {"code": _mdc_concept(c.mdc_code, c.unit),
             **_value_elements(c.value, c.absent_reason, c.unit)}
            for c in m.components
        ]
    return obs


def _if_none_exist(system: str, value: str) -> str:
    """Search for the identifier token, escaped per FHIR search (\\ , $ |) then for the URL."""
    def esc(text: str) -> str:
        return re.sub(r"([\\,$|])", r"\\\1", text)

    return "identifier=" + quote(f"{esc(system)}|{esc(value)}", safe=":/|")


def _post(full_url: str, resource: dict[str, Any], identifier: Mapping[str, Any]) -> dict[str, Any]:
    request = {"method": "POST", "url": resource["resourceType"],
               "ifNoneExist": _if_none_exist(identifier["system"], identifier["value"])}
    return {"fullUrl": full_url, "resource": resource, "request": request}


def bundle(measurements: Sequence[Measurement], gw: GatewayInfo) -> dict[str, Any]:
    """A transaction Bundle: the PHG, each PHD once, then one Observation per measurement, each a
    conditional create (IG). A repeated reading keeps its entry (a distinct fullUrl): the server's
    conditional create de-duplicates it, and the Bundle carries exactly what it was given."""
    gw_ref = _gateway_ref(gw)
    entries = [_post(gw_ref["reference"], gateway_device(gw), gw_ref["identifier"])]
    for device in dict.fromkeys(m.device for m in measurements):
        ref = _device_ref(device)
        entries.append(_post(ref["reference"], device_resource(device), ref["identifier"]))
    seen: dict[str, int] = {}
    for m in measurements:
        obs = observation(m, gw)
        ident = obs["identifier"][0]
        repeat = seen.get(ident["value"], 0)
        seen[ident["value"]] = repeat + 1
        suffix = (str(repeat),) if repeat else ()
        entries.append(_post(_urn("Observation", SID_OBSERVATION, ident["value"], *suffix), obs,
                             ident))
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


# --- provider side -------------------------------------------------------------------------------


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
    return [_str(_obj(c, f"{where}.coding").get("code"), f"{where}.coding.code")
            for c in coding if _obj(c, f"{where}.coding").get("system") == system]


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
        raise FhirMappingError("needs one known absent-reason coding",
                               where=f"{where}.dataAbsentReason") from None
    return None, absent, unit


def _status_of(obs: Mapping[str, Any]) -> MeasurementStatus:
    bits = 0
    for i, concept in enumerate(_list(obs.get("interpretation", []), "Observation.interpretation")):
        for code in _codes_in(concept, CS_STATUS, f"Observation.interpretation[{i}]"):
            match = re.fullmatch(r"bit-([0-9]{1,3})", code)
            bit = _STATUS_BITS.get(code, int(match.group(1)) if match else None)
            if bit is None:
                raise FhirMappingError(f"unknown status code {code!r}",
                                       where=f"Observation.interpretation[{i}]")
            bits |= 1 << bit
    return MeasurementStatus(bits)


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
    kinds = {SID_BTMAC: DeviceIdKind.BTMAC, SID_SERIAL: DeviceIdKind.SERIAL,
             SID_SIM: DeviceIdKind.SIM}
    named = [(kind, found[system]) for system, kind in kinds.items() if system in found]
    if not named and SID_SYSID in found:
        named = [(DeviceIdKind.EUI64, found[SID_SYSID])]
    if len(named) != 1:
        raise FhirMappingError("needs exactly one device identity", where="Device.identifier")
    try:
        return DeviceId(*named[0])
    except ModelError as exc:
        raise FhirMappingError(exc.message, where="Device.identifier") from None


def measurement_from_observation(obs: object, device: object) -> Measurement:
    """The Measurement an Observation (from ``observation``) carries; ``device`` is its PHD."""
    o = _obj(obs, "Observation")
    if o.get("resourceType") != "Observation":
        raise FhirMappingError("not an Observation", where="Observation.resourceType")
    device_id = device_id_from_resource(device)
    ref = _obj(_need(o, "device", "Observation"), "Observation.device")
    if ref.get("identifier") != _device_ref(device_id)["identifier"]:
        raise FhirMappingError("does not identify the Device given", where="Observation.device")
    exts = _extensions(o, "Observation")
    tags = _codes_in({"coding": _obj(o.get("meta", {}), "Observation.meta").get("tag", [])},
                     CS_TIME_QUALITY, "Observation.meta.tag")
    try:
        (quality,) = (TimeQuality(code) for code in tags)
    except ValueError:
        raise FhirMappingError("needs one time-quality tag", where="Observation.meta.tag") from None
    effective = _time(_need(o, "effectiveDateTime", "Observation"), "Observation.effectiveDateTime")
    received_at = _time(_ext_value(exts, EXT_RECEIVED_AT, "valueInstant", "Observation"),
                        "Observation.extension(received-at)")
    if quality is TimeQuality.ABSENT and effective != received_at:
        raise FhirMappingError("without a device time it must be the reception time",
                               where="Observation.effectiveDateTime")
    record = _ext_value(exts, EXT_RECORD_ID, "valueString", "Observation")
    if record is not None and not re.fullmatch(r"-?[0-9]+", record):
        raise FhirMappingError("not an integer", where="Observation.extension(device-record-id)")
    raw = _ext_value(exts, EXT_RAW, "valueBase64Binary", "Observation")
    try:
        raw_bytes = b"" if raw is None else base64.b64decode(raw, validate=True)
    except binascii.Error:
        where = "Observation.extension(raw-device-bytes)"
        raise FhirMappingError("bad base64", where=where) from None
    value, absent, unit = _value_of(o, "Observation")
    status = _status_of(o)
    episode = _str(_obj(_obj(_need(o, "subject", "Observation"), "Observation.subject")
                        .get("identifier"), "Observation.subject.identifier").get("value"),
                   "Observation.subject.identifier.value")
    try:
        components = tuple(
            _component_of(c, f"Observation.component[{i}]")
            for i, c in enumerate(_list(o.get("component", []), "Observation.component"))
        )
        m = Measurement(
            device=device_id,
            mdc_code=_mdc_code(_need(o, "code", "Observation"), "Observation.code"),
            value=value, unit=unit, received_at=received_at,
            source=_ext_value(exts, EXT_SOURCE, "valueString", "Observation") or "",
            raw=raw_bytes, absent_reason=absent,
            device_time=None if quality is TimeQuality.ABSENT else effective,
            time_quality=quality, status=status, components=components,
            device_record_id=None if record is None else int(record),
            supplemental=_ext_value(exts, EXT_SUPPLEMENTAL, "valueString", "Observation") or "",
        )
    except ModelError as exc:
        raise FhirMappingError(exc.message, where="Observation") from None
    _check_consistent(o, m, episode)
    return m


def _component_of(node: object, where: str) -> Component:
    comp = _obj(node, where)
    value, absent, unit = _value_of(comp, where)
    code = _mdc_code(_need(comp, "code", where), f"{where}.code")
    return Component(code, value, unit, absent_reason=absent)


def _check_consistent(o: Mapping[str, Any], m: Measurement, episode: str) -> None:
    """Elements derived from the measurement must match it: a mismatch means tampering or a
    mapping bug, and silently preferring either side could hide an altered reading."""
    ids = [_obj(i, "Observation.identifier") for i in _list(o.get("identifier"),
                                                            "Observation.identifier")]
    expected = observation_identifier(m, episode)
    if [(i.get("system"), i.get("value")) for i in ids] != [(SID_OBSERVATION, expected)]:
        raise FhirMappingError("does not match the reading", where="Observation.identifier")
    if o.get("status") != _fhir_status(m.status):
        raise FhirMappingError("does not match the measurement status", where="Observation.status")
    security = _obj(o.get("meta"), "Observation.meta").get("security", [])
    if (_HTEST in _list(security, "Observation.meta.security")) != _is_test(m.status, m.device):
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
    out = []
    for where, obs in observations:
        try:
            gateway = _extensions(obs, "Observation").get(EXT_GATEWAY, {}).get("valueReference")
            _resolve(by_url, gateway, "Observation.extension(gatewayDevice)")
            device = _resolve(by_url, obs.get("device"), "Observation.device")
            out.append(measurement_from_observation(obs, device))
        except FhirMappingError as exc:
            raise FhirMappingError(exc.problem, where=f"{where}.resource/{exc.where}") from None
    return out
