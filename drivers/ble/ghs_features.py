"""GHS characteristics around the observations: Health Sensor Features 0x2BF3, Observation
Schedule (Observation Schedule Changed 0x2BF1, and the Observation Schedule descriptor of the
features characteristic) and the GHS Control Point 0x2BF4.

Facts (GHSS v1.0 "Health Sensor Features", "Observation Schedule Changed" and the Observation
Schedule descriptor, "GHS Control Point"; the specification text was not at hand, see
ghs_acom.py), taken from the public STMicroelectronics and Realtek GHS prototypes (op codes and
features layout from both, the schedule layout and specializations from ST only: assumed):

- Health Sensor Features: flags uint8 (bit 0: Supported Device Specializations present), a
  uint8 count and that many uint32 supported observation types (MDC codes), then, when flagged,
  a uint8 count and per device specialization a uint16 MDC term code (partition 8, e.g. 4103 a
  blood pressure monitor) and a uint8 version (assumed: only the ST prototype shows this list);
- Observation Schedule (descriptor and 0x2BF1): uint32 observation type, FLOAT measurement
  period (s), FLOAT update interval (s);
- GHS Control Point: op code uint8; 0x01 Start Send Live Observations, 0x02 Stop Send Live
  Observations; the server indicates 0x80 Success (or an ATT error).
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.ble.ieee11073 import Numeric
from drivers.ble.wire import OpenIntEnum, Reader, Writer

HEALTH_SENSOR_FEATURES_UUID = 0x2BF3
OBSERVATION_SCHEDULE_CHANGED_UUID = 0x2BF1
GHS_CONTROL_POINT_UUID = 0x2BF4

FLAG_DEVICE_SPECIALIZATIONS = 1 << 0


@dataclass(frozen=True, slots=True)
class HealthSensorFeatures:
    flags: int
    observation_types: tuple[int, ...]
    specializations: tuple[tuple[int, int], ...] | None = None  # (term code, version)

    @classmethod
    def decode(cls, payload: bytes) -> HealthSensorFeatures:
        reader = Reader(payload, HEALTH_SENSOR_FEATURES_UUID)
        flags = reader.u8("flags")
        types = tuple(reader.uint(4, "observation type")
                      for _ in range(reader.u8("observation type count")))
        specializations = None
        if flags & FLAG_DEVICE_SPECIALIZATIONS:
            specializations = tuple((reader.u16("specialization"), reader.u8("version"))
                                    for _ in range(reader.u8("specialization count")))
        reader.done()
        return cls(flags, types, specializations)

    def encode(self) -> bytes:
        writer = Writer().u8(self.flags, "flags").u8(len(self.observation_types), "count")
        for code in self.observation_types:
            writer.uint(code, 4, "observation type")
        if self.specializations is not None:
            writer.u8(len(self.specializations), "specialization count")
            for term, version in self.specializations:
                writer.u16(term, "specialization").u8(version, "version")
        return writer.getvalue()

    def flag_summary(self) -> dict[str, object]:
        return {"observation_types": list(self.observation_types),
                "device_specializations": None if self.specializations is None
                else [{"term_code": t, "version": v} for t, v in self.specializations],
                "unknown_flags": self.flags & ~FLAG_DEVICE_SPECIALIZATIONS}


@dataclass(frozen=True, slots=True)
class ObservationSchedule:
    observation_type: int
    measurement_period_s: Numeric
    update_interval_s: Numeric

    @classmethod
    def decode(cls, payload: bytes, uuid16: int = OBSERVATION_SCHEDULE_CHANGED_UUID
               ) -> ObservationSchedule:
        reader = Reader(payload, uuid16)
        schedule = cls(reader.uint(4, "observation type"), reader.float32("measurement period"),
                       reader.float32("update interval"))
        reader.done()
        return schedule

    def encode(self) -> bytes:
        return Writer().uint(self.observation_type, 4, "observation type") \
            .float32(self.measurement_period_s).float32(self.update_interval_s).getvalue()

    def flag_summary(self) -> dict[str, object]:
        return {"observation_type": self.observation_type,
                "measurement_period_s": str(self.measurement_period_s),
                "update_interval_s": str(self.update_interval_s)}


class ControlOpCode(OpenIntEnum):
    START_SEND_LIVE_OBSERVATIONS = 0x01
    STOP_SEND_LIVE_OBSERVATIONS = 0x02
    SUCCESS = 0x80


@dataclass(frozen=True, slots=True)
class ControlPoint:
    """A GHS Control Point value: what the client writes, or the server's indicated answer."""

    op_code: ControlOpCode
    operand: bytes = b""

    @classmethod
    def decode(cls, payload: bytes) -> ControlPoint:
        reader = Reader(payload, GHS_CONTROL_POINT_UUID)
        op = ControlOpCode(reader.u8("op code"))
        return cls(op, reader.take(reader.remaining, "operand"))

    def encode(self) -> bytes:
        return Writer().u8(int(self.op_code), "op code").raw(self.operand).getvalue()

    def flag_summary(self) -> dict[str, object]:
        return {"op_code": self.op_code.label, "operand": self.operand.hex()}
