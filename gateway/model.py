"""The measurement model every driver produces and every later stage consumes.

A ``Measurement`` is a frozen value: who measured (device identity), what (an IEEE 11073-10101 MDC
code), the value as a ``Decimal`` that keeps the transmitted precision (2.0 and 2.00 are different
readings, so equality here compares digits and exponent, not numeric value), the UCUM unit, the
device's own timestamp if it sent one, the gateway's reception time, the device-reported status and
the raw bytes the value was decoded from.
"""

from __future__ import annotations

import enum
import re
from collections import deque
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from gateway.errors import ModelError

_HEX = re.compile(r"^[0-9A-F]+$")
MAX_DEVICE_ID_CHARS = 128  # a serial number or sender name longer than this is not an identity


class DeviceIdKind(enum.StrEnum):
    """How a device is identified (PHD IG: SYSID for EUI-64, BTMAC for a Bluetooth address)."""

    BTMAC = "btmac"  # EUI-48 Bluetooth device address
    EUI64 = "eui64"  # IEEE EUI-64 system id (Device Information 0x2A23)
    SERIAL = "serial"  # manufacturer serial number of a wired (serial-port) instrument
    SIM = "sim"  # a simulated device of the demo / test rig


@dataclass(frozen=True, slots=True)
class DeviceId:
    """A device identity, normalised on construction so equal devices compare equal."""

    kind: DeviceIdKind
    value: str

    def __post_init__(self) -> None:
        raw = self.value.strip()
        if self.kind is DeviceIdKind.BTMAC:
            norm = raw.upper().replace("-", ":")
            if len(norm) != 17 or not _HEX.match(norm.replace(":", "")):
                raise ModelError(f"not a Bluetooth address: {self.value!r}", kind=self.kind)
        elif self.kind is DeviceIdKind.EUI64:
            norm = raw.upper().replace(":", "").replace("-", "")
            if len(norm) != 16 or not _HEX.match(norm):
                raise ModelError(f"not an EUI-64: {self.value!r}", kind=self.kind)
        else:
            norm = raw
            if not norm or len(norm) > MAX_DEVICE_ID_CHARS or not norm.isprintable():
                # The length, not the text: a device's garbage must not reach a log through us.
                raise ModelError(
                    f"bad {self.kind} device id ({len(raw)} characters, control characters or "
                    f"more than {MAX_DEVICE_ID_CHARS})",
                    kind=self.kind,
                )
        object.__setattr__(self, "value", norm)

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


class AbsentReason(enum.StrEnum):
    """Why a measurement carries no number (IEEE 11073-20601 special values and device states)."""

    NAN = "nan"  # "not a number": the device could not produce a value
    NRES = "nres"  # "not at this resolution"
    POSITIVE_INFINITY = "+inf"
    NEGATIVE_INFINITY = "-inf"
    RESERVED = "reserved"  # a reserved special value (a newer spec or a broken device)
    SENSOR_OFF = "sensor-off"  # probe disconnected / finger out
    NOT_MEASURED = "not-measured"


class MeasurementStatus(enum.IntFlag):
    """Device-reported measurement status, after IEEE 11073-20601 MeasurementStatus."""

    NONE = 0
    INVALID = 1 << 0
    QUESTIONABLE = 1 << 1
    NOT_AVAILABLE = 1 << 2
    CALIBRATION_ONGOING = 1 << 3
    TEST_DATA = 1 << 4
    DEMO_DATA = 1 << 5
    VALIDATED = 1 << 8
    EARLY_INDICATION = 1 << 9
    MEASUREMENT_ONGOING = 1 << 10


# HL7 v3 ObservationInterpretation codes a device may send about its own result, and the ASTM
# E1394 / CLSI LIS2-A2 result abnormal flags (R record field 7) are the same letters: L, H, LL, HH
# (critical), <, > (outside the measuring range), N (normal), A, AA (abnormal, critical), U, D
# (significant change up / down), B, W (better / worse).
INTERPRETATION_CODES = frozenset(
    {"L", "H", "LL", "HH", "<", ">", "N", "A", "AA", "U", "D", "B", "W"}
)
ABNORMAL_CODES = frozenset({"L", "H", "LL", "HH", "<", ">", "A", "AA"})
# IEEE 11073-20601 MeasurementStatus bit 14, msmt-value-exceed-boundaries (an IntFlag without a
# member for it still carries it).
IN_ALARM_BIT = 1 << 14
# Bounds of the values a device can send as a sample array or a text (a GHS body is at most
# 64 KiB: drivers/ble/ghs_segment.py).
MAX_SAMPLES = 65536
MAX_TEXT_CHARS = 65535


class TimeQuality(enum.StrEnum):
    """How far the device timestamp can be trusted (PHD IG coincident-timestamp rules)."""

    SYNCED = "synced"  # device clock known to be synchronised (or within tolerance)
    UNSYNCED = "unsynced"  # device has a clock but we could not relate it to real time
    ABSENT = "absent"  # the device sent no timestamp


def _exact_key(value: object) -> object:
    """A comparison key in which Decimals keep their precision (2.0 != 2.00)."""
    if isinstance(value, Decimal):
        return ("decimal", value.as_tuple())
    if isinstance(value, tuple):
        return tuple(_exact_key(v) for v in value)
    return value


def _check_value(
    value: Decimal | None, absent_reason: AbsentReason | None, unit: str, what: str
) -> None:
    if (value is None) == (absent_reason is None):
        raise ModelError(f"{what}: exactly one of value and absent_reason must be set")
    if value is not None and not value.is_finite():
        raise ModelError(f"{what}: non-finite values are represented with absent_reason")
    if not unit or not unit.isprintable() or " " in unit:
        raise ModelError(f"{what}: bad UCUM unit {unit!r}")


@dataclass(frozen=True, slots=True, eq=False)
class Component:
    """One part of a compound reading (systolic of a blood pressure, for instance)."""

    mdc_code: int
    value: Decimal | None
    unit: str
    absent_reason: AbsentReason | None = None

    def __post_init__(self) -> None:
        _check_value(self.value, self.absent_reason, self.unit, f"component {self.mdc_code}")

    def _key(self) -> tuple[object, ...]:
        return tuple(_exact_key(getattr(self, f.name)) for f in fields(self))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Component) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


def _check_samples(samples: tuple[Decimal, ...], period_ms: Decimal | None) -> None:
    if period_ms is None or not period_ms.is_finite() or period_ms <= 0:
        raise ModelError("a sample array needs a positive sample period")
    if len(samples) > MAX_SAMPLES:
        raise ModelError(f"a sample array holds at most {MAX_SAMPLES} samples")
    if not all(isinstance(v, Decimal) and v.is_finite() for v in samples):
        raise ModelError("samples must be finite decimals")


def _check_text(text: str) -> None:
    if not 0 < len(text) <= MAX_TEXT_CHARS:
        raise ModelError(f"a text observation has 1 to {MAX_TEXT_CHARS} characters")
    try:
        text.encode()
    except UnicodeEncodeError:
        raise ModelError("a text observation must be valid Unicode") from None


@dataclass(frozen=True, slots=True, eq=False)
class Measurement:
    """One reading as a device handed it over.

    Either ``value`` or ``absent_reason`` is set (a compound reading such as a blood pressure has
    ``value=None`` and ``absent_reason=None`` only when it has components). ``device_time`` is the
    device's own clock reading, never replaced by reception time; ``time_quality`` says how far to
    trust it. ``received_at`` is the gateway's UTC clock when the bytes arrived.
    """

    device: DeviceId
    mdc_code: int
    value: Decimal | None
    unit: str
    received_at: datetime
    source: str  # driver / profile, e.g. "ble.health_thermometer" or "sim.thermometer"
    raw: bytes = b""
    absent_reason: AbsentReason | None = None
    device_time: datetime | None = None
    time_quality: TimeQuality = TimeQuality.ABSENT
    status: MeasurementStatus = MeasurementStatus.NONE
    components: tuple[Component, ...] = ()
    # The device's own record identifier (RACP / glucose sequence number) when it has one.
    device_record_id: int | None = None
    # Free-form, non-clinical context for the identifier (e.g. "intermediate"), PHD IG
    # supplementalInfo.
    supplemental: str = ""
    # How the device itself judged the result, as HL7 v3 ObservationInterpretation codes (an
    # analyser's ASTM abnormal flags: H, L, HH, LL, A, AA, <, >, N, ...), in the order sent.
    interpretation: tuple[str, ...] = ()
    # A sample array (a spirometry curve, a stretch of ECG: FHIR SampledData): the values in
    # ``unit``, in order, ``sample_period_ms`` apart. ``value`` and ``absent_reason`` are None.
    samples: tuple[Decimal, ...] = ()
    sample_period_ms: Decimal | None = None
    # A text observation (FHIR valueString), as the device sent it; ``value`` is None.
    text: str | None = None
    # A coded value: an MDC code the device reported as its result (a simple discrete
    # observation; FHIR valueCodeableConcept); ``value`` is None.
    value_code: int | None = None

    def __post_init__(self) -> None:
        if not (0 < self.mdc_code < 2**32):
            raise ModelError(f"MDC code out of range: {self.mdc_code}")
        self._check_kind()
        if self.components and self.value is None and self.absent_reason is None:
            if not self.unit:
                raise ModelError("compound measurement needs a unit")
        elif self.samples or self.text is not None or self.value_code is not None:
            _check_value(Decimal(0), None, self.unit, f"measurement {self.mdc_code}")
        else:
            _check_value(self.value, self.absent_reason, self.unit, f"measurement {self.mdc_code}")
        if self.received_at.tzinfo is None:
            raise ModelError("received_at must be timezone-aware (UTC)")
        object.__setattr__(self, "received_at", self.received_at.astimezone(UTC))
        if self.device_time is not None and self.device_time.utcoffset() is None:
            # A device clock without an offset must be placed by the driver (coincident
            # timestamp / configured zone), never guessed later: FHIR needs an offset.
            raise ModelError("device_time must be timezone-aware; the driver decides the offset")
        if self.device_time is None:
            if self.time_quality is not TimeQuality.ABSENT:
                raise ModelError("time_quality must be ABSENT when there is no device_time")
        elif self.time_quality is TimeQuality.ABSENT:
            raise ModelError("a device_time needs a time_quality of SYNCED or UNSYNCED")
        if not self.source:
            raise ModelError("source (driver / profile) is required")
        unknown = [c for c in self.interpretation if c not in INTERPRETATION_CODES]
        if unknown:
            raise ModelError(f"interpretation codes not in the supported set: {unknown!r}")

    def _check_kind(self) -> None:
        """A sample array, a text or a code is the whole value: nothing else beside it."""
        if self.sample_period_ms is not None and not self.samples:
            raise ModelError("a sample period without samples")
        kinds = bool(self.samples) + (self.text is not None) + (self.value_code is not None)
        if not kinds:
            return
        if kinds > 1:
            raise ModelError("a measurement is one of a sample array, a text or a code")
        if self.value is not None or self.absent_reason is not None or self.components:
            raise ModelError("a sample array, text or code has no value, absence or components")
        if self.value_code is not None and not 0 < self.value_code < 2**32:
            raise ModelError(f"coded value out of range: {self.value_code}")
        if self.samples:
            _check_samples(self.samples, self.sample_period_ms)
        if self.text is not None:
            _check_text(self.text)

    @property
    def alarm(self) -> bool:
        """The device itself raised an alarm condition with this reading: it flagged the result
        outside its normal range or critical (``interpretation``), or set the 11073 status bit
        "measurement value exceeds boundaries" (PoCD "in-alarm"). Such a reading never waits:
        the pump sends it on the ALARM lane, sealed in a record of its own."""
        return bool(int(self.status) & IN_ALARM_BIT) or any(
            c in ABNORMAL_CODES for c in self.interpretation
        )

    def _key(self) -> tuple[object, ...]:
        return tuple(_exact_key(getattr(self, f.name)) for f in fields(self))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Measurement) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    @property
    def is_absent(self) -> bool:
        return (self.value is None and not self.components and not self.samples
                and self.text is None and self.value_code is None)


def utcnow() -> datetime:
    """The gateway's wall clock, timezone-aware UTC."""
    return datetime.now(UTC)


_TICK = timedelta(microseconds=1)
RECENT_STAMPS = 64  # reception times remembered per device to keep them apart


class ReceptionStamps:
    """Reception times that never repeat for one device, for identifiers built from them.

    A reading without a device clock is identified by its reception time (PHD IG: the gateway's
    time stands in). Two distinct readings handed over in the same read (an oximeter's status
    changing twice in one buffer, two notifications in one microsecond) would otherwise get equal
    times and, with equal values, one identifier: the provider's conditional create would keep
    one. ``stamp`` moves a time already given out among the last ``RECENT_STAMPS`` by 1 µs until
    it is new; any other time is returned as it is (no reading is moved by more than a few µs).
    """

    __slots__ = ("_order", "_recent")

    def __init__(self) -> None:
        self._recent: set[datetime] = set()
        self._order: deque[datetime] = deque()

    def stamp(self, t: datetime) -> datetime:
        for _ in range(RECENT_STAMPS + 1):  # at most that many taken: one step past them is free
            if t not in self._recent:
                break
            t += _TICK
        self._recent.add(t)
        self._order.append(t)
        if len(self._order) > RECENT_STAMPS:
            self._recent.discard(self._order.popleft())
        return t
