"""Factories for test data: realistic readings, overridable field by field.

``make_measurement()`` is a Health Thermometer reading (BLE 0x2A1C) with its real payload bytes;
``make_bp_measurement()`` a Blood Pressure Measurement (0x2A35). Pass keyword overrides for any
``Measurement`` field, e.g. ``make_measurement(value=Decimal("2.00"), raw=b"")``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from gateway.fhir import codes
from gateway.fhir.observation import GatewayInfo
from gateway.model import Component, DeviceId, DeviceIdKind, Measurement, TimeQuality

THERMOMETER = DeviceId(DeviceIdKind.BTMAC, "a4:c1:38:00:12:34")
BP_MONITOR = DeviceId(DeviceIdKind.EUI64, "00-1C-05-FF-FE-00-78-25")
CEST = timezone(timedelta(hours=2))
RECEIVED_AT = datetime(2024, 5, 1, 8, 0, 5, 250000, tzinfo=UTC)
DEVICE_TIME = datetime(2024, 5, 1, 10, 0, 0, tzinfo=CEST)

# 0x2A1C: flags 0x02 (Celsius, time stamp present); FLOAT 36.60 = mantissa 3660 (0x000E4C),
# exponent -2 (0xFE), little-endian; Date Time 2024-05-01 10:00:00.
THERMOMETER_PAYLOAD = bytes.fromhex("024c0e00fee80705010a0000")
# 0x2A35: flags 0x02 (mmHg, time stamp present); SFLOAT 120 / 80 / 93; Date Time 2024-05-01 10:05.
BP_PAYLOAD = bytes.fromhex("02780050005d00e80705010a0500")


def make_gateway_info(**overrides: Any) -> GatewayInfo:
    fields: dict[str, Any] = {
        "gateway_id": "gw-test-0001",
        "episode_id": "ep-7f3a9c",
        "eui64": None,
        "time_sync": "ntp",
        "software_version": "0.1.0",
    }
    fields.update(overrides)
    return GatewayInfo(**fields)


def make_measurement(**overrides: Any) -> Measurement:
    fields: dict[str, Any] = {
        "device": THERMOMETER,
        "mdc_code": codes.MDC_TEMP_BODY,
        "value": Decimal("36.60"),
        "unit": "Cel",
        "received_at": RECEIVED_AT,
        "source": "ble.health_thermometer",
        "raw": THERMOMETER_PAYLOAD,
        "device_time": DEVICE_TIME,
        "time_quality": TimeQuality.SYNCED,
    }
    fields.update(overrides)
    return Measurement(**fields)


def make_bp_measurement(**overrides: Any) -> Measurement:
    fields: dict[str, Any] = {
        "device": BP_MONITOR,
        "mdc_code": codes.MDC_PRESS_BLD_NONINV,
        "value": None,
        "unit": "mm[Hg]",
        "components": (
            Component(codes.MDC_PRESS_BLD_NONINV_SYS, Decimal("120"), "mm[Hg]"),
            Component(codes.MDC_PRESS_BLD_NONINV_DIA, Decimal("80"), "mm[Hg]"),
            Component(codes.MDC_PRESS_BLD_NONINV_MEAN, Decimal("93"), "mm[Hg]"),
        ),
        "received_at": RECEIVED_AT,
        "source": "ble.blood_pressure",
        "raw": BP_PAYLOAD,
        "device_time": datetime(2024, 5, 1, 10, 5, 0, tzinfo=CEST),
        "time_quality": TimeQuality.SYNCED,
    }
    fields.update(overrides)
    return Measurement(**fields)


# A complete, valid gateway configuration; paths are relative to the file (see write_config).
VALID_CONFIG = """
[gateway]
id = "gw-0001"
episode = "ep-1"
state_dir = "state"

[identity]
signing_key = "identity.key"

[provider]
hpke_public_key = "provider.pub"

[uplink]
host = "127.0.0.1"
port = 8883
ca_file = "ca.crt"
cert_file = "client.crt"
key_file = "client.key"

[[sim_devices]]
kind = "thermometer"
address = "C0:FF:EE:00:00:01"
interval_s = 2
"""


def write_config(files: Path, text: str) -> Path:
    path = files / "gateway.toml"
    path.write_text(text)
    return path
