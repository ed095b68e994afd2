"""What ``gatewayctl decode --uuid 2b8b|2bdd`` prints for a GHS value (drivers/ble/decode.py).

The same JSON shape as every other profile: ``measurements`` (``type``, ``value``, ``unit``,
``absent_reason``, ``device_time``) and ``flags``. One entry per value: a compound observation
lists its parts, a bundle its members, a compound discrete its terms. A simple discrete value
prints its code in decimal; a string its text (unit null for both); NaN, NRes and the
infinities print ``value: null`` with the reason; a tick-counter time stamp prints
``device_time: null``; a sample array prints one entry with ``value: null`` and ``samples``, the
scaled values in order (an empty list, and the absent reason, when its scale is a special value).
``flags`` carries the structure without values: record number, class, header fields, time-stamp
flags, status bits, ids, unit codes, and what has no place in the model (``unusable``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from drivers.ble.ghs import UCUM_UNITS, HealthObservation, Part, walk
from drivers.ble.ghs_values import (
    FLAG_NAMES,
    STATUS_NAMES,
    AnyObservation,
    Bundle,
    ComponentValue,
    CompoundDiscreteValue,
    CompoundValue,
    DiscreteValue,
    NumericValue,
    ObservationClass,
    SampleArrayValue,
    StateEventValue,
    StringValue,
    UnsupportedObservation,
)
from drivers.ble.measure import split
from drivers.ble.wire import bit_names
from gateway.model import AbsentReason


def _entry(mdc: int, value: str | None, unit: str | None, absent: AbsentReason | None,
           when: datetime | None) -> dict[str, Any]:
    return {"type": mdc, "value": value, "unit": unit,
            "absent_reason": None if absent is None else absent.value,
            "device_time": None if when is None else when.isoformat()}


def _shown(mdc: int, value: ComponentValue, when: datetime | None) -> list[dict[str, Any]]:
    if isinstance(value, NumericValue):
        number, absent = split(value.value)
        return [_entry(mdc, None if number is None else str(number),
                       UCUM_UNITS.get(value.unit_code), absent, when)]
    if isinstance(value, DiscreteValue):
        return [_entry(mdc, str(value.code), None, None, when)]
    if isinstance(value, StateEventValue):
        return [_entry(mdc, str(value.value), None, None, when)]
    if isinstance(value, CompoundDiscreteValue):
        return [_entry(mdc, str(code), None, None, when) for code in value.codes]
    if isinstance(value, StringValue):
        return [_entry(mdc, value.text, None, None, when)]
    scaled = value.scaled()
    entry = _entry(mdc, None, UCUM_UNITS.get(value.unit_code),
                   scaled if isinstance(scaled, AbsentReason) else None, when)
    entry["samples"] = [] if isinstance(scaled, AbsentReason) else [str(s) for s in scaled]
    return [entry]


def measurements(parsed: HealthObservation) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for item in walk(parsed.observation):
        if not isinstance(item, Part):
            continue
        stamp = item.header.time_stamp
        when = None if stamp is None else stamp.device_time()
        if isinstance(item.value, CompoundValue):
            for c in item.value.components:
                out.extend(_shown(c.component_type, c.value, when))
        else:
            out.extend(_shown(item.mdc_code, item.value, when))
    return out


def _describe(observation: AnyObservation) -> dict[str, object]:
    if isinstance(observation, UnsupportedObservation):
        return {"class_type": observation.class_type, "octets": len(observation.body),
                "reason": observation.reason}
    header = observation.header
    out: dict[str, object] = {
        "class": ObservationClass(observation.class_type).label,
        "fields": bit_names(header.flags, FLAG_NAMES),
        "type": header.observation_type,
        "time_stamp": None if header.time_stamp is None else header.time_stamp.flag_summary(),
        "measurement_status": None if header.status is None
        else bit_names(header.status, STATUS_NAMES),
        "object_id": header.object_id,
        "patient": header.patient,
        "supplemental_information": None if header.supplemental is None
        else list(header.supplemental),
        "derived_from": None if header.derived_from is None else list(header.derived_from),
        "is_member_of": None if header.member_of is None else list(header.member_of),
    }
    if isinstance(observation, Bundle):
        out["members"] = [_describe(m) for m in observation.members]
    elif isinstance(observation.value, NumericValue | SampleArrayValue):
        out["unit_code"] = observation.value.unit_code
    return out


def flags(parsed: HealthObservation) -> dict[str, object]:
    return {"record_number": parsed.record_number,
            "observation": _describe(parsed.observation),
            "unusable": [{"class_type": u.class_type, "type": u.observation_type,
                          "reason": u.reason} for u in parsed.unusable()]}
