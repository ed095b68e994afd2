"""Reduce a continuous oximetry stream to one reading per interval, never hiding an event.

Feed samples in time order (:meth:`OximetryReducer.feed`); tell it the time when no samples come
(:meth:`OximetryReducer.tick`). Out come :class:`OximetryReading` values:

- one INTERVAL reading per reporting interval that had samples. Its SpO2 and pulse are the *low
  median* of the interval's usable values (a value the device actually sent, robust to a single
  artifact spike; SpO2 and pulse are each the median of their own values). Its flags are every
  flag seen during the interval, so a short artifact still shows. An interval with no samples at
  all gives no reading (device liveness is reported elsewhere);
- an immediate STATUS_CHANGE reading (the sample itself) whenever the watched status flags change
  (sensor off / on, artifact starts / ends, ...);
- an immediate DESATURATION reading when SpO2 falls below the threshold (default 90 %) or by at
  least ``drop_points`` (default 4) below the baseline; DESATURATION_DEEPER each time it falls a
  further ``drop_points`` below the last reported value; DESATURATION_END when it recovers.

The baseline is the previous interval's SpO2 reading (before the first interval: the first usable
sample); it is not moved while a desaturation lasts. Usable means SpO2 present and no "sensor off",
"probe error", "searching" or "sensor alarm" flag.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from statistics import median_low

from drivers.serial.errors import SerialUsageError
from drivers.serial.oximetry import NO_SIGNAL, OximetryFlag, OximetrySample

UNUSABLE = NO_SIGNAL | OximetryFlag.SEARCHING | OximetryFlag.SENSOR_ALARM
WATCHED = (
    OximetryFlag.SENSOR_OFF
    | OximetryFlag.PROBE_ERROR
    | OximetryFlag.ARTIFACT
    | OximetryFlag.OUT_OF_TRACK
    | OximetryFlag.SENSOR_ALARM
    | OximetryFlag.LOW_PERFUSION
    | OximetryFlag.SEARCHING
)


class Reason(enum.StrEnum):
    INTERVAL = "interval"
    STATUS_CHANGE = "status-change"
    DESATURATION = "desaturation"
    DESATURATION_DEEPER = "desaturation-deeper"
    DESATURATION_END = "desaturation-end"


@dataclass(frozen=True, slots=True)
class ReducerConfig:
    interval_s: float = 60.0
    desaturation_below_pct: int = 90
    drop_points: int = 4
    watched_flags: OximetryFlag = WATCHED

    def __post_init__(self) -> None:
        if self.interval_s <= 0 or self.drop_points <= 0:
            raise SerialUsageError("reducer interval and drop must be positive")


@dataclass(frozen=True, slots=True)
class OximetryReading:
    """A reported reading: ``time_s`` is the sample time, or the interval end for INTERVAL."""

    time_s: float
    spo2_pct: int | None
    pulse_bpm: int | None
    flags: OximetryFlag
    reason: Reason
    samples: int = 1  # how many samples the reading stands for


def _usable(sample: OximetrySample) -> int | None:
    return None if sample.flags & UNUSABLE else sample.spo2_pct


class OximetryReducer:
    def __init__(self, config: ReducerConfig | None = None) -> None:
        self.config = config or ReducerConfig()
        self._window_start: float | None = None
        self._spo2: list[int] = []
        self._pulse: list[int] = []
        self._flags = OximetryFlag.NONE
        self._count = 0
        self._last_flags: OximetryFlag | None = None
        self._last_time: float | None = None
        self._baseline: int | None = None
        self._episode_low: int | None = None  # last reported SpO2 of a running desaturation

    def feed(self, sample: OximetrySample) -> list[OximetryReading]:
        if self._last_time is not None and sample.time_s < self._last_time:
            raise SerialUsageError("samples must be fed in time order")
        self._last_time = sample.time_s
        out = self.tick(sample.time_s)
        if self._window_start is None:
            self._window_start = sample.time_s
        self._add(sample)
        watched = sample.flags & self.config.watched_flags
        if self._last_flags is not None and watched != self._last_flags:
            out.append(self._event(sample, Reason.STATUS_CHANGE))
        self._last_flags = watched
        out.extend(self._desaturation(sample))
        return out

    def tick(self, now_s: float) -> list[OximetryReading]:
        """Close every interval that has ended by ``now_s`` (at most one had samples)."""
        start = self._window_start
        if start is None or now_s < start + self.config.interval_s:
            return []
        end = start + self.config.interval_s
        reading = self._close(end)
        elapsed = int((now_s - start) // self.config.interval_s)
        self._window_start = start + elapsed * self.config.interval_s
        return [reading] if reading else []

    def _add(self, sample: OximetrySample) -> None:
        spo2 = _usable(sample)
        if spo2 is not None:
            self._spo2.append(spo2)
        if sample.pulse_bpm is not None and not sample.flags & UNUSABLE:
            self._pulse.append(sample.pulse_bpm)
        self._flags |= sample.flags
        self._count += 1

    def _close(self, end_s: float) -> OximetryReading | None:
        if not self._count:
            return None
        spo2 = median_low(self._spo2) if self._spo2 else None
        pulse = median_low(self._pulse) if self._pulse else None
        reading = OximetryReading(end_s, spo2, pulse, self._flags, Reason.INTERVAL, self._count)
        if spo2 is not None and self._episode_low is None:
            self._baseline = spo2
        self._spo2, self._pulse, self._flags, self._count = [], [], OximetryFlag.NONE, 0
        return reading

    def _event(self, sample: OximetrySample, reason: Reason) -> OximetryReading:
        return OximetryReading(
            sample.time_s, sample.spo2_pct, sample.pulse_bpm, sample.flags, reason
        )

    def _desaturation(self, sample: OximetrySample) -> list[OximetryReading]:
        spo2 = _usable(sample)
        if spo2 is None:
            return []
        if self._baseline is None:
            self._baseline = spo2
        cfg = self.config
        desaturated = spo2 < cfg.desaturation_below_pct or spo2 <= self._baseline - cfg.drop_points
        if self._episode_low is None:
            if not desaturated:
                return []
            self._episode_low = spo2
            return [self._event(sample, Reason.DESATURATION)]
        if not desaturated:
            self._episode_low = None
            return [self._event(sample, Reason.DESATURATION_END)]
        if spo2 <= self._episode_low - cfg.drop_points:
            self._episode_low = spo2
            return [self._event(sample, Reason.DESATURATION_DEEPER)]
        return []
