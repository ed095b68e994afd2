"""Who measured and who relayed: the PHD and PHG Device resources, their identifiers, references.

Part of the FHIR mapping (gateway/fhir/observation.py builds the Observations and the Bundle that
carry
these). Identifiers follow the PHD IG: a BLE device by its EUI-48 (plus the all-zero system id
the IG asks for when it has none), an 11073 device by its EUI-64 system id, a serial device by
serial number; the gateway by our gateway id and, when it has one, its EUI-64. A reference
carries the target's urn:uuid (for the transaction Bundle) and its identifier, so an Observation
read on its own still names its device and gateway. Pure, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.fhir import codes
from gateway.fhir.vocab import (
    CS_DEVICE_ID_TYPE,
    CS_V2_0203,
    HTEST,
    SID_BTMAC,
    SID_GATEWAY,
    SID_SERIAL,
    SID_SIM,
    SID_SYSID,
    GatewayInfo,
    coding,
    urn,
)
from gateway.model import DeviceId, DeviceIdKind


def _dashed(hex_digits: str) -> str:
    """IG format for EUI-48/64 identifier values: upper-case hex bytes joined by dashes."""
    return "-".join(hex_digits[i : i + 2] for i in range(0, len(hex_digits), 2))


def _id_type(system: str, code: str) -> dict[str, Any]:
    return {"coding": [coding(system, code)]}


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


def _logical(identifier: Mapping[str, Any]) -> dict[str, Any]:
    return {"system": identifier["system"], "value": identifier["value"]}


def device_ref(device: DeviceId) -> dict[str, Any]:
    primary = device_identifiers(device)[0]
    return {
        "reference": urn("Device", primary["system"], primary["value"]),
        "type": "Device",
        "identifier": _logical(primary),
    }


def gateway_ref(gw: GatewayInfo) -> dict[str, Any]:
    return {
        "reference": urn("Device", SID_GATEWAY, gw.gateway_id),
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
                coding(codes.MDC_SYSTEM, str(codes.MDC_MOC_VMS_MDS_SIMP), "MDC_MOC_VMS_MDS_SIMP")
            ],
            "text": "Personal health device",
        },
    }
    if device.kind is DeviceIdKind.SERIAL:
        res["serialNumber"] = device.value
    if device.kind is DeviceIdKind.SIM:
        res["meta"] = {"security": [HTEST]}  # a simulator's readings are never clinical data
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
            "coding": [coding(mdc, str(codes.MDC_MOC_VMS_MDS_AHD), "MDC_MOC_VMS_MDS_AHD")],
            "text": "Personal health gateway",
        },
        "version": [
            {
                "type": {
                    "coding": [coding(mdc, str(codes.MDC_ID_PROD_SPEC_SW), "MDC_ID_PROD_SPEC_SW")]
                },
                "value": gw.software_version,
            }
        ],
        "property": [
            {
                "type": {
                    "coding": [
                        coding(mdc, str(codes.MDC_TIME_SYNC_PROTOCOL), "MDC_TIME_SYNC_PROTOCOL")
                    ]
                },
                "valueCode": [
                    {"coding": [coding(mdc, str(sync_code), sync_ref)], "text": gw.time_sync}
                ],
            }
        ],
    }
