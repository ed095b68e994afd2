"""ASTM E1394 (CLSI LIS2-A2) records: parsing, escaping, encoding and message builders.

A message is a header record (H), then patient (P), order (O), result (R), comment (C) and query
(Q) records, closed by a terminator (L); records end in CR. The header's first characters define
the delimiters (E1394 7.1.2, e.g. ``H|\\^&``): field, repeat, component, escape. Within a value the
escape sequences ``&F& &S& &R& &E&`` stand for the field, component, repeat and escape delimiter;
``&Xhh..&`` is hexadecimal data. Highlighting (``&H& &N&``) is dropped and any other sequence kept
as transmitted, so nothing is silently changed.

Fields are numbered as in the standard: field 1 is the record type. Each field is a tuple of
repeats, each repeat a tuple of components, all unescaped.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from drivers.serial.errors import AstmRecordError, SerialUsageError

Field = tuple[tuple[str, ...], ...]
FieldSpec = str | Sequence[str] | Sequence[Sequence[str]]

RECORD_TYPES = frozenset("HPOCRQLMS")  # M manufacturer, S scientific: passed through unparsed
_TS_FORMATS = {14: "%Y%m%d%H%M%S", 12: "%Y%m%d%H%M", 8: "%Y%m%d"}
_HEX = re.compile(r"^(?:[0-9A-Fa-f]{2})+$")


@dataclass(frozen=True, slots=True)
class Delimiters:
    field: str = "|"
    repeat: str = "\\"
    component: str = "^"
    escape: str = "&"

    def __post_init__(self) -> None:
        chars = (self.field, self.repeat, self.component, self.escape)
        if any(len(c) != 1 or c.isalnum() or c in "\r\n" for c in chars) or len(set(chars)) != 4:
            raise AstmRecordError("header defines unusable delimiters", delimiters=chars)

    @classmethod
    def from_header(cls, line: str) -> Delimiters:
        if len(line) < 5 or line[0] != "H":
            raise AstmRecordError("message does not start with a header record (H|\\^&)")
        return cls(line[1], line[2], line[3], line[4])

    @property
    def definition(self) -> str:
        """Field 2 of the header: repeat, component and escape delimiters."""
        return self.repeat + self.component + self.escape


DEFAULT_DELIMITERS = Delimiters()


def unescape(value: str, d: Delimiters) -> str:
    out: list[str] = []
    i = 0
    while i < len(value):
        start = value.find(d.escape, i)
        end = value.find(d.escape, start + 1) if start >= 0 else -1
        if start < 0 or end < 0:
            out.append(value[i:])
            break
        out.append(value[i:start])
        seq = value[start + 1 : end]
        simple = {"F": d.field, "S": d.component, "R": d.repeat, "E": d.escape, "H": "", "N": ""}
        if seq in simple:
            out.append(simple[seq])
        elif seq[:1] == "X" and _HEX.match(seq[1:]):
            out.append(bytes.fromhex(seq[1:]).decode("latin-1"))
        else:  # unknown sequence: keep it exactly as sent
            out.append(value[start : end + 1])
        i = end + 1
    return "".join(out)


def escape(value: str, d: Delimiters) -> str:
    value = value.replace(d.escape, f"{d.escape}E{d.escape}")
    for char, code in ((d.field, "F"), (d.component, "S"), (d.repeat, "R")):
        value = value.replace(char, f"{d.escape}{code}{d.escape}")
    return value


@dataclass(frozen=True, slots=True)
class Record:
    """One record; ``fields[0]`` is field 1 (the record type). ``raw`` is the text as received."""

    fields: tuple[Field, ...]
    raw: str = field(default="", compare=False)

    @property
    def type(self) -> str:
        return self.get(1)[:1].upper()

    def repeats(self, n: int) -> Field:
        return self.fields[n - 1] if 0 < n <= len(self.fields) else ()

    def components(self, n: int, repeat: int = 1) -> tuple[str, ...]:
        reps = self.repeats(n)
        return reps[repeat - 1] if 0 < repeat <= len(reps) else ()

    def get(self, n: int, component: int = 1, repeat: int = 1) -> str:
        comps = self.components(n, repeat)
        return comps[component - 1] if 0 < component <= len(comps) else ""

    def joined(self, n: int, d: Delimiters = DEFAULT_DELIMITERS) -> str:
        """Field ``n`` as one display string (components and repeats re-joined, unescaped)."""
        return d.repeat.join(d.component.join(c) for c in self.repeats(n))


def parse_record(line: str, d: Delimiters) -> Record:
    if not line or line[0].upper() not in RECORD_TYPES:
        raise AstmRecordError("unknown record type", record_type=line[:1])
    fields: list[Field] = []
    for n, raw in enumerate(line.split(d.field), start=1):
        if n == 2 and line[0] == "H":
            fields.append(((raw,),))  # the delimiter definition is not itself escaped
            continue
        fields.append(
            tuple(
                tuple(unescape(comp, d) for comp in rep.split(d.component))
                for rep in raw.split(d.repeat)
            )
        )
    return Record(tuple(fields), raw=line)


def encode_record(record: Record, d: Delimiters = DEFAULT_DELIMITERS) -> str:
    """The record's text without its CR (the inverse of :func:`parse_record`)."""
    parts: list[str] = []
    for n, reps in enumerate(record.fields, start=1):
        if n == 2 and record.type == "H":
            parts.append(d.definition)
            continue
        parts.append(d.repeat.join(d.component.join(escape(c, d) for c in rep) for rep in reps))
    return d.field.join(parts)


@dataclass(frozen=True, slots=True)
class Message:
    """One message, header first; the terminator (L) is kept if it was sent."""

    delimiters: Delimiters
    records: tuple[Record, ...]

    @property
    def header(self) -> Record:
        return self.records[0]

    def of_type(self, kind: str) -> tuple[Record, ...]:
        return tuple(r for r in self.records if r.type == kind)


def split_lines(text: str) -> list[str]:
    """Record texts: CR ends a record; CR LF / LF are tolerated in plain captures."""
    return [line for line in text.replace("\r\n", "\r").replace("\n", "\r").split("\r") if line]


def parse_messages(text: str) -> tuple[list[Message], list[AstmRecordError]]:
    """Every message in ``text``; bad records become errors, the rest is still returned."""
    messages: list[Message] = []
    errors: list[AstmRecordError] = []
    delims: Delimiters | None = None
    current: list[Record] = []

    def close() -> None:
        if delims is not None and current:
            if current[-1].type != "L":
                errors.append(AstmRecordError("message has no terminator record (L)"))
            messages.append(Message(delims, tuple(current)))

    for line in split_lines(text):
        if line[0] == "H":
            close()
            current = []
            try:
                delims = Delimiters.from_header(line)
            except AstmRecordError as exc:
                delims = None
                errors.append(exc)
                continue
        if delims is None:
            errors.append(AstmRecordError("record outside a message (no valid header before it)"))
            continue
        try:
            current.append(parse_record(line, delims))
        except AstmRecordError as exc:
            errors.append(exc)
    close()
    return messages, errors


# --- timestamps ----------------------------------------------------------------------------------


def parse_ts(text: str) -> datetime | None:
    """E1394 date/time YYYYMMDD[HHMM[SS]] as a naive datetime (the instrument's local clock)."""
    text = text.strip()
    if not text:
        return None
    fmt = _TS_FORMATS.get(len(text))
    if fmt is None or not text.isdigit():
        raise AstmRecordError("date/time is not YYYYMMDDHHMMSS", length=len(text))
    try:
        return datetime.strptime(text, fmt)  # noqa: DTZ007 - the zone is applied by the caller
    except ValueError:
        raise AstmRecordError("date/time is not a valid calendar time") from None


def format_ts(when: datetime) -> str:
    return when.strftime("%Y%m%d%H%M%S")


# --- builders (queries and orders for the sending side; results for the simulator) ---------------


def _field(spec: FieldSpec) -> Field:
    if isinstance(spec, str):
        return ((spec,),)
    if all(isinstance(x, str) for x in spec):
        return (tuple(str(x) for x in spec),)
    return tuple(tuple(rep) for rep in spec)


def make_record(kind: str, *fields: FieldSpec) -> Record:
    """A record of ``kind`` whose fields 2, 3, ... are ``fields`` (trailing empties dropped)."""
    if kind not in RECORD_TYPES:
        raise SerialUsageError(f"unknown record type {kind!r}")
    built = [_field(kind), *(_field(f) for f in fields)]
    while len(built) > 1 and built[-1] == (("",),):
        built.pop()
    return Record(tuple(built))


def universal_test_id(code: str) -> tuple[str, ...]:
    """Universal test id with the manufacturer's local code in component 4 (``^^^code``)."""
    return ("", "", "", code)


def header(
    sender: Sequence[str],
    *,
    receiver: str = "",
    processing_id: str = "P",
    version: str = "LIS2-A2",
    timestamp: datetime | None = None,
    control_id: str = "",
    delimiters: Delimiters = DEFAULT_DELIMITERS,
) -> Record:
    """H: sender name/id components (e.g. name, version, serial number) in field 5."""
    stamp = format_ts(timestamp) if timestamp else ""
    return make_record(
        "H",
        delimiters.definition,
        control_id,
        "",
        sender,
        "",
        "",
        "",
        "",
        receiver,
        "",
        processing_id,
        version,
        stamp,
    )


def patient(seq: int, *, practice_id: str = "", laboratory_id: str = "") -> Record:
    return make_record("P", str(seq), practice_id, laboratory_id)


def order(
    seq: int,
    specimen_id: str,
    tests: Sequence[str],
    *,
    priority: str = "R",
    action_code: str = "N",
    report_type: str = "O",
) -> Record:
    """O: specimen id (field 3), tests as repeats (field 5), action code (12), report type (26)."""
    tests_field = [universal_test_id(t) for t in tests]
    fields: list[FieldSpec] = [str(seq), specimen_id, "", tests_field, priority]
    fields += [""] * 5 + [action_code] + [""] * 13 + [report_type]
    return make_record("O", *fields)


def result(
    seq: int,
    test: str,
    value: str,
    *,
    units: str = "",
    reference_range: str = "",
    flags: str = "",
    status: str = "F",
    completed: datetime | None = None,
) -> Record:
    """R: test (3), value (4), units (5), range (6), flags (7), status (9), completed (13)."""
    stamp = format_ts(completed) if completed else ""
    return make_record(
        "R",
        str(seq),
        universal_test_id(test),
        value,
        units,
        reference_range,
        flags,
        "",
        status,
        "",
        "",
        "",
        stamp,
    )


def comment(seq: int, text: str, *, source: str = "I", kind: str = "G") -> Record:
    return make_record("C", str(seq), source, text, kind)


def query(
    seq: int,
    *,
    patient_id: str = "",
    specimen_id: str = "",
    tests: Sequence[str] = ("ALL",),
    status: str = "O",
) -> Record:
    """Q: starting range id (3: patient ^ specimen), tests (5), status code (13; O = orders)."""
    return make_record(
        "Q",
        str(seq),
        (patient_id, specimen_id),
        "",
        [universal_test_id(t) for t in tests],
        "",
        "",
        "",
        "",
        "",
        "",
        "",
        status,
    )


def terminator(seq: int = 1, code: str = "N") -> Record:
    return make_record("L", str(seq), code)


def encode_message(records: Sequence[Record], d: Delimiters = DEFAULT_DELIMITERS) -> list[str]:
    """Record texts ready for :meth:`drivers.serial.astm_link.AstmLink.send_message`."""
    return [encode_record(r, d) for r in records]


def message_text(records: Sequence[Record], d: Delimiters = DEFAULT_DELIMITERS) -> str:
    """The whole message as text, every record ending in CR."""
    return "".join(line + "\r" for line in encode_message(records, d))
