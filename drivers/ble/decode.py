"""``decode_characteristic``: one payload of a known characteristic -> a JSON-able description.

Backs ``gatewayctl decode --uuid 2a35 --hex ...``. The shape is fixed::

    {"uuid": "2a35",
     "measurements": [{"type": <MDC code>, "value": "<decimal string>" | None, "unit": "<UCUM>",
                       "absent_reason": None | "<reason>", "device_time": "<ISO 8601>" | None}],
     "flags": {<flag / status name>: bool | value}}

Values are ``str(Decimal)``, so the transmitted precision shows ("2.0", "2.00", "2E+1"). A compound
reading (blood pressure) is listed as its components (systolic, diastolic, MAP, each with its own
MDC code), then the pulse rate. Device times without zone information print as naive ISO 8601:
the device's local clock, as it sent it. Characteristics that carry no measurement (features,
RACP, Device Information) have an empty "measurements" list and their content under "flags".
Generic Health Sensor observations (2b8b live, 2bdd stored) build their entries in
drivers/ble/ghs_show.py: the same keys, plus "samples" for a sample array.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from drivers.ble import device_info, ghs_show, racp
from drivers.ble.blood_pressure import BloodPressureFeature, BloodPressureMeasurement
from drivers.ble.cgm import CgmMeasurement, CgmSessionStartTime
from drivers.ble.gatt_time import CurrentTime, decode_date_time
from drivers.ble.ghs import HealthObservation
from drivers.ble.ghs_features import ControlPoint, HealthSensorFeatures, ObservationSchedule
from drivers.ble.glucose import GlucoseMeasurement
from drivers.ble.glucose_context import GlucoseContext
from drivers.ble.heart_rate import HeartRateMeasurement
from drivers.ble.measure import Reading
from drivers.ble.pulse_oximeter import ContinuousMeasurement, PlxFeatures, SpotCheckMeasurement
from drivers.ble.thermometer import TemperatureMeasurement, decode_temperature_type
from drivers.ble.weight_scale import WeightMeasurement
from drivers.ble.wire import decode_error, uuid_text
from gateway.model import AbsentReason

Decoded = tuple[tuple[Reading, ...], dict[str, object]]


class _Measured(Protocol):
    def readings(self) -> tuple[Reading, ...]: ...
    def flag_summary(self) -> dict[str, object]: ...


class _Described(Protocol):
    def flag_summary(self) -> dict[str, object]: ...


def _measured(parsed: _Measured) -> Decoded:
    return parsed.readings(), parsed.flag_summary()


def _described(parsed: _Described) -> Decoded:
    return (), parsed.flag_summary()


def _date_time(payload: bytes) -> Decoded:
    when = decode_date_time(payload)
    return (), {"date_time": None if when is None else when.isoformat()}


def _string(uuid16: int) -> Callable[[bytes], Decoded]:
    def decode(payload: bytes) -> Decoded:
        return (), {device_info.STRING_UUIDS[uuid16]: device_info.decode_string(uuid16, payload)}

    return decode


_DECODERS: dict[int, Callable[[bytes], Decoded]] = {
    0x2A08: _date_time,
    0x2A18: lambda p: _measured(GlucoseMeasurement.decode(p)),
    0x2A19: lambda p: _measured(device_info.BatteryLevel.decode(p)),
    0x2A1C: lambda p: _measured(TemperatureMeasurement.decode(p)),
    0x2A1D: lambda p: ((), {"temperature_type": decode_temperature_type(p).label}),
    0x2A1E: lambda p: _measured(TemperatureMeasurement.decode(p, intermediate=True)),
    0x2A23: lambda p: ((), {"system_id": device_info.decode_system_id(p).value}),
    0x2A2B: lambda p: _described(CurrentTime.decode(p)),
    0x2A34: lambda p: _described(GlucoseContext.decode(p)),
    0x2A35: lambda p: _measured(BloodPressureMeasurement.decode(p)),
    0x2A36: lambda p: _measured(BloodPressureMeasurement.decode(p, intermediate=True)),
    0x2A37: lambda p: _measured(HeartRateMeasurement.decode(p)),
    0x2A49: lambda p: _described(BloodPressureFeature.decode(p)),
    0x2A52: lambda p: _described(racp.decode(p)),
    0x2A5E: lambda p: _measured(SpotCheckMeasurement.decode(p)),
    0x2A5F: lambda p: _measured(ContinuousMeasurement.decode(p)),
    0x2A60: lambda p: _described(PlxFeatures.decode(p)),
    0x2A9D: lambda p: _measured(WeightMeasurement.decode(p)),
    0x2AA7: lambda p: _measured(CgmMeasurement.decode(p)),
    0x2AAA: lambda p: _described(CgmSessionStartTime.decode(p)),
    **{uuid16: _string(uuid16) for uuid16 in device_info.STRING_UUIDS},

    0x2BF1: lambda p: _described(ObservationSchedule.decode(p)),
    0x2BF3: lambda p: _described(HealthSensorFeatures.decode(p)),
    0x2BF4: lambda p: _described(ControlPoint.decode(p)),
}


def _ghs(stored: bool) -> Callable[[bytes], tuple[list[dict[str, Any]], dict[str, object]]]:
    def decode(payload: bytes) -> tuple[list[dict[str, Any]], dict[str, object]]:
        parsed = HealthObservation.decode_notification(payload, stored=stored)
        return ghs_show.measurements(parsed), ghs_show.flags(parsed)

    return decode


# Characteristics whose entries are not built from Readings (strings, samples, codes).
_SHOWN = {0x2B8B: _ghs(stored=False), 0x2BDD: _ghs(stored=True)}

SUPPORTED_UUIDS = frozenset(_DECODERS) | frozenset(_SHOWN)


def _entry(
    mdc_code: int, value: Decimal | None, unit: str, absent: AbsentReason | None,
    device_time: datetime | None,
) -> dict[str, Any]:
    return {
        "type": mdc_code,
        "value": None if value is None else str(value),
        "unit": unit,
        "absent_reason": None if absent is None else absent.value,
        "device_time": None if device_time is None else device_time.isoformat(),
    }


def _entries(readings: tuple[Reading, ...]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for reading in readings:
        if reading.components:
            out.extend(_entry(c.mdc_code, c.value, c.unit, c.absent_reason, reading.device_time)
                       for c in reading.components)
        else:
            out.append(_entry(reading.mdc_code, reading.value, reading.unit,
                              reading.absent_reason, reading.device_time))
    return out


def decode_characteristic(uuid16: int, payload: bytes) -> dict[str, Any]:
    """Decode ``payload`` of characteristic ``uuid16``; DecodeError for an unknown uuid or a
    malformed payload."""
    shown = _SHOWN.get(uuid16)
    if shown is not None:
        entries, summary = shown(payload)
        return {"uuid": uuid_text(uuid16), "measurements": entries, "flags": summary}
    decoder = _DECODERS.get(uuid16)
    if decoder is None:
        raise decode_error(uuid16, "no decoder for this characteristic")
    readings, flags = decoder(payload)
    return {"uuid": uuid_text(uuid16), "measurements": _entries(readings), "flags": flags}
