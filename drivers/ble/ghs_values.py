"""The values of IEEE 11073-10206 ACOM observations as GHS carries them: frozen dataclasses, with
the class types, header flags and status bits (facts and sources: drivers/ble/ghs_acom.py).
Decoded by ghs_acom.read_observation, encoded by ghs_encode.encode_observation."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Context, Decimal
from typing import TypeAlias

from drivers.ble.elapsed_time import ElapsedTime
from drivers.ble.ieee11073 import Numeric
from drivers.ble.wire import OpenIntEnum, check_presence
from gateway.errors import ModelError
from gateway.model import AbsentReason


class ObservationClass(OpenIntEnum):
    NUMERIC = 1
    SIMPLE_DISCRETE = 2
    STRING = 3
    SAMPLE_ARRAY = 4
    COMPOUND_DISCRETE = 5
    COMPOUND_STATE_EVENT = 6
    COMPOUND = 7
    TLV_ENCODED = 8
    BUNDLE = 0xFF


FLAG_TYPE = 1 << 0
FLAG_TIME_STAMP = 1 << 1
FLAG_DURATION = 1 << 2
FLAG_STATUS = 1 << 3
FLAG_OBJECT_ID = 1 << 4
FLAG_PATIENT = 1 << 5
FLAG_SUPPLEMENTAL = 1 << 6
FLAG_DERIVED_FROM = 1 << 7
FLAG_MEMBER_OF = 1 << 8
FLAG_TLVS = 1 << 9
DECODED_FLAGS = 0x1FF  # every bit whose field we know how to read
FLAG_NAMES = {0: "observation_type", 1: "time_stamp", 2: "measurement_duration",
              3: "measurement_status", 4: "object_id", 5: "patient",
              6: "supplemental_information", 7: "derived_from", 8: "is_member_of", 9: "tlvs"}

STATUS_NAMES = {0: "invalid", 1: "questionable", 2: "not_available", 3: "calibrating",
                4: "test_data", 5: "early_estimate", 6: "manually_entered", 7: "setting",
                14: "threshold_error", 15: "thresholding_disabled"}

MAX_SAMPLE_OCTETS = 4
_U32 = 1 << 32
# Exact sample scaling: a 32-bit sample times a 24-bit mantissa plus another needs ~20 digits.
_EXACT = Context(prec=60)


@dataclass(frozen=True, slots=True)
class ObservationHeader:
    """The flags and the optional fields they announce; a list field is None when absent."""

    flags: int = 0
    observation_type: int | None = None
    time_stamp: ElapsedTime | None = None
    duration_s: Numeric | None = None
    status: int | None = None
    object_id: int | None = None
    patient: int | None = None
    supplemental: tuple[int, ...] | None = None
    derived_from: tuple[int, ...] | None = None
    member_of: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.flags <= DECODED_FLAGS:
            raise ModelError("observation flags: only bits 0-8 can be represented")
        for bit, field in ((FLAG_TYPE, self.observation_type), (FLAG_TIME_STAMP, self.time_stamp),
                           (FLAG_DURATION, self.duration_s), (FLAG_STATUS, self.status),
                           (FLAG_OBJECT_ID, self.object_id), (FLAG_PATIENT, self.patient),
                           (FLAG_SUPPLEMENTAL, self.supplemental),
                           (FLAG_DERIVED_FROM, self.derived_from),
                           (FLAG_MEMBER_OF, self.member_of)):
            check_presence(self.flags, bit, field is not None, FLAG_NAMES[bit.bit_length() - 1])
        for codes in (self.supplemental, self.derived_from, self.member_of):
            if codes is not None and (len(codes) > 0xFF or any(not 0 <= c < _U32 for c in codes)):
                raise ModelError("a code list holds at most 255 uint32 values")


@dataclass(frozen=True, slots=True)
class NumericValue:
    unit_code: int
    value: Numeric


@dataclass(frozen=True, slots=True)
class DiscreteValue:
    code: int


@dataclass(frozen=True, slots=True)
class StringValue:
    text: str


@dataclass(frozen=True, slots=True)
class SampleArrayValue:
    unit_code: int
    scale_factor: Numeric
    offset: Numeric
    period_s: Numeric
    samples_per_period: int
    octets_per_sample: int
    samples: tuple[int, ...]  # the scaled values as sent

    def __post_init__(self) -> None:
        if not 1 <= self.octets_per_sample <= MAX_SAMPLE_OCTETS:
            raise ModelError("a sample has 1 to 4 octets")
        limit = 1 << (8 * self.octets_per_sample)
        if any(not 0 <= s < limit for s in self.samples):
            raise ModelError("a sample does not fit its octets")

    def scaled(self) -> tuple[Decimal, ...] | AbsentReason:
        """Each sample as scaled x scale factor + offset, exactly; the reason when the scale
        factor or offset is a special value (NaN, NRes, infinity)."""
        if isinstance(self.scale_factor, AbsentReason):
            return self.scale_factor
        if isinstance(self.offset, AbsentReason):
            return self.offset
        m, b = self.scale_factor, self.offset
        return tuple(_EXACT.add(_EXACT.multiply(Decimal(s), m), b) for s in self.samples)


@dataclass(frozen=True, slots=True)
class CompoundDiscreteValue:
    codes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class StateEventValue:
    size: int  # octets of each bit field
    supported: int
    state_event: int
    value: int

    def __post_init__(self) -> None:
        limit = 1 << (8 * self.size)
        if not 1 <= self.size <= 0xFF or not all(
                0 <= v < limit for v in (self.supported, self.state_event, self.value)):
            raise ModelError("state/event bit fields must fit their size")


ComponentValue: TypeAlias = (NumericValue | DiscreteValue | StringValue | SampleArrayValue
                             | CompoundDiscreteValue | StateEventValue)


@dataclass(frozen=True, slots=True)
class Component:
    component_type: int  # MDC code
    value: ComponentValue


@dataclass(frozen=True, slots=True)
class CompoundValue:
    components: tuple[Component, ...]


Value: TypeAlias = ComponentValue | CompoundValue

VALUE_CLASS: dict[type, ObservationClass] = {
    NumericValue: ObservationClass.NUMERIC,
    DiscreteValue: ObservationClass.SIMPLE_DISCRETE,
    StringValue: ObservationClass.STRING,
    SampleArrayValue: ObservationClass.SAMPLE_ARRAY,
    CompoundDiscreteValue: ObservationClass.COMPOUND_DISCRETE,
    StateEventValue: ObservationClass.COMPOUND_STATE_EVENT,
    CompoundValue: ObservationClass.COMPOUND,
}


@dataclass(frozen=True, slots=True)
class Observation:
    header: ObservationHeader
    value: Value

    @property
    def class_type(self) -> int:
        return int(VALUE_CLASS[type(self.value)])


@dataclass(frozen=True, slots=True)
class Bundle:
    header: ObservationHeader
    members: tuple[Observation | UnsupportedObservation, ...]

    @property
    def class_type(self) -> int:
        return int(ObservationClass.BUNDLE)


@dataclass(frozen=True, slots=True)
class UnsupportedObservation:
    """An observation we do not decode, kept as sent (the octets after its Length field)."""

    class_type: int
    body: bytes
    reason: str


AnyObservation: TypeAlias = Observation | Bundle | UnsupportedObservation
