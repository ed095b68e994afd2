"""Virtual devices of the profiles without stored-record access: thermometer, blood-pressure
monitor, weight scale, pulse oximeter (spot-check + continuous 1 Hz) and heart-rate sensor.

Each ``measure...`` builds the profile's value with the project's own dataclass (so the bytes are
exactly what ``encode()`` makes and a test can compare ``decode(received) == returned``), stamps
it with the device's clock (``None`` when the clock is unset: year 0 on the wire) and sends it -
or, for indications, stores it until a collector subscribes (backlog burst). A device that
requires bonding (``pairing=...``) protects its measurement characteristics: without the bond a
read or subscription fails with ATT Insufficient Authentication.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from drivers.ble.blood_pressure import (
    BP_FEATURE_UUID,
    BP_MEASUREMENT_UUID,
    INTERMEDIATE_CUFF_PRESSURE_UUID,
    BloodPressureFeature,
    BloodPressureMeasurement,
)
from drivers.ble.blood_pressure import FLAG_MEASUREMENT_STATUS as BP_STATUS
from drivers.ble.blood_pressure import FLAG_PULSE_RATE as BP_PULSE
from drivers.ble.blood_pressure import FLAG_TIME_STAMP as BP_TIME
from drivers.ble.blood_pressure import FLAG_USER_ID as BP_USER
from drivers.ble.heart_rate import FLAG_CONTACT_DETECTED as HR_CONTACT
from drivers.ble.heart_rate import FLAG_CONTACT_SUPPORTED as HR_CONTACT_SUPPORTED
from drivers.ble.heart_rate import FLAG_RR_INTERVALS as HR_RR
from drivers.ble.heart_rate import HEART_RATE_MEASUREMENT_UUID, HeartRateMeasurement
from drivers.ble.pulse_oximeter import (
    CONTINUOUS_UUID,
    FEATURES_UUID,
    SPOT_CHECK_UUID,
    SPOT_CLOCK_NOT_SET,
    SPOT_TIMESTAMP,
    ContinuousMeasurement,
    PlxFeatures,
    SpotCheckMeasurement,
)
from drivers.ble.thermometer import (
    FLAG_FAHRENHEIT,
    FLAG_TEMPERATURE_TYPE,
    FLAG_TIME_STAMP,
    INTERMEDIATE_TEMPERATURE_UUID,
    TEMPERATURE_MEASUREMENT_UUID,
    TEMPERATURE_TYPE_UUID,
    TemperatureMeasurement,
    TemperatureType,
    encode_temperature_type,
)
from drivers.ble.weight_scale import FLAG_BMI_HEIGHT, WEIGHT_MEASUREMENT_UUID, WeightMeasurement
from drivers.ble.weight_scale import FLAG_TIME_STAMP as WEIGHT_TIME
from gateway.model import AbsentReason
from rig.ble.gatt import Characteristic, Service
from rig.ble.peripheral import Peripheral

HEALTH_THERMOMETER_UUID = 0x1809
MEASUREMENT_INTERVAL_UUID = 0x2A21
BLOOD_PRESSURE_UUID = 0x1810
WEIGHT_SCALE_UUID = 0x181D
WEIGHT_SCALE_FEATURE_UUID = 0x2A9E
PULSE_OXIMETER_UUID = 0x1822
HEART_RATE_UUID = 0x180D
BODY_SENSOR_LOCATION_UUID = 0x2A38


Number = Decimal | str | int


def _number(value: Number) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


def neighbour(of: Peripheral, address: str) -> Peripheral:
    """The same kind of device next door: same services and advertisement, another address,
    weaker signal, not bound to this episode (DESIGN invariant 4: it must be ignored)."""
    return type(of)(address, name=f"{of.name} (neighbour)", rssi=of.rssi - 25)


class Thermometer(Peripheral):
    kind = "thermometer"
    default_name = "Thermometer"

    def __init__(self, address: str, *, site: TemperatureType = TemperatureType.MOUTH,
                 fahrenheit: bool = False, **kwargs: Any) -> None:
        super().__init__(address, **kwargs)
        self.site = site
        self.fahrenheit = fahrenheit

    def profile_services(self) -> tuple[Service, ...]:
        secure = self.requires_bond
        return (Service(HEALTH_THERMOMETER_UUID, (
            Characteristic(TEMPERATURE_MEASUREMENT_UUID, ("indicate",), secure=secure),
            Characteristic(INTERMEDIATE_TEMPERATURE_UUID, ("notify",), secure=secure),
            Characteristic(TEMPERATURE_TYPE_UUID, ("read",),
                           read=lambda: encode_temperature_type(self.site)),
            Characteristic(MEASUREMENT_INTERVAL_UUID, ("read",), read=lambda: bytes(2)),
        )),)

    def measure(self, temperature: Decimal | str, *, when: datetime | None = None,
                intermediate: tuple[Decimal | str, ...] = ()) -> TemperatureMeasurement:
        """A final reading; ``intermediate`` temperatures are notified first (0x2A1E, while the
        probe settles; only a subscribed collector gets them, as notifications go)."""
        unit = FLAG_FAHRENHEIT if self.fahrenheit else 0
        for settling_c in intermediate:
            settling = TemperatureMeasurement(unit, _number(settling_c), intermediate=True)
            self.emit(INTERMEDIATE_TEMPERATURE_UUID, settling.encode(), store=False)
        flags = FLAG_TIME_STAMP | FLAG_TEMPERATURE_TYPE | (FLAG_FAHRENHEIT if self.fahrenheit
                                                             else 0)
        value = TemperatureMeasurement(flags, _number(temperature), when or self.clock.now(),
                                       self.site)
        self.emit(TEMPERATURE_MEASUREMENT_UUID, value.encode(), store=True)
        return value


class BloodPressureMonitor(Peripheral):
    kind = "blood-pressure"
    default_name = "BP Monitor"

    def __init__(self, address: str, *, features: int = 0b000111, **kwargs: Any) -> None:
        super().__init__(address, **kwargs)
        self.features = BloodPressureFeature(features)

    def profile_services(self) -> tuple[Service, ...]:
        secure = self.requires_bond
        return (Service(BLOOD_PRESSURE_UUID, (
            Characteristic(BP_MEASUREMENT_UUID, ("indicate",), secure=secure),
            Characteristic(INTERMEDIATE_CUFF_PRESSURE_UUID, ("notify",), secure=secure),
            Characteristic(BP_FEATURE_UUID, ("read",), read=self.features.encode),
        )),)

    def measure(self, systolic: Number, diastolic: Number, pulse: Number | None = None, *,
                mean: Number | None = None,
                user_id: int | None = None, status: int | None = None,
                cuff: tuple[int, ...] = (), when: datetime | None = None
                ) -> BloodPressureMeasurement:
        """A cuff measurement; ``cuff`` pressures are sent first as Intermediate Cuff Pressure
        (only to a subscribed collector, as notifications are)."""
        for pressure in cuff:
            intermediate = BloodPressureMeasurement(0, Decimal(pressure), AbsentReason.NAN,
                                                    AbsentReason.NAN, intermediate=True)
            self.emit(INTERMEDIATE_CUFF_PRESSURE_UUID, intermediate.encode(), store=False)
        sys_, dia = _number(systolic), _number(diastolic)
        mean_arterial = _number(mean) if mean is not None else \
            (dia + (sys_ - dia) / 3).quantize(Decimal(1))
        flags = BP_TIME | (BP_PULSE if pulse is not None else 0) \
            | (BP_USER if user_id is not None else 0) | (BP_STATUS if status is not None else 0)
        value = BloodPressureMeasurement(
            flags, sys_, dia, mean_arterial, when or self.clock.now(),
            None if pulse is None else _number(pulse), user_id, status)
        self.emit(BP_MEASUREMENT_UUID, value.encode(), store=True)
        return value


class WeightScale(Peripheral):
    kind = "weight-scale"
    default_name = "Scale"
    RESOLUTION = Decimal("0.005")

    def profile_services(self) -> tuple[Service, ...]:
        # Weight Scale Feature: time stamp supported (bit 0), weight resolution 0.005 kg (1).
        feature = (0b1 | 1 << 3).to_bytes(4, "little")
        return (Service(WEIGHT_SCALE_UUID, (
            Characteristic(WEIGHT_MEASUREMENT_UUID, ("indicate",), secure=self.requires_bond),
            Characteristic(WEIGHT_SCALE_FEATURE_UUID, ("read",), read=lambda: feature),
        )),)

    def measure(self, weight_kg: Decimal | str, *, bmi: Decimal | str | None = None,
                height_m: Decimal | str | None = None, when: datetime | None = None
                ) -> WeightMeasurement:
        steps = int((_number(weight_kg) / self.RESOLUTION).to_integral_value())
        weight = steps * self.RESOLUTION  # exponent of the resolution: 72.400, as decoded
        flags = WEIGHT_TIME | (FLAG_BMI_HEIGHT if bmi is not None else 0)
        value = WeightMeasurement(
            flags, weight, when or self.clock.now(), None,
            None if bmi is None else _number(bmi).quantize(Decimal("0.1")),
            None if height_m is None else _number(height_m).quantize(Decimal("0.001")))
        self.emit(WEIGHT_MEASUREMENT_UUID, value.encode(), store=True)
        return value


class PulseOximeter(Peripheral):
    """Spot-checks by indication (stored until delivered) and, while a collector subscribes to
    PLX Continuous, one notification per ``continuous_period_s`` with the ``live`` values."""

    kind = "pulse-oximeter"
    default_name = "Oximeter"

    def __init__(self, address: str, *, continuous_period_s: float = 1.0,
                 **kwargs: Any) -> None:
        super().__init__(address, **kwargs)
        self.live: tuple[Decimal, Decimal] | None = (Decimal(97), Decimal(72))
        self.add_stream(CONTINUOUS_UUID, continuous_period_s, self._continuous)

    def profile_services(self) -> tuple[Service, ...]:
        secure = self.requires_bond
        features = PlxFeatures(1 << 3)  # spot-check timestamp supported
        return (Service(PULSE_OXIMETER_UUID, (
            Characteristic(SPOT_CHECK_UUID, ("indicate",), secure=secure),
            Characteristic(CONTINUOUS_UUID, ("notify",), secure=secure),
            Characteristic(FEATURES_UUID, ("read",), read=features.encode),
        )),)

    def _continuous(self) -> bytes | None:
        if self.live is None:
            return None  # finger out: nothing to report
        return ContinuousMeasurement(0, *self.live).encode()

    def measure(self, spo2: Number, pulse_rate: Number, *,
                when: datetime | None = None) -> SpotCheckMeasurement:
        stamp = when or self.clock.now()
        flags = SPOT_TIMESTAMP | (SPOT_CLOCK_NOT_SET if stamp is None else 0)
        value = SpotCheckMeasurement(flags, _number(spo2), _number(pulse_rate), stamp)
        self.emit(SPOT_CHECK_UUID, value.encode(), store=True)
        return value


class HeartRateSensor(Peripheral):
    """Notifies ``bpm`` (and ``rr_intervals``, 1/1024 s) every ``period_s`` while subscribed."""

    kind = "heart-rate"
    default_name = "HR Sensor"

    def __init__(self, address: str, *, period_s: float = 1.0, **kwargs: Any) -> None:
        super().__init__(address, **kwargs)
        self.bpm = 72
        self.rr_intervals: tuple[int, ...] = (853,)
        self.contact = True
        self.add_stream(HEART_RATE_MEASUREMENT_UUID, period_s, lambda: self.current().encode())

    def profile_services(self) -> tuple[Service, ...]:
        return (Service(HEART_RATE_UUID, (
            Characteristic(HEART_RATE_MEASUREMENT_UUID, ("notify",), secure=self.requires_bond),
            Characteristic(BODY_SENSOR_LOCATION_UUID, ("read",), read=lambda: b"\x01"),
        )),)

    def current(self) -> HeartRateMeasurement:
        flags = HR_CONTACT_SUPPORTED | (HR_CONTACT if self.contact else 0) \
            | (HR_RR if self.rr_intervals else 0)
        return HeartRateMeasurement(flags, self.bpm, None, self.rr_intervals)
