"""The FHIR vocabulary both directions of the mapping share: URLs, code tables, small types.

The gateway writes with it (gateway/fhir/observation.py: Observations and the Bundle;
gateway/fhir/device.py:
Device resources, identifiers and references) and the provider reads back with it
(provider/fhir_read.py). Here: our own extension, code-system and identifier-system URLs
under ``https://homecare-gateway.invalid/fhir``, the HL7 / PHD IG systems we use, the tables from
11073 measurement status bits and ``AbsentReason`` to FHIR codes, the status and test-data
rules, name-based urn:uuids, ``GatewayInfo`` and ``FhirMappingError``. Pure, no I/O.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.errors import ConfigError, ModelError, VerifyError
from gateway.model import AbsentReason, DeviceId, DeviceIdKind, MeasurementStatus, TimeQuality

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
CS_V3_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
CS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"

NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, OURS)
_NAMESPACE_BYTES = NAMESPACE.bytes
HTEST = {"system": CS_ACT_REASON, "code": "HTEST", "display": "test health data"}
_TEST_BITS = MeasurementStatus.TEST_DATA | MeasurementStatus.DEMO_DATA
_PRELIMINARY_BITS = (
    MeasurementStatus.EARLY_INDICATION
    | MeasurementStatus.MEASUREMENT_ONGOING
    | MeasurementStatus.CALIBRATION_ONGOING
)
# bit -> (our code, PHD IG interpretation code in the PoCD measurement-status system or None).
# Bits 14/15 are in IEEE 11073-20601 but not in MeasurementStatus; the IntFlag still carries them.
STATUS_CODES: Mapping[int, tuple[str, str | None]] = {
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
STATUS_BITS = {name: bit for bit, (name, _) in STATUS_CODES.items()}
ABSENT_TO_DAR = {
    AbsentReason.NAN: "not-a-number",
    AbsentReason.NRES: "error",
    AbsentReason.POSITIVE_INFINITY: "positive-infinity",
    AbsentReason.NEGATIVE_INFINITY: "negative-infinity",
    AbsentReason.RESERVED: "error",
    AbsentReason.SENSOR_OFF: "not-performed",
    AbsentReason.NOT_MEASURED: "not-performed",
}
TIME_DISPLAY = {
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
    # A test episode (rig, demo, training): every Observation is labelled HTEST.
    test_episode: bool = False

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
    """A FHIR resource does not follow this mapping (provider side)."""

    hint = "keep the sealed record and report it with the gateway's software version"

    def __init__(self, problem: str, *, where: str) -> None:
        super().__init__(f"{where}: {problem}", reason="fhir-mapping", where=where)
        self.problem = problem
        self.where = where


def coding(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    out = {"system": system, "code": code}
    return out if display is None else {**out, "display": display}


def urn(*parts: str) -> str:
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


def fhir_status(status: MeasurementStatus) -> str:
    """Observation.status (see gateway/fhir/observation.py's docstring for the choice)."""
    if status & MeasurementStatus.INVALID:
        return "cancelled"
    return "preliminary" if status & _PRELIMINARY_BITS else "final"


def is_test(status: MeasurementStatus, device: DeviceId) -> bool:
    """Test or demo data, or a simulator's reading: labelled HTEST, never clinical data."""
    return bool(status & _TEST_BITS) or device.kind is DeviceIdKind.SIM
