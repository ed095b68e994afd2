"""HL7 FHIR R4 mapping of measurements, after the Personal Health Device IG (PHD IG, STU2).

Pure functions, no I/O. ``observation`` / ``bundle`` run on the gateway; the inverse
(``measurement_from_observation`` / ``measurements_from_bundle``, provider/fhir_read.py)
runs at the provider and gives back the very ``Measurement`` the driver produced: every field the
IG has no element for travels in an extension under ``https://homecare-gateway.invalid/fhir``, so
nothing is altered on the way. This module builds the Observations, their conditional-create
identifier and the transaction Bundle; the Device resources, identifiers and references are in
gateway/fhir/device.py, the URLs and code tables both directions share in gateway/fhir/vocab.py.

Choices the IG leaves open, made here:
- References: a transaction Bundle with urn:uuid fullUrls (as the IG's bundle example does); each
  reference also carries the target's identifier, so an Observation read on its own still names
  its device, gateway and patient. The urn:uuids are uuid5 of identifiers: same input, same bytes.
- Subject: the pseudonymous episode, by identifier (the gateway holds no Patient resource).
- Status (IG: no rule for Observation.status): INVALID -> "cancelled" ("measurement not completed";
  "entered-in-error" would claim the record should never have existed, and servers treat it as a
  retraction); early-indication / msmt-ongoing / calibration-ongoing -> "preliminary"; else "final".
- Sample arrays (a spirometry curve) are valueSampledData (IG: sample arrays as SampledData):
  origin 0 in the reading's UCUM unit, period in ms, dimensions 1, no factor, and ``data`` the
  values themselves, each as its exact decimal text (so 2.50 stays 2.50); text observations are
  valueString with the unit in our extension; a coded result (a simple discrete observation)
  is valueCodeableConcept with its MDC coding. In the identifier the value part of a sample
  array or text is a SHA-256 of the data ("sd" / "st" prefix: injective in practice, bounded in
  length), of a code "cc" and the code.
- Test data (PHD IG: test / demo data -> meta.security HTEST from v3-ActReason): an Observation
  whose device flags test or demo data, a simulator's reading, and every Observation of a test
  episode (``GatewayInfo.test_episode``: enrolment bundle or ``[gateway] test_episode``); the
  Bundle of a test episode carries HTEST itself, so a receiver can tell the episode's kind from
  the record alone (a clinical episode's QC result is HTEST, its Bundle is not).
- Time: effectiveDateTime is the device's own timestamp, never replaced. A meta.tag always states
  its quality: "synced", "unsynced" (kept as the device sent it, flagged), or "absent" (effective is
  the gateway's reception time, as the IG prescribes for devices without a clock).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import string
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from gateway.errors import ModelError
from gateway.fhir import codes
from gateway.fhir.device import device_ref, device_resource, gateway_device, gateway_ref
from gateway.fhir.vocab import (
    ABSENT_TO_DAR,
    CS_ABSENT,
    CS_CATEGORY,
    CS_DAR,
    CS_POCD_STATUS,
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
    SID_EPISODE,
    SID_OBSERVATION,
    STATUS_CODES,
    TIME_DISPLAY,
    GatewayInfo,
    coding,
    fhir_status,
    is_test,
    urn,
)
from gateway.model import AbsentReason, DeviceId, Measurement, MeasurementStatus, TimeQuality

# GatewayInfo: ``bundle`` and ``observation`` take it, and callers build it as ``fhir.GatewayInfo``.
__all__ = ["GatewayInfo", "bundle", "observation", "observation_identifier"]

_Y2K = datetime(2000, 1, 1, tzinfo=UTC)  # epoch of the IG's reported-timestamp identifier part


# Per (device, type, unit) most of an Observation never changes: the code concept, its category,
# the device and gateway references, the subject. They are built once and shared between the
# Observations that use them (read-only by contract: everything downstream serialises them, and
# the golden vectors pin the bytes), so that per reading only the value, the times and the
# identifiers are built (docs/performance.md, "Where the time goes").
_SHARED = 4096  # cache entries: devices x types x units of one home, with room to spare


@functools.lru_cache(maxsize=_SHARED)
def _mdc_concept(code: int, unit: str) -> dict[str, Any]:
    """MDC coding first (IG: shall), then the LOINC terms valid for ``unit``."""
    known = codes.info(code)
    if known is None:
        return {"coding": [coding(codes.MDC_SYSTEM, str(code))], "text": f"MDC code {code}"}
    codings = [coding(codes.MDC_SYSTEM, str(code), known.reference_id)]
    codings += [coding(codes.LOINC_SYSTEM, t.code, t.display) for t in known.loinc_for(unit)]
    return {"coding": codings, "text": known.display}


def _fhir_time(t: datetime, what: str) -> str:
    offset = t.utcoffset()
    if offset is None:
        raise ModelError(f"{what} must be timezone-aware (FHIR dateTime needs an offset)")
    if offset % timedelta(minutes=1):
        raise ModelError(f"{what} has a UTC offset with seconds, which FHIR cannot express")
    return t.isoformat()


def percent_encoder(safe: str) -> Callable[[str], str]:
    """``urllib.parse.quote(text, safe=safe)``, the same output, faster: quote walks every byte
    in Python; this leaves runs of safe characters to the regex engine and encodes the rest
    (UTF-8 bytes as upper-case %XX, as quote does). A property test holds the two equal."""
    allowed = "".join(sorted(set(_ALWAYS_SAFE + safe)))
    unsafe = re.compile("[^" + re.escape(allowed) + "]+")

    def encode(match: re.Match[str]) -> str:
        return _encoded(match.group())

    def quote_fast(text: str) -> str:
        return unsafe.sub(encode, text)

    return quote_fast


@functools.lru_cache(maxsize=1024)  # the same few runs ("%", ";", "|", " ") again and again
def _encoded(run: str) -> str:
    return "".join(f"%{byte:02X}" for byte in run.encode())


_ALWAYS_SAFE = string.ascii_letters + string.digits + "_.-~"  # urllib.parse's, RFC 3986
_quote_field = percent_encoder(":/[]{}^*'!+@")
_quote_search = percent_encoder(":/|")


@functools.lru_cache(maxsize=_SHARED)  # device ids, episode, units, common values repeat
def _q(text: str) -> str:
    """Escape one identifier field so that joining fields with '-' ',' ';' stays injective."""
    return _quote_field(text).replace("-", "%2D")


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
    if m.samples:
        data = f"{m.sample_period_ms} {_sample_data(m.samples)}".encode()
        value = "sd" + hashlib.sha256(data).hexdigest()
    elif m.text is not None:
        value = "st" + hashlib.sha256(m.text.encode()).hexdigest()
    elif m.value_code is not None:
        value = f"cc{m.value_code}"
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
            "coding": [coding(CS_DAR, ABSENT_TO_DAR[absent]), coding(CS_ABSENT, absent.value)],
            "text": f"device reported no value ({absent.value})",
        }
    return out


def _sample_data(samples: Sequence[Decimal]) -> str:
    """SampledData.data: the decimals, space-separated, each exactly as held."""
    return " ".join(str(v) for v in samples)


def _measured_elements(m: Measurement) -> dict[str, Any]:
    """The value[x] of ``m`` (with the unit extension where value[x] cannot carry the unit)."""
    if m.samples:
        return {
            "valueSampledData": {
                "origin": {
                    "value": Decimal(0),
                    "unit": m.unit,
                    "system": codes.UCUM_SYSTEM,
                    "code": m.unit,
                },
                "period": m.sample_period_ms,
                "dimensions": 1,
                "data": _sample_data(m.samples),
            }
        }
    if m.text is not None:
        return {"extension": [{"url": EXT_UNIT, "valueCode": m.unit}], "valueString": m.text}
    if m.value_code is not None:
        return {
            "extension": [{"url": EXT_UNIT, "valueCode": m.unit}],
            "valueCodeableConcept": _mdc_concept(m.value_code, m.unit),
        }
    return _value_elements(m.value, m.absent_reason, m.unit)


def _interpretation(status: MeasurementStatus) -> list[dict[str, Any]]:
    bits = int(status)
    if bits < 0:
        raise ModelError(f"measurement status must be a set of bits, got {bits}")
    out = []
    for bit in range(bits.bit_length()):
        if bits >> bit & 1:
            ours, pocd = STATUS_CODES.get(bit, (f"bit-{bit}", None))
            codings = [coding(CS_STATUS, ours)]
            if pocd is not None:
                codings.append(coding(CS_POCD_STATUS, pocd))
            out.append({"coding": codings})
    return out


_TIME_TAGS = {
    q: [coding(CS_TIME_QUALITY, q.value, TIME_DISPLAY[q])] for q in TimeQuality
}


@functools.lru_cache(maxsize=_SHARED)
def _category(mdc_code: int) -> list[dict[str, Any]] | None:
    known = codes.info(mdc_code)
    if known is None or known.category is None:
        return None
    return [{"coding": [coding(CS_CATEGORY, known.category)]}]


@functools.lru_cache(maxsize=_SHARED)
def _subject(episode_id: str) -> dict[str, Any]:
    return {"type": "Patient", "identifier": {"system": SID_EPISODE, "value": episode_id}}


@functools.lru_cache(maxsize=_SHARED)
def _device_ref(device: DeviceId) -> dict[str, Any]:
    return device_ref(device)


@functools.lru_cache(maxsize=64)
def _gateway_extension(gw: GatewayInfo) -> dict[str, Any]:
    return {"url": EXT_GATEWAY, "valueReference": gateway_ref(gw)}


def observation(m: Measurement, gw: GatewayInfo) -> dict[str, Any]:
    """The R4 Observation for one measurement (IG PhdNumeric / PhdCompoundNumeric shape)."""
    meta: dict[str, Any] = {"tag": _TIME_TAGS[m.time_quality]}
    if gw.test_episode or is_test(m.status, m.device):
        meta["security"] = [HTEST]  # IG: test-data / demo-data -> HTEST
    values = _measured_elements(m)
    ext: list[dict[str, Any]] = [
        _gateway_extension(gw),
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
        "status": fhir_status(m.status),
        "code": _mdc_concept(m.mdc_code, m.unit),
        "subject": _subject(gw.episode_id),
        "effectiveDateTime": _fhir_time(effective, "device_time"),
        "device": _device_ref(m.device),
        **values,
    }
    category = _category(m.mdc_code)
    if category is not None:
        obs["category"] = category
    if m.status or m.interpretation:
        obs["interpretation"] = [
            *_interpretation(m.status),
            *({"coding": [coding(CS_V3_INTERPRETATION, c)]} for c in m.interpretation),
        ]
    if m.components:
        obs["component"] = [
            {
                "code": _mdc_concept(c.mdc_code, c.unit),
                **_value_elements(c.value, c.absent_reason, c.unit),
            }
            for c in m.components
        ]
    return obs


_SEARCH_SPECIAL = re.compile(r"([\\,$|])")


def _if_none_exist(system: str, value: str) -> str:
    """Search for the identifier token, escaped per FHIR search (\\ , $ |) then for the URL."""

    def esc(text: str) -> str:
        return _SEARCH_SPECIAL.sub(r"\\\1", text)

    return "identifier=" + _quote_search(f"{esc(system)}|{esc(value)}")


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
    gw_ref = gateway_ref(gw)
    entries = [_post(gw_ref["reference"], gateway_device(gw), gw_ref["identifier"])]
    for device in dict.fromkeys(m.device for m in measurements):
        ref = device_ref(device)
        entries.append(_post(ref["reference"], device_resource(device), ref["identifier"]))
    seen: dict[str, int] = {}
    for m in measurements:
        obs = observation(m, gw)
        ident = obs["identifier"][0]
        repeat = seen.get(ident["value"], 0)
        seen[ident["value"]] = repeat + 1
        suffix = (str(repeat),) if repeat else ()
        entries.append(
            _post(urn("Observation", SID_OBSERVATION, ident["value"], *suffix), obs, ident)
        )
    out: dict[str, Any] = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    if gw.test_episode:  # the episode's own label: receivers keep test and clinical chains apart
        out["meta"] = {"security": [HTEST]}
    return out
