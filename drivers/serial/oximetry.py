"""What every pulse-oximeter decoder produces: samples with SpO2, pulse rate and status flags.

Oximeters on a serial line have no clock: ``time_s`` is the caller's monotonic time when the bytes
arrived, and the measurements carry no device time (the gateway's reception time is
``received_at``). Status flags never hide a value: a value sent together with "sensor off" is kept
and marked invalid; one sent with artifact / out-of-track / low perfusion is marked questionable.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from gateway.errors import ModelError
from gateway.fhir.codes import MDC_PULS_OXIM_PULS_RATE, MDC_PULS_OXIM_SAT_O2
from gateway.model import AbsentReason, DeviceId, Measurement, MeasurementStatus


class OximetryFlag(enum.IntFlag):
    NONE = 0
    SENSOR_OFF = 1 << 0  # Nonin SNSD (sensor disconnected) / CMS50 finger out
    ARTIFACT = 1 << 1  # Nonin ARTF
    OUT_OF_TRACK = 1 << 2  # Nonin OOT: no consecutive good pulses
    SENSOR_ALARM = 1 << 3  # Nonin SNSA: the device's data is unusable
    LOW_PERFUSION = 1 << 4  # Nonin red perfusion: low / no pulse signal
    MARGINAL_PERFUSION = 1 << 5  # Nonin yellow perfusion: low / marginal signal
    SEARCHING = 1 << 6  # CMS50: searching for a pulse
    PROBE_ERROR = 1 << 7  # CMS50: probe error
    SPO2_DROPPING = 1 << 8  # CMS50: the device's own "SpO2 dropping" indication


NO_SIGNAL = OximetryFlag.SENSOR_OFF | OximetryFlag.PROBE_ERROR
QUESTIONABLE = (
    OximetryFlag.ARTIFACT
    | OximetryFlag.OUT_OF_TRACK
    | OximetryFlag.SENSOR_ALARM
    | OximetryFlag.LOW_PERFUSION
    | OximetryFlag.SEARCHING
)


class OximetryValues(Protocol):
    @property
    def spo2_pct(self) -> int | None: ...
    @property
    def pulse_bpm(self) -> int | None: ...
    @property
    def flags(self) -> OximetryFlag: ...


@dataclass(frozen=True, slots=True)
class OximetrySample:
    """One decoded reading; None means the device sent its "missing" value."""

    time_s: float
    spo2_pct: int | None
    pulse_bpm: int | None
    flags: OximetryFlag = OximetryFlag.NONE
    raw: bytes = b""

    def __post_init__(self) -> None:
        if self.spo2_pct is not None and not 0 <= self.spo2_pct <= 100:
            raise ModelError(f"SpO2 {self.spo2_pct} % is outside 0-100")
        if self.pulse_bpm is not None and not 0 <= self.pulse_bpm <= 510:
            raise ModelError(f"pulse rate {self.pulse_bpm} /min is outside 0-510")


def _one(
    mdc: int,
    unit: str,
    value: int | None,
    flags: OximetryFlag,
    *,
    device: DeviceId,
    received_at: datetime,
    source: str,
    raw: bytes,
    supplemental: str,
) -> Measurement:
    status = MeasurementStatus.NONE
    if flags & QUESTIONABLE:
        status |= MeasurementStatus.QUESTIONABLE
    absent: AbsentReason | None = None
    if value is None:
        absent = AbsentReason.SENSOR_OFF if flags & NO_SIGNAL else AbsentReason.NAN
    elif flags & NO_SIGNAL:
        status |= MeasurementStatus.INVALID
    return Measurement(
        device=device,
        mdc_code=mdc,
        value=None if value is None else Decimal(value),
        unit=unit,
        received_at=received_at,
        source=source,
        raw=raw,
        absent_reason=absent,
        status=status,
        supplemental=supplemental,
    )


def to_measurements(
    values: OximetryValues,
    *,
    device: DeviceId,
    received_at: datetime,
    source: str,
    raw: bytes = b"",
    supplemental: str = "",
) -> tuple[Measurement, Measurement]:
    """(SpO2 in %, pulse rate in /min) for one sample or reduced reading."""
    spo2 = _one(
        MDC_PULS_OXIM_SAT_O2,
        "%",
        values.spo2_pct,
        values.flags,
        device=device,
        received_at=received_at,
        source=source,
        raw=raw,
        supplemental=supplemental,
    )
    pulse = _one(
        MDC_PULS_OXIM_PULS_RATE,
        "/min",
        values.pulse_bpm,
        values.flags,
        device=device,
        received_at=received_at,
        source=source,
        raw=raw,
        supplemental=supplemental,
    )
    return spo2, pulse
