"""Pulse Oximeter Service 0x1822: PLX Spot-check Measurement 0x2A5E, PLX Continuous Measurement
0x2A5F and PLX Features 0x2A60 (GATT Specification Supplement).

Spot-check: flags uint8 (bit 0 Timestamp; bit 1 Measurement Status; bit 2 Device and Sensor Status;
bit 3 Pulse Amplitude Index; bit 4 Device Clock is Not Set; bits 5-7 RFU), SFLOAT SpO2 (%), SFLOAT
pulse rate (bpm), [Date Time], [uint16 measurement status], [uint24 device and sensor status],
[SFLOAT PAI (%)].
Continuous: flags uint8 (bit 0 SpO2PR-Fast; bit 1 SpO2PR-Slow; bit 2 Measurement Status; bit 3
Device and Sensor Status; bit 4 PAI; bits 5-7 RFU), SpO2PR-Normal (2 SFLOAT), [SpO2PR-Fast],
[SpO2PR-Slow], [uint16 measurement status], [uint24 device and sensor status], [SFLOAT PAI].
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from drivers.ble.gatt_time import read_date_time, write_date_time
from drivers.ble.ieee11073 import Numeric
from drivers.ble.measure import Reading
from drivers.ble.wire import Reader, Writer, bit_names, check_presence
from gateway.errors import ModelError
from gateway.fhir.codes import MDC_PULS_OXIM_PULS_RATE, MDC_PULS_OXIM_SAT_O2
from gateway.model import MeasurementStatus

SPOT_CHECK_UUID = 0x2A5E
CONTINUOUS_UUID = 0x2A5F
FEATURES_UUID = 0x2A60

# Not in gateway.fhir.codes: pulse amplitude index / relative perfusion
# (IEEE 11073-10101, 2::19376).
MDC_PULS_OXIM_PERF_REL = 150448

SPOT_TIMESTAMP = 1 << 0
SPOT_MEASUREMENT_STATUS = 1 << 1
SPOT_DEVICE_SENSOR_STATUS = 1 << 2
SPOT_PAI = 1 << 3
SPOT_CLOCK_NOT_SET = 1 << 4
SPOT_KNOWN = 0x1F

CONT_FAST = 1 << 0
CONT_SLOW = 1 << 1
CONT_MEASUREMENT_STATUS = 1 << 2
CONT_DEVICE_SENSOR_STATUS = 1 << 3
CONT_PAI = 1 << 4
CONT_KNOWN = 0x1F

# Measurement Status (uint16; bits 0-4 RFU) -> the model's status, where one exists.
MEASUREMENT_STATUS_NAMES = {
    5: "measurement_ongoing",
    6: "early_estimated_data",
    7: "validated_data",
    8: "fully_qualified_data",
    9: "data_from_measurement_storage",
    10: "data_for_demonstration",
    11: "data_for_testing",
    12: "calibration_ongoing",
    13: "measurement_unavailable",
    14: "questionable_measurement_detected",
    15: "invalid_measurement_detected",
}
_MEASUREMENT_STATUS_MAP = {
    5: MeasurementStatus.MEASUREMENT_ONGOING,
    6: MeasurementStatus.EARLY_INDICATION,
    7: MeasurementStatus.VALIDATED,
    10: MeasurementStatus.DEMO_DATA,
    11: MeasurementStatus.TEST_DATA,
    12: MeasurementStatus.CALIBRATION_ONGOING,
    13: MeasurementStatus.NOT_AVAILABLE,
    14: MeasurementStatus.QUESTIONABLE,
    15: MeasurementStatus.INVALID,
}
# Device and Sensor Status (uint24; bits 16-23 RFU).
DEVICE_SENSOR_STATUS_NAMES = {
    0: "extended_display_update_ongoing",
    1: "equipment_malfunction_detected",
    2: "signal_processing_irregularity_detected",
    3: "inadequate_signal_detected",
    4: "poor_signal_detected",
    5: "low_perfusion_detected",
    6: "erratic_signal_detected",
    7: "nonpulsatile_signal_detected",
    8: "questionable_pulse_detected",
    9: "signal_analysis_ongoing",
    10: "sensor_interference_detected",
    11: "sensor_unconnected_to_user",
    12: "unknown_sensor_connected",
    13: "sensor_displaced",
    14: "sensor_malfunctioning",
    15: "sensor_disconnected",
}
# Signal or sensor problems: a number was sent, but it is not one to act on without a look.
_SENSOR_PROBLEMS = 0xFFFF & ~((1 << 0) | (1 << 9))

SUPPORTED_FEATURE_NAMES = {
    0: "measurement_status",
    1: "device_and_sensor_status",
    2: "spot_check_measurement_storage",
    3: "spot_check_timestamp",
    4: "spo2pr_fast",
    5: "spo2pr_slow",
    6: "pulse_amplitude_index",
    7: "multiple_bonds",
}


def status_of(
    measurement_status: int | None, device_sensor_status: int | None
) -> MeasurementStatus:
    """The model's status for a PLX reading, from the two status fields (absent = nothing)."""
    out = MeasurementStatus.NONE
    for bit, mapped in _MEASUREMENT_STATUS_MAP.items():
        if (measurement_status or 0) >> bit & 1:
            out |= mapped
    if (device_sensor_status or 0) & _SENSOR_PROBLEMS:
        out |= MeasurementStatus.QUESTIONABLE
    return out


def _status_summary(measurement: int | None, device_sensor: int | None) -> dict[str, object]:
    return {
        "measurement_status": None
        if measurement is None
        else bit_names(measurement, MEASUREMENT_STATUS_NAMES),
        "device_and_sensor_status": None
        if device_sensor is None
        else bit_names(device_sensor, DEVICE_SENSOR_STATUS_NAMES),
    }


def _write_optional_tail(
    writer: Writer, status: int | None, sensor_status: int | None, pai: Numeric | None
) -> bytes:
    """The optional fields both PLX measurements end with, in their order on the wire."""
    if status is not None:
        writer.u16(status, "measurement status")
    if sensor_status is not None:
        writer.u24(sensor_status, "device and sensor status")
    if pai is not None:
        writer.sfloat(pai)
    return writer.getvalue()


@dataclass(frozen=True, slots=True)
class SpotCheckMeasurement:
    """A parsed 0x2A5E value; ``flags`` as sent."""

    SOURCE: ClassVar[str] = "ble.pulse_oximeter"

    flags: int
    spo2: Numeric
    pulse_rate: Numeric
    timestamp: datetime | None = None
    measurement_status: int | None = None
    device_sensor_status: int | None = None
    pulse_amplitude_index: Numeric | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.flags <= 0xFF:
            raise ModelError("flags must fit one byte")
        check_presence(
            self.flags,
            SPOT_MEASUREMENT_STATUS,
            self.measurement_status is not None,
            "measurement_status",
        )
        check_presence(
            self.flags,
            SPOT_DEVICE_SENSOR_STATUS,
            self.device_sensor_status is not None,
            "device_sensor_status",
        )
        check_presence(
            self.flags, SPOT_PAI, self.pulse_amplitude_index is not None, "pulse_amplitude_index"
        )
        if self.timestamp is not None and not self.flags & SPOT_TIMESTAMP:
            raise ModelError("a timestamp needs the Timestamp present flag")

    @property
    def clock_not_set(self) -> bool:
        return bool(self.flags & SPOT_CLOCK_NOT_SET)

    @classmethod
    def decode(cls, payload: bytes) -> SpotCheckMeasurement:
        reader = Reader(payload, SPOT_CHECK_UUID)
        flags = reader.u8("flags")
        spo2, rate = reader.sfloat("SpO2"), reader.sfloat("pulse rate")
        timestamp = read_date_time(reader, "timestamp") if flags & SPOT_TIMESTAMP else None
        status = reader.u16("measurement status") if flags & SPOT_MEASUREMENT_STATUS else None
        sensor = (
            reader.u24("device and sensor status") if flags & SPOT_DEVICE_SENSOR_STATUS else None
        )
        pai = reader.sfloat("pulse amplitude index") if flags & SPOT_PAI else None
        reader.done()
        return cls(flags, spo2, rate, timestamp, status, sensor, pai)

    def encode(self) -> bytes:
        writer = Writer().u8(self.flags, "flags").sfloat(self.spo2).sfloat(self.pulse_rate)
        if self.flags & SPOT_TIMESTAMP:
            write_date_time(writer, self.timestamp)
        return _write_optional_tail(
            writer, self.measurement_status, self.device_sensor_status, self.pulse_amplitude_index
        )

    def readings(self) -> tuple[Reading, ...]:
        status = status_of(self.measurement_status, self.device_sensor_status)

        def reading(mdc_code: int, number: Numeric, unit: str) -> Reading:
            return Reading.of(
                mdc_code,
                number,
                unit,
                device_time=self.timestamp,
                clock_set=not self.clock_not_set,
                status=status,
            )

        out = [
            reading(MDC_PULS_OXIM_SAT_O2, self.spo2, "%"),
            reading(MDC_PULS_OXIM_PULS_RATE, self.pulse_rate, "/min"),
        ]
        if self.pulse_amplitude_index is not None:
            out.append(reading(MDC_PULS_OXIM_PERF_REL, self.pulse_amplitude_index, "%"))
        return tuple(out)

    def flag_summary(self) -> dict[str, object]:
        return {
            "timestamp_present": bool(self.flags & SPOT_TIMESTAMP),
            "measurement_status_present": self.measurement_status is not None,
            "device_and_sensor_status_present": self.device_sensor_status is not None,
            "pulse_amplitude_index_present": self.pulse_amplitude_index is not None,
            "device_clock_not_set": self.clock_not_set,
            **_status_summary(self.measurement_status, self.device_sensor_status),
            "unknown_flags": self.flags & ~SPOT_KNOWN,
        }


@dataclass(frozen=True, slots=True)
class ContinuousMeasurement:
    """A parsed 0x2A5F value; ``flags`` as sent. Each SpO2PR pair is (SpO2 %, pulse rate bpm)."""

    # Its own source: the gateway routes continuous readings to the stream lane by it.
    SOURCE: ClassVar[str] = "ble.pulse_oximeter.continuous"

    flags: int
    spo2: Numeric
    pulse_rate: Numeric
    fast: tuple[Numeric, Numeric] | None = None
    slow: tuple[Numeric, Numeric] | None = None
    measurement_status: int | None = None
    device_sensor_status: int | None = None
    pulse_amplitude_index: Numeric | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.flags <= 0xFF:
            raise ModelError("flags must fit one byte")
        check_presence(self.flags, CONT_FAST, self.fast is not None, "fast")
        check_presence(self.flags, CONT_SLOW, self.slow is not None, "slow")
        check_presence(
            self.flags,
            CONT_MEASUREMENT_STATUS,
            self.measurement_status is not None,
            "measurement_status",
        )
        check_presence(
            self.flags,
            CONT_DEVICE_SENSOR_STATUS,
            self.device_sensor_status is not None,
            "device_sensor_status",
        )
        check_presence(
            self.flags, CONT_PAI, self.pulse_amplitude_index is not None, "pulse_amplitude_index"
        )

    @classmethod
    def decode(cls, payload: bytes) -> ContinuousMeasurement:
        reader = Reader(payload, CONTINUOUS_UUID)
        flags = reader.u8("flags")
        spo2, rate = reader.sfloat("SpO2"), reader.sfloat("pulse rate")
        fast = (
            (reader.sfloat("SpO2 fast"), reader.sfloat("pulse rate fast"))
            if flags & CONT_FAST
            else None
        )
        slow = (
            (reader.sfloat("SpO2 slow"), reader.sfloat("pulse rate slow"))
            if flags & CONT_SLOW
            else None
        )
        status = reader.u16("measurement status") if flags & CONT_MEASUREMENT_STATUS else None
        sensor = (
            reader.u24("device and sensor status") if flags & CONT_DEVICE_SENSOR_STATUS else None
        )
        pai = reader.sfloat("pulse amplitude index") if flags & CONT_PAI else None
        reader.done()
        return cls(flags, spo2, rate, fast, slow, status, sensor, pai)

    def encode(self) -> bytes:
        writer = Writer().u8(self.flags, "flags").sfloat(self.spo2).sfloat(self.pulse_rate)
        for pair in (self.fast, self.slow):
            if pair is not None:
                writer.sfloat(pair[0]).sfloat(pair[1])
        return _write_optional_tail(
            writer, self.measurement_status, self.device_sensor_status, self.pulse_amplitude_index
        )

    def readings(self) -> tuple[Reading, ...]:
        """Normal, then fast and slow averages (told apart by supplementalInfo), then PAI."""
        status = status_of(self.measurement_status, self.device_sensor_status)
        out: list[Reading] = []
        for pair, label in (
            ((self.spo2, self.pulse_rate), ""),
            (self.fast, "fast"),
            (self.slow, "slow"),
        ):
            if pair is None:
                continue
            out.append(
                Reading.of(MDC_PULS_OXIM_SAT_O2, pair[0], "%", status=status, supplemental=label)
            )
            out.append(
                Reading.of(
                    MDC_PULS_OXIM_PULS_RATE, pair[1], "/min", status=status, supplemental=label
                )
            )
        if self.pulse_amplitude_index is not None:
            out.append(
                Reading.of(MDC_PULS_OXIM_PERF_REL, self.pulse_amplitude_index, "%", status=status)
            )
        return tuple(out)

    def flag_summary(self) -> dict[str, object]:
        return {
            "spo2pr_fast_present": self.fast is not None,
            "spo2pr_slow_present": self.slow is not None,
            "measurement_status_present": self.measurement_status is not None,
            "device_and_sensor_status_present": self.device_sensor_status is not None,
            "pulse_amplitude_index_present": self.pulse_amplitude_index is not None,
            **_status_summary(self.measurement_status, self.device_sensor_status),
            "unknown_flags": self.flags & ~CONT_KNOWN,
        }


@dataclass(frozen=True, slots=True)
class PlxFeatures:
    """PLX Features 0x2A60: uint16 supported features, then the supported Measurement Status bits
    (uint16, if feature bit 0) and Device and Sensor Status bits (uint24, if feature bit 1)."""

    supported: int
    measurement_status_support: int | None = None
    device_sensor_status_support: int | None = None

    def __post_init__(self) -> None:
        check_presence(
            self.supported,
            1 << 0,
            self.measurement_status_support is not None,
            "measurement_status_support",
        )
        check_presence(
            self.supported,
            1 << 1,
            self.device_sensor_status_support is not None,
            "device_sensor_status_support",
        )

    @property
    def spot_check_storage(self) -> bool:
        """Stored spot-check records: the device then also has a RACP (PLXS)."""
        return bool(self.supported & 1 << 2)

    @classmethod
    def decode(cls, payload: bytes) -> PlxFeatures:
        reader = Reader(payload, FEATURES_UUID)
        supported = reader.u16("supported features")
        status = reader.u16("measurement status support") if supported & 1 else None
        sensor = reader.u24("device and sensor status support") if supported & 2 else None
        reader.done()
        return cls(supported, status, sensor)

    def encode(self) -> bytes:
        writer = Writer().u16(self.supported, "supported features")
        if self.measurement_status_support is not None:
            writer.u16(self.measurement_status_support, "measurement status support")
        if self.device_sensor_status_support is not None:
            writer.u24(self.device_sensor_status_support, "device and sensor status support")
        return writer.getvalue()

    def flag_summary(self) -> dict[str, object]:
        return {
            "supported_features": bit_names(self.supported, SUPPORTED_FEATURE_NAMES),
            **{
                f"{key}_support": value
                for key, value in _status_summary(
                    self.measurement_status_support, self.device_sensor_status_support
                ).items()
            },
        }
