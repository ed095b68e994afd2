"""Glucose Service 0x1808: Glucose Measurement Context 0x2A34 (linked to its Glucose Measurement by
the sequence number; see ``glucose.GlucoseJoiner``).

Layout (GATT Specification Supplement): flags uint8 (bit 0 Carbohydrate ID and Carbohydrate; bit 1
Meal; bit 2 Tester-Health; bit 3 Exercise Duration and Intensity; bit 4 Medication ID and
Medication; bit 5 medication units 0 = kilograms, 1 = liters; bit 6 HbA1c; bit 7 Extended Flags),
uint16 sequence number, [uint8 extended flags], [uint8 carbohydrate id, SFLOAT carbohydrate (kg)],
[uint8 meal], [uint8 tester (low nibble) / health (high nibble)], [uint16 exercise duration (s,
0xFFFF = overrun), uint8 exercise intensity (%)], [uint8 medication id, SFLOAT medication (kg or
L)], [SFLOAT HbA1c (%)].
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.ble.ieee11073 import Numeric
from drivers.ble.wire import OpenIntEnum, Reader, Writer, check_presence
from gateway.errors import ModelError

GLUCOSE_CONTEXT_UUID = 0x2A34

FLAG_CARBOHYDRATE = 1 << 0
FLAG_MEAL = 1 << 1
FLAG_TESTER_HEALTH = 1 << 2
FLAG_EXERCISE = 1 << 3
FLAG_MEDICATION = 1 << 4
FLAG_MEDICATION_LITERS = 1 << 5
FLAG_HBA1C = 1 << 6
FLAG_EXTENDED = 1 << 7

EXERCISE_OVERRUN = 0xFFFF


class CarbohydrateId(OpenIntEnum):
    BREAKFAST = 1
    LUNCH = 2
    DINNER = 3
    SNACK = 4
    DRINK = 5
    SUPPER = 6
    BRUNCH = 7


class Meal(OpenIntEnum):
    PREPRANDIAL = 1
    POSTPRANDIAL = 2
    FASTING = 3
    CASUAL = 4  # snacks, drinks, etc.
    BEDTIME = 5


class SampleTester(OpenIntEnum):
    SELF = 1
    HEALTH_CARE_PROFESSIONAL = 2
    LAB_TEST = 3
    NOT_AVAILABLE = 15


class Health(OpenIntEnum):
    MINOR_HEALTH_ISSUES = 1
    MAJOR_HEALTH_ISSUES = 2
    DURING_MENSES = 3
    UNDER_STRESS = 4
    NO_HEALTH_ISSUES = 5
    NOT_AVAILABLE = 15


class MedicationId(OpenIntEnum):
    RAPID_ACTING_INSULIN = 1
    SHORT_ACTING_INSULIN = 2
    INTERMEDIATE_ACTING_INSULIN = 3
    LONG_ACTING_INSULIN = 4
    PRE_MIXED_INSULIN = 5


@dataclass(frozen=True, slots=True)
class GlucoseContext:
    """A parsed 0x2A34 value; ``flags`` as sent. Values keep the units the spec gives them:
    carbohydrate in kg, medication in kg or L (flags bit 5), HbA1c in %."""

    flags: int
    sequence_number: int
    extended_flags: int | None = None
    carbohydrate: tuple[CarbohydrateId, Numeric] | None = None
    meal: Meal | None = None
    tester_health: tuple[SampleTester, Health] | None = None
    exercise: tuple[int, int] | None = None  # (duration s, intensity %)
    medication: tuple[MedicationId, Numeric] | None = None
    hba1c_pct: Numeric | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.flags <= 0xFF:
            raise ModelError("flags must fit one byte")
        for mask, value, name in (
            (FLAG_EXTENDED, self.extended_flags, "extended_flags"),
            (FLAG_CARBOHYDRATE, self.carbohydrate, "carbohydrate"),
            (FLAG_MEAL, self.meal, "meal"),
            (FLAG_TESTER_HEALTH, self.tester_health, "tester_health"),
            (FLAG_EXERCISE, self.exercise, "exercise"),
            (FLAG_MEDICATION, self.medication, "medication"),
            (FLAG_HBA1C, self.hba1c_pct, "hba1c_pct"),
        ):
            check_presence(self.flags, mask, value is not None, name)

    @property
    def medication_unit(self) -> str:
        return "L" if self.flags & FLAG_MEDICATION_LITERS else "kg"

    @classmethod
    def decode(cls, payload: bytes) -> GlucoseContext:
        reader = Reader(payload, GLUCOSE_CONTEXT_UUID)
        flags = reader.u8("flags")
        sequence = reader.u16("sequence number")
        extended = reader.u8("extended flags") if flags & FLAG_EXTENDED else None
        carbohydrate = meal = tester_health = exercise = medication = hba1c = None
        if flags & FLAG_CARBOHYDRATE:
            carbohydrate = (CarbohydrateId(reader.u8("carbohydrate id")),
                            reader.sfloat("carbohydrate"))
        if flags & FLAG_MEAL:
            meal = Meal(reader.u8("meal"))
        if flags & FLAG_TESTER_HEALTH:
            both = reader.u8("tester-health")
            tester_health = (SampleTester(both & 0x0F), Health(both >> 4))
        if flags & FLAG_EXERCISE:
            exercise = (reader.u16("exercise duration"), reader.u8("exercise intensity"))
        if flags & FLAG_MEDICATION:
            medication = (MedicationId(reader.u8("medication id")), reader.sfloat("medication"))
        if flags & FLAG_HBA1C:
            hba1c = reader.sfloat("HbA1c")
        reader.done()
        return cls(flags, sequence, extended, carbohydrate, meal, tester_health, exercise,
                   medication, hba1c)

    def encode(self) -> bytes:
        writer = Writer().u8(self.flags, "flags").u16(self.sequence_number, "sequence number")
        if self.extended_flags is not None:
            writer.u8(self.extended_flags, "extended flags")
        if self.carbohydrate is not None:
            writer.u8(int(self.carbohydrate[0]), "carbohydrate id").sfloat(self.carbohydrate[1])
        if self.meal is not None:
            writer.u8(int(self.meal), "meal")
        if self.tester_health is not None:
            tester, health = self.tester_health
            if not (0 <= tester <= 0x0F and 0 <= health <= 0x0F):
                raise ModelError("tester and health are 4-bit codes")
            writer.u8(int(tester) | int(health) << 4, "tester-health")
        if self.exercise is not None:
            writer.u16(self.exercise[0], "exercise duration").u8(self.exercise[1], "intensity")
        if self.medication is not None:
            writer.u8(int(self.medication[0]), "medication id").sfloat(self.medication[1])
        if self.hba1c_pct is not None:
            writer.sfloat(self.hba1c_pct)
        return writer.getvalue()

    def flag_summary(self) -> dict[str, object]:
        """Which context fields were sent and the non-numeric ones (no clinical numbers)."""
        return {
            "sequence_number": self.sequence_number,
            "extended_flags": self.extended_flags,
            "carbohydrate_present": self.carbohydrate is not None,
            "carbohydrate_id": None if self.carbohydrate is None
            else self.carbohydrate[0].label,
            "meal": None if self.meal is None else self.meal.label,
            "tester": None if self.tester_health is None else self.tester_health[0].label,
            "health": None if self.tester_health is None else self.tester_health[1].label,
            "exercise_present": self.exercise is not None,
            "exercise_overrun": self.exercise is not None
            and self.exercise[0] == EXERCISE_OVERRUN,
            "medication_present": self.medication is not None,
            "medication_id": None if self.medication is None else self.medication[0].label,
            "medication_liters": bool(self.flags & FLAG_MEDICATION_LITERS),
            "hba1c_present": self.hba1c_pct is not None,
        }
