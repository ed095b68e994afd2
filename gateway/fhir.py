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
import functools
import hashlib
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
_NAMESPACE_BYTES = _NAMESPACE.bytes
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
            {
                "type": _id_type(CS_DEVICE_ID_TYPE, "BTMAC"),
                "system": SID_BTMAC,
                "value": _dashed(value.replace(":", "")),
            },
            {
                "type": _id_type(CS_DEVICE_ID_TYPE, "SYSID"),
                "system": SID_SYSID,
                "value": _dashed("00" * 8),
            },
        ]
    if device.kind is DeviceIdKind.EUI64:
        return [
            {
                "type": _id_type(CS_DEVICE_ID_TYPE, "SYSID"),
                "system": SID_SYSID,
                "value": _dashed(value),
            }
        ]
    if device.kind is DeviceIdKind.SERIAL:
        return [{"type": _id_type(CS_V2_0203, "SNO"), "system": SID_SERIAL, "value": value}]
    return [{"system": SID_SIM, "value": value}]


def _urn(*parts: str) -> str:
    """RFC 9562 name-based UUID (version 5) of the joined parts, as a URN.

    Computed directly from SHA-1 (the same value as ``uuid.uuid5``, which a test checks): the
    uuid module's objects cost more than the hash for the three URNs of every reading.
    """
    name = "|".join(parts).encode()
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name).digest()[:16])  # noqa: S324 - v5 is SHA-1
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"urn:uuid:{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


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
            "coding": [
                _coding(codes.MDC_SYSTEM, str(codes.MDC_MOC_VMS_MDS_SIMP), "MDC_MOC_VMS_MDS_SIMP")
            ],
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
        identifiers.append(
            {
                "type": _id_type(CS_DEVICE_ID_TYPE, "SYSID"),
                "system": SID_SYSID,
                "value": _dashed(gw.eui64),
            }
        )
    sync_code, sync_ref = codes.time_sync_code(gw.time_sync)
    mdc = codes.MDC_SYSTEM
    return {
        "resourceType": "Device",
        "identifier": identifiers,
        "type": {
            "coding": [_coding(mdc, str(codes.MDC_MOC_VMS_MDS_AHD), "MDC_MOC_VMS_MDS_AHD")],
            "text": "Personal health gateway",
        },
        "version": [
            {
                "type": {
                    "coding": [_coding(mdc, str(codes.MDC_ID_PROD_SPEC_SW), "MDC_ID_PROD_SPEC_SW")]
                },
                "value": gw.software_version,
            }
        ],
        "property": [
            {
                "type": {
                    "coding": [
                        _coding(mdc, str(codes.MDC_TIME_SYNC_PROTOCOL), "MDC_TIME_SYNC_PROTOCOL")
                    ]
                },
                "valueCode": [
                    {"coding": [_coding(mdc, str(sync_code), sync_ref)], "text": gw.time_sync}
                ],
            }
        ],
    }


def _fhir_time(t: datetime, what: str) -> str:
    offset = t.utcoffset()
    if offset is None:
        raise ModelError(f"{what} must be timezone-aware (FHIR dateTime needs an offset)")
    if offset % timedelta(minutes=1):
        raise ModelError(f"{what} has a UTC offset with seconds, which FHIR cannot express")
    return t.isoformat()


@functools.lru_cache(maxsize=4096)  # device ids, episode, units, common values repeat
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
    fields = (
        _q(str(m.device)),
        _q(episode_id),
        str(m.mdc_code),
        value,
        _q(m.unit),
        stamp,
        _q(m.supplemental),
        record,
    )
    return "-".join(fields)


def _value_elements(
    value: Decimal | None, absent: AbsentReason | None, unit: str
) -> dict[str, Any]:
    if value is not None:  # the exact Decimal: cjson writes 2.00 as 2.00
        return {
            "valueQuantity": {
                "value": value,
                "unit": unit,
                "system": codes.UCUM_SYSTEM,
                "code": unit,
            }
        }
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
    meta: dict[str, Any] = {
        "tag": [_coding(CS_TIME_QUALITY, m.time_quality.value, _TIME_DISPLAY[m.time_quality])]
    }
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
        "identifier": [
            {"system": SID_OBSERVATION, "value": observation_identifier(m, gw.episode_id)}
        ],
        "status": _fhir_status(m.status),
        "code": _mdc_concept(m.mdc_code, m.unit),
        "subject": {
            "type": "Patient",
            "identifier": {"system": SID_EPISODE, "value": gw.episode_id},
        },
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
            {
                "code": _mdc_concept(c.mdc_code, c.unit),
                **_value_elements(c.value, c.absent_reason, c.unit),
            }
            for c in m.components
        ]
    return obs


def _if_none_exist(system: str, value: str) -> str:
    """Search for the identifier token, escaped per FHIR search (\\ , $ |) then for the URL."""

    def esc(text: str) -> str:
        return re.sub(r"([\\,$|])", r"\\\1", text)

    return "identifier=" + quote(f"{esc(system)}|{esc(value)}", safe=":/|")


def _post(full_url: str, resource: dict[str, Any], identifier: Mapping[str, Any]) -> dict[str, Any]:
    request = {
        "method": "POST",
        "url": resource["resourceType"],
        "ifNoneExist": _if_none_exist(identifier["system"], identifier["value"]),
    }
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
        entries.append(
            _post(_urn("Observation", SID_OBSERVATION, ident["value"], *suffix), obs, ident)
        )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}
