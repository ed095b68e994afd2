"""``gatewayctl decode``: decode a captured byte stream of a serial device for a technician.

The output is the same for every protocol::

    {"protocol": "astm", "measurements": [{"type": 160220 or null, "code": "4548-4",
      "value": "6.1" or null, "unit": "%", "device_time": "2024-03-01T10:15:00+00:00" or null}],
     "errors": ["frame checksum mismatch (received=3A, expected=3B)", ...]}

``type`` is the MDC code, null when we only have a private-use code (CRP, haemoglobin, white
cells); ``code`` is the LOINC code for laboratory results and the MDC code for oximetry. An ASTM
capture may be raw link-layer bytes (frames with STX/ETX; retransmitted frames are counted once)
or plain record text. Analyser clocks are read as UTC here, since a capture carries no zone.
"""

from __future__ import annotations

from typing import Any

from drivers.serial.astm_frames import STX, Frame, scan_frames
from drivers.serial.astm_records import parse_messages
from drivers.serial.astm_results import lab_results
from drivers.serial.cms50 import Cms50Decoder
from drivers.serial.errors import AstmLinkError
from drivers.serial.nonin import NoninDecoder
from drivers.serial.oximetry import OximetrySample, to_measurements
from gateway.errors import GatewayError, UsageError
from gateway.fhir.codes import PRIVATE_MDC_CODES
from gateway.model import DeviceId, DeviceIdKind, Measurement, utcnow

PROTOCOLS = ("astm", "nonin", "cms50")


def _line(error: GatewayError) -> str:
    extra = ", ".join(f"{key}={value}" for key, value in error.fields.items() if value is not None)
    return f"{error.message} ({extra})" if extra else error.message


def _row(m: Measurement, code: str) -> dict[str, Any]:
    return {
        "type": None if m.mdc_code in PRIVATE_MDC_CODES else m.mdc_code,
        "code": code,
        "value": None if m.value is None else format(m.value, "f"),
        "unit": m.unit,
        "device_time": m.device_time.isoformat() if m.device_time else None,
    }


def _astm_text(data: bytes, errors: list[GatewayError]) -> str:
    """Record text from link-layer bytes: frames joined, repeated frames taken once."""
    records: list[str] = []
    partial: list[str] = []
    previous: Frame | None = None
    for item in scan_frames(data):
        if not isinstance(item, Frame):
            errors.append(item)
            continue
        if item == previous:  # the sender repeated it after a NAK or a lost ACK
            continue
        previous = item
        partial.append(item.text)
        if item.final:
            records.append("".join(partial))
            partial = []
    if partial:  # never parse a cut record: a truncated value would read as a wrong number
        errors.append(AstmLinkError("capture ends inside a record; its frames are ignored"))
    return "".join(r if r.endswith("\r") else r + "\r" for r in records)


def _astm(data: bytes, errors: list[GatewayError]) -> list[dict[str, Any]]:
    text = _astm_text(data, errors) if STX in data else data.decode("latin-1")
    messages, parse_errors = parse_messages(text)
    errors.extend(parse_errors)
    rows: list[dict[str, Any]] = []
    received_at = utcnow()
    for message in messages:
        batch = lab_results(message, received_at=received_at)
        errors.extend(batch.errors)
        errors.extend(batch.warnings)
        rows.extend(_row(r.measurement, r.loinc.code) for r in batch.results)
    return rows


def _oximeter(protocol: str, data: bytes, errors: list[GatewayError]) -> list[dict[str, Any]]:
    decoder = NoninDecoder() if protocol == "nonin" else Cms50Decoder()
    device = DeviceId(DeviceIdKind.SERIAL, f"{protocol}-capture")
    rows: list[dict[str, Any]] = []
    received_at = utcnow()
    for item in decoder.feed(data, 0.0):
        if not isinstance(item, OximetrySample):
            errors.append(item)
            continue
        for m in to_measurements(
            item, device=device, received_at=received_at, source=f"serial.{protocol}"
        ):
            rows.append(_row(m, str(m.mdc_code)))
    return rows


def decode_capture(protocol: str, data: bytes) -> dict[str, Any]:
    """Decode ``data`` as ``protocol`` (astm, nonin or cms50); never raises for bad bytes."""
    name = protocol.strip().lower()
    if name not in PROTOCOLS:
        raise UsageError(
            f"unknown protocol {protocol!r}", hint=f"use one of: {', '.join(PROTOCOLS)}"
        )
    errors: list[GatewayError] = []
    rows = _astm(data, errors) if name == "astm" else _oximeter(name, data, errors)
    return {"protocol": name, "measurements": rows, "errors": [_line(e) for e in errors]}
