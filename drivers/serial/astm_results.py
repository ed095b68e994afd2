"""ASTM E1394 result records (R) as :class:`~gateway.model.Measurement` values.

Which analyte a result is comes from the analyser's own test code (R field 3, the manufacturer's
local code in component 4, else component 1), looked up in a configurable table. Each analyte has
an MDC code and the LOINC terms its units admit; a result whose unit fits no term of its analyte is
not guessed at: it is reported as an error (like an unknown test code) so the table gets fixed.

Values keep their transmitted digits (``Decimal("5.0")``). A censored value (``<5``, ``>300``, or
a number flagged ``<``/``>`` - outside the instrument's measuring range) is never turned into a
number: the measurement is absent with reason -INF (below range) or +INF (above range), as IEEE
11073-20601 does for out-of-range readings, and the limit is kept on the :class:`LabResult`.

Result status (R field 9): X "cannot be done" and I "in instrument pending" are absent
(not measured); P preliminary is an early indication; W is questionable; V operator-verified is
validated. Preliminary results and corrections (C) get their status as ``supplemental`` so their
identifier differs from the final result they precede or correct (the provider de-duplicates by
identifier: a correction must not be dropped as a duplicate). Header processing id T/D/Q
(training, debugging, quality control) or an order action code Q (QC specimen) marks test data.

Identity (docs/wire-format.md, section 6.5). A laboratory result is not identified by analyte,
value and time: two specimens measured in the same second can give the same value. ASTM E1394 /
CLSI LIS2-A2 place a result in a hierarchy whose sequence numbers restart below each parent
(P field 2 per message, O field 2 per patient, R field 2 per order), and identify the specimen in
the order record (O field 3 specimen ID, O field 4 instrument specimen ID). ``supplemental`` (which
the PHD IG identifier includes) therefore carries ``astm`` then, joined by ``/``: the specimen IDs,
the patient / order / result sequence numbers, the full universal test ID (R field 3: a dilution or
a replicate in its later components is another result), the instrument (R field 14) when sent, the
message time (H field 14) when the order names no specimen, and the status label above. Every part
is percent-escaped, so the joined text is injective. A result sent twice (a link-layer retry, the
same message again) keeps its identifier; over-distinguishing costs at most a duplicate
Observation, a collision would lose a result at the provider.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from decimal import Decimal
from types import MappingProxyType
from typing import Any
from urllib.parse import quote

from drivers.serial.astm_records import Delimiters, Message, Record, parse_ts
from drivers.serial.errors import AstmRecordError, SerialUsageError
from gateway.errors import ModelError
from gateway.fhir import codes
from gateway.fhir.codes import Loinc
from gateway.model import (
    INTERPRETATION_CODES,
    MAX_DEVICE_ID_CHARS,
    AbsentReason,
    DeviceId,
    DeviceIdKind,
    Measurement,
    MeasurementStatus,
    TimeQuality,
)

# The lab analytes' MDC codes and LOINC terms live in gateway.fhir.codes (the FHIR mapping reads
# them there); private MDC codes are reported as "type": null by the decode CLI.

_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)"
_PLAIN = re.compile(rf"^{_NUMBER}$")
_CENSORED = re.compile(rf"^(<=|>=|<|>)\s*({_NUMBER})$")
_TEST_PROCESSING = frozenset({"T", "D", "Q"})  # H field 12: training, debugging, quality control


@dataclass(frozen=True, slots=True)
class Analyte:
    """A laboratory quantity: its MDC code and the LOINC term for each admitted UCUM unit."""

    name: str
    mdc_code: int
    loinc: tuple[Loinc, ...]
    unitless: str | None = None  # the UCUM unit to assume when the analyser sends none

    def loinc_for(self, unit: str) -> Loinc | None:
        return next((term for term in self.loinc if unit in term.units), None)


def _analyte(mdc_code: int, unitless: str | None = None) -> Analyte:
    info = codes.info(mdc_code)
    if info is None:  # pragma: no cover - the table in gateway.fhir.codes is static
        raise SerialUsageError(f"MDC code {mdc_code} is missing from gateway.fhir.codes")
    return Analyte(info.display, mdc_code, info.loinc, unitless)


CRP = _analyte(codes.MDC_PRIVATE_CRP)
GLUCOSE = _analyte(codes.MDC_CONC_GLU_UNDETERMINED_PLASMA)
HBA1C = _analyte(codes.MDC_CONC_HBA1C)
INR = _analyte(codes.MDC_RATIO_INR_COAG, unitless="{INR}")
HAEMOGLOBIN = _analyte(codes.MDC_PRIVATE_HAEMOGLOBIN)
WBC = _analyte(codes.MDC_PRIVATE_WBC)

# Analyser test codes (upper case) -> analyte. Drivers pass their own table for other analysers.
DEFAULT_TEST_TABLE: Mapping[str, Analyte] = MappingProxyType(
    {
        "CRP": CRP,
        "GLU": GLUCOSE,
        "GLUC": GLUCOSE,
        "HBA1C": HBA1C,
        "A1C": HBA1C,
        "INR": INR,
        "PT-INR": INR,
        "HB": HAEMOGLOBIN,
        "HGB": HAEMOGLOBIN,
        "WBC": WBC,
    }
)

# Unit spellings seen from analysers (lower case) -> UCUM. Anything else must already be UCUM.
UNIT_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "mg/l": "mg/L",
        "mg/dl": "mg/dL",
        "mmol/l": "mmol/L",
        "g/dl": "g/dL",
        "g/l": "g/L",
        "mmol/mol": "mmol/mol",
        "%": "%",
        "inr": "{INR}",
        "{inr}": "{INR}",
        "10^9/l": "10*9/L",
        "10*9/l": "10*9/L",
        "x10^9/l": "10*9/L",
        "10e9/l": "10*9/L",
        "10^3/ul": "10*3/uL",
        "10*3/ul": "10*3/uL",
        "x10^3/ul": "10*3/uL",
        "k/ul": "10*3/uL",
    }
)


@dataclass(frozen=True, slots=True)
class AstmOptions:
    """How to turn one analyser's results into measurements."""

    table: Mapping[str, Analyte] = field(default_factory=lambda: DEFAULT_TEST_TABLE)
    device_tz: tzinfo = UTC  # the zone the analyser's clock is set to (router's zone, usually)
    time_quality: TimeQuality = TimeQuality.UNSYNCED
    serial_component: int = 3  # which component of header field 5 holds the serial number
    fallback_device: DeviceId | None = None  # used when the header names no sender
    source: str = "serial.astm"


@dataclass(frozen=True, slots=True)
class LabResult:
    """A measurement plus what the analyser said about it that Measurement has no field for."""

    measurement: Measurement
    test_code: str
    analyte: Analyte
    loinc: Loinc
    result_status: str  # R field 9, as sent
    abnormal_flags: tuple[str, ...]  # R field 7 (L, H, LL, HH, <, >, N, A, ...), as sent
    reference_range: str
    comparator: str | None = None  # set for a censored value: "<", "<=", ">", ">="
    limit: Decimal | None = None


@dataclass(frozen=True, slots=True)
class LabResults:
    results: tuple[LabResult, ...]
    errors: tuple[AstmRecordError, ...]  # records that gave no measurement
    warnings: tuple[AstmRecordError, ...]  # measurements made, but something was off


def _serial_id(text: str, what: str) -> DeviceId:
    """The analyser's identity from header text; AstmRecordError (never ModelError) when the
    text cannot be one (a control byte, more than the model's 128 characters). The error names
    the length only: the text itself is the device's and stays out of logs."""
    try:
        return DeviceId(DeviceIdKind.SERIAL, text)
    except ModelError:
        raise AstmRecordError(
            f"analyser {what} unusable as its identity (control characters, or longer than "
            f"{MAX_DEVICE_ID_CHARS} characters)",
            length=len(text),
        ) from None


def _device(header: Record, options: AstmOptions) -> tuple[DeviceId, list[AstmRecordError]]:
    comps = header.components(5)
    k = options.serial_component
    serial = comps[k - 1].strip() if 0 < k <= len(comps) else ""
    if serial:
        return _serial_id(serial, "serial number"), []
    if options.fallback_device is not None:
        return options.fallback_device, []
    name = "^".join(c for c in comps if c).strip()
    if not name:
        raise AstmRecordError("header names no sender: the analyser cannot be identified")
    warning = AstmRecordError("header has no serial-number component; using the sender name")
    return _serial_id(name[:MAX_DEVICE_ID_CHARS], "sender name"), [warning]


def _status(record: Record, test_data: bool) -> tuple[MeasurementStatus, str]:
    code = record.get(9).strip().upper()
    status = MeasurementStatus.TEST_DATA if test_data else MeasurementStatus.NONE
    extra = {
        "P": (MeasurementStatus.EARLY_INDICATION, "preliminary"),
        "C": (MeasurementStatus.NONE, "correction"),
        "W": (MeasurementStatus.QUESTIONABLE, ""),
        "V": (MeasurementStatus.VALIDATED, ""),
        "X": (MeasurementStatus.NOT_AVAILABLE, ""),
        "I": (MeasurementStatus.NOT_AVAILABLE, ""),
    }.get(code, (MeasurementStatus.NONE, ""))
    return status | extra[0], extra[1]


@dataclass(frozen=True, slots=True)
class _Position:
    """Where a result sits in its message: what makes it one result and not another."""

    message_time: str = ""  # H field 14, used only when the order names no specimen
    patient_seq: str = ""  # P field 2
    order_seq: str = ""  # O field 2
    specimen_id: str = ""  # O field 3 (all components)
    instrument_specimen_id: str = ""  # O field 4 (all components)


def _esc(text: str) -> str:
    """Percent-escape one identity part so that joining parts with '/' ':' '^' stays injective."""
    return quote(text, safe="")


def _field_text(record: Record, n: int) -> str:
    """Field ``n`` with every component escaped, components joined by '^', repeats by '~'."""
    text = "~".join("^".join(_esc(c.strip()) for c in rep) for rep in record.repeats(n))
    return text if text.strip("^~") else ""


def _identity(record: Record, position: _Position, label: str) -> str:
    """The ``supplemental`` text that makes this result's PHD IG identifier its own."""
    parts = ["astm"]
    if position.specimen_id:
        parts.append("specimen:" + position.specimen_id)
    if position.instrument_specimen_id:
        parts.append("instrument-specimen:" + position.instrument_specimen_id)
    if not (position.specimen_id or position.instrument_specimen_id):
        parts.append("message:" + _esc(position.message_time))
    parts += [
        "patient:" + _esc(position.patient_seq),
        "order:" + _esc(position.order_seq),
        "result:" + _esc(record.get(2).strip()),
        "test:" + _field_text(record, 3),
    ]
    instrument = _field_text(record, 14)
    if instrument:
        parts.append("instrument:" + instrument)
    if label:
        parts.append(label)
    return "/".join(parts)


def _test_code(record: Record) -> str:
    comps = record.components(3)
    local = comps[3] if len(comps) > 3 else ""
    return (local or (comps[0] if comps else "")).strip().upper()


def _unit(raw: str, analyte: Analyte) -> str:
    text = raw.strip()
    if not text and analyte.unitless:
        return analyte.unitless
    return UNIT_ALIASES.get(text.lower(), text)


def _measurement(test: str, **fields: Any) -> Measurement:
    """The Measurement, or AstmRecordError when the model refuses the fields an analyser sent
    (a unit or status it cannot hold): the device's doing, never an untyped error."""
    try:
        return Measurement(**fields)
    except ModelError:
        raise AstmRecordError("result fields unusable for a measurement", test=test) from None


def _result(
    record: Record,
    *,
    device: DeviceId,
    test_data: bool,
    received_at: datetime,
    options: AstmOptions,
    delimiters: Delimiters,
    position: _Position,
) -> tuple[LabResult, list[AstmRecordError]]:
    warnings: list[AstmRecordError] = []
    code = _test_code(record)
    analyte = options.table.get(code)
    if analyte is None:
        raise AstmRecordError("test code not in the analyser test table", test=code)
    # Joined: "10^9/L" sent without escaping its "^" arrives as two components.
    unit = _unit(record.joined(5, delimiters), analyte)
    loinc = analyte.loinc_for(unit)
    if loinc is None:
        raise AstmRecordError("unit not admitted for this test", test=code, unit=unit)
    status, label = _status(record, test_data)
    flags = tuple(rep[0].strip() for rep in record.repeats(7) if rep and rep[0].strip())
    text = record.get(4).strip()
    value: Decimal | None = None
    absent: AbsentReason | None = None
    comparator: str | None = None
    limit: Decimal | None = None
    censored = _CENSORED.match(text)
    if status & MeasurementStatus.NOT_AVAILABLE:
        absent = AbsentReason.NOT_MEASURED
    elif censored:
        comparator, limit = censored.group(1), Decimal(censored.group(2))
    elif _PLAIN.match(text):
        if "<" in flags or ">" in flags:  # a number outside the measuring range: a limit
            comparator, limit = ("<" if "<" in flags else ">"), Decimal(text)
        else:
            value = Decimal(text)
    else:
        absent = AbsentReason.NAN
        if text:
            warnings.append(AstmRecordError("result value is not a number", test=code))
    if comparator is not None:
        below = comparator.startswith("<")
        absent = AbsentReason.NEGATIVE_INFINITY if below else AbsentReason.POSITIVE_INFINITY
    try:
        local = parse_ts(record.get(13))
    except AstmRecordError as exc:
        local = None
        warnings.append(exc)
    device_time = local.replace(tzinfo=options.device_tz) if local else None
    measurement = _measurement(
        code,
        device=device,
        mdc_code=analyte.mdc_code,
        value=value,
        unit=unit,
        received_at=received_at,
        source=options.source,
        raw=record.raw.encode("latin-1", "replace"),  # records come from Latin-1 bytes
        absent_reason=absent,
        device_time=device_time,
        time_quality=options.time_quality if device_time else TimeQuality.ABSENT,
        status=status,
        supplemental=_identity(record, position, label),
        interpretation=tuple(f for f in flags if f in INTERPRETATION_CODES),
    )
    if any(f not in INTERPRETATION_CODES for f in flags):
        warnings.append(AstmRecordError("abnormal flag not understood; kept in the raw record",
                                        test=code))
    return LabResult(
        measurement,
        code,
        analyte,
        loinc,
        record.get(9).strip(),
        flags,
        record.joined(6, delimiters),
        comparator,
        limit,
    ), warnings


def lab_results(
    message: Message,
    *,
    received_at: datetime,
    options: AstmOptions | None = None,
) -> LabResults:
    """Every result record of ``message`` as a :class:`LabResult` (or an error saying why not)."""
    options = options or AstmOptions()
    header = message.header
    try:
        device, warnings = _device(header, options)
    except AstmRecordError as exc:
        return LabResults((), (exc,), ())
    processing_test = header.get(12).strip().upper() in _TEST_PROCESSING
    results: list[LabResult] = []
    errors: list[AstmRecordError] = []
    order_qc = False
    position = _Position(message_time=header.get(14).strip())
    for record in message.records:
        if record.type == "P":
            position = _Position(message_time=position.message_time, patient_seq=_seq(record))
        elif record.type == "O":
            order_qc = record.get(12).strip().upper() == "Q"
            position = _Position(
                message_time=position.message_time,
                patient_seq=position.patient_seq,
                order_seq=_seq(record),
                specimen_id=_field_text(record, 3),
                instrument_specimen_id=_field_text(record, 4),
            )
        elif record.type == "R":
            try:
                result, more = _result(
                    record,
                    device=device,
                    test_data=processing_test or order_qc,
                    received_at=received_at,
                    options=options,
                    delimiters=message.delimiters,
                    position=position,
                )
            except AstmRecordError as exc:
                errors.append(exc)
                continue
            results.append(result)
            warnings.extend(more)
    return LabResults(tuple(results), tuple(errors), tuple(warnings))


def _seq(record: Record) -> str:
    return record.get(2).strip()
