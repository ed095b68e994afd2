"""Generic Health Sensor observations (0x2B8B live, 0x2BDD stored): golden vectors written from the
field layout in drivers/ble/ghs_acom.py (GHSS v1.0 Health Observation Body, ETS v1.0), one per
observation class and flag combination, with every decoded field and the model mapping asserted.

Every vector is one notified value: Segmentation Header (0x03 = first and last segment, counter
0; 0x07 counter 1; 0x17 counter 5), then Observation Class Type, Length (octets after the Length
field), Flags and the fields they announce, then the value.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from drivers.ble.elapsed_time import ElapsedTime
from drivers.ble.ghs import HealthObservation, UnusableObservation, decode_live, decode_stored
from drivers.ble.ghs_values import (
    Bundle,
    Component,
    CompoundDiscreteValue,
    CompoundValue,
    DiscreteValue,
    NumericValue,
    Observation,
    ObservationHeader,
    SampleArrayValue,
    StateEventValue,
    StringValue,
    UnsupportedObservation,
)
from drivers.ble.measure import Reading
from gateway.errors import DecodeError
from gateway.model import AbsentReason
from gateway.model import Component as ModelComponent
from gateway.model import MeasurementStatus as Status
from tests.ble.helpers import same, wall

# MDC codes (IEEE 11073-10101, partition 2), written out so that these tests do not depend on
# where the project keeps its vocabulary.
MDC_PULS_OXIM_SAT_O2 = 150456
MDC_PULS_OXIM_PULS_RATE = 149530
MDC_PRESS_BLD_NONINV = 150020
MDC_PRESS_BLD_NONINV_SYS = 150021
MDC_PRESS_BLD_NONINV_DIA = 150022
MDC_PRESS_BLD_NONINV_MEAN = 150023
MDC_PULS_RATE_NON_INV = 149546  # pulse rate reported by a blood-pressure cuff
MDC_ECG_ELEC_POTL_I = 131329  # 2::257
MDC_MODALITY_SPOT = 150588  # 2::19516, supplemental information "spot measurement"
MDC_BLP_MEASUREMENT_STATUS = 8410608  # 128::22000
CUFF_LOOSE = 196848  # 3::240
CUFF_IMPROPERLY_PLACED = 196846  # 3::238

# Time stamp: flags 0x22 (UTC, on the current timeline, 1 s resolution), 767865600 s after
# 2000-01-01T00:00:00 = 2024-05-01T08:00:00Z, sync source 0x06, TZ/DST offset 0 (unused).
TS_UTC = "22 00b3c42d0000 06 00"
STAMP_UTC = ElapsedTime(0x22, 767865600, 6, 0)
AT_UTC = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)

# Numeric SpO2: flags 0x0003 (type, time stamp); type 150456 MDC_PULS_OXIM_SAT_O2; unit 544 (%);
# FLOAT 0xFF0003CF = 975 x 10^-1 = 97.5. Length 21.
LIVE_NUMERIC = bytes.fromhex(f"03 01 1500 0300 b84b0200 {TS_UTC} 2002 cf0300ff")

# Numeric with every decodable header field: segment counter 5; flags 0x01FF; type 149530
# (MDC_PULS_OXIM_PULS_RATE); time stamp flags 0x38 (local time, 1 ms resolution, TZ/DST offset
# used, current timeline), 767872800250 ms = local 2024-05-01 10:00:00.250, sync source 1,
# offset +8 x 15 min = +02:00; duration FLOAT 1.5 s; status 0x0002 (questionable); object id
# 7; patient 1; supplemental [MDC_MODALITY_SPOT]; derived from [5]; member of [9]; unit 2720
# (/min); FLOAT 0x007FFFFF = NaN. Length 47.
LIVE_NUMERIC_ALL_FIELDS = bytes.fromhex(
    "17 01 2f00 ff01 1a480200 38 fa15c9c8b200 01 08 0f0000ff 0200 07000000 01"
    " 01 3c4c0200 01 05000000 01 09000000 a00a ffff7f00"
)
# The same numeric observation with NRes, +INFINITY and -INFINITY (type only, length 12).
NUMERIC_SPECIAL = {
    AbsentReason.NRES: bytes.fromhex("03 01 0c00 0100 b84b0200 2002 00008000"),
    AbsentReason.POSITIVE_INFINITY: bytes.fromhex("03 01 0c00 0100 b84b0200 2002 feff7f00"),
    AbsentReason.NEGATIVE_INFINITY: bytes.fromhex("03 01 0c00 0100 b84b0200 2002 02008000"),
}
# Simple discrete: flags 0x0003; type MDC_BLP_MEASUREMENT_STATUS; time stamp flags 0x05 (tick
# counter, 100 ms resolution), 12345 ticks, source 0, offset -128 (unknown); code 196848.
# Length 19.
LIVE_DISCRETE_TICKS = bytes.fromhex("03 02 1300 0300 f0558000 05 393000000000 00 80 f0000300")
# String: flags 0x0001; type 196846; length 8, UTF-8 "Café ok". Length 16.
LIVE_STRING = bytes.fromhex("03 03 1000 0100 ee000300 0800 436166c3a9206f6b")
# Sample array (segment counter 1): flags 0x0003; type MDC_ECG_ELEC_POTL_I; time stamp TS_UTC;
# unit 4274 (mV); scale FLOAT 0.005; offset FLOAT -10.240; period FLOAT 0.004 s; 1 sample per
# period; 2 octets per sample; 3 samples 2048, 2050, 1990 -> 0.000, 0.010, -0.290 mV. Length 41.
LIVE_SAMPLE_ARRAY = bytes.fromhex(
    f"07 04 2900 0300 01010200 {TS_UTC} b210 050000fd 00d8fffd 040000fd 01 02 03000000"
    " 0008 0208 c607"
)
# Compound discrete event: flags 0x0081 (type, derived from); type MDC_BLP_MEASUREMENT_STATUS;
# derived from [123456]; 2 terms: cuff loose, cuff improperly placed. Length 20.
LIVE_COMPOUND_DISCRETE = bytes.fromhex(
    "03 05 1400 8100 f0558000 01 40e20100 02 f0000300 ee000300"
)
# Compound state/event: flags 0x0001; type MDC_BLP_MEASUREMENT_STATUS; size 2; supported
# 0x0007; state/event 0x0001; value 0x0005. Length 13.
LIVE_STATE_EVENT = bytes.fromhex("03 06 0d00 0100 f0558000 02 0700 0100 0500")
# Compound blood pressure: flags 0x0013 (type, time stamp, object id); type 150020
# MDC_PRESS_BLD_NONINV; TS_UTC; object id 123456; 3 components, each component type, value
# type 1 (numeric), unit 3872 (mm[Hg]), FLOAT: systolic 120, diastolic 80, MAP 93. Length 53.
LIVE_COMPOUND_BP = bytes.fromhex(
    f"03 07 3500 1300 044a0200 {TS_UTC} 40e20100 03"
    " 054a0200 01 200f 78000000 064a0200 01 200f 50000000 074a0200 01 200f 5d000000"
)
# Compound with a discrete and a string part: flags 0x0001; type MDC_BLP_MEASUREMENT_STATUS;
# 2 components: 196848 value type 2 code 196846; 196846 value type 3 "ok". Length 25.
LIVE_COMPOUND_MIXED = bytes.fromhex(
    "03 07 1900 0100 f0558000 02 f0000300 02 ee000300 ee000300 03 0200 6f6b"
)
# Bundle: flags 0x0042 (time stamp, supplemental); TS_UTC; supplemental [MDC_MODALITY_SPOT];
# 2 members with only a type: SpO2 97.5 % and pulse 72 /min (each length 12). Length 47.
LIVE_BUNDLE = bytes.fromhex(
    f"03 ff 2f00 4200 {TS_UTC} 01 3c4c0200 02"
    " 01 0c00 0100 b84b0200 2002 cf0300ff 01 0c00 0100 1a480200 a00a 48000000"
)
# Bundle with a member of unknown class 0x42 (3 octets) and an SpO2 member. Length 33.
LIVE_BUNDLE_UNKNOWN_MEMBER = bytes.fromhex(
    f"03 ff 2100 0200 {TS_UTC} 02 42 0300 aabbcc 01 0c00 0100 b84b0200 2002 cf0300ff"
)
LIVE_UNKNOWN_CLASS = bytes.fromhex("03 42 0400 01000000")
LIVE_TLV_CLASS = bytes.fromhex("03 08 0300 000000")
# Numeric whose flags announce TLVs (bit 9): layout not decoded. Length 12.
LIVE_TLVS_FLAG = bytes.fromhex("03 01 0c00 0102 b84b0200 2002 cf0300ff")
# Stored: record number 42, then the LIVE_NUMERIC observation.
STORED_NUMERIC = bytes.fromhex(f"03 2a000000 01 1500 0300 b84b0200 {TS_UTC} 2002 cf0300ff")

SPO2_HEADER = ObservationHeader(0x0003, MDC_PULS_OXIM_SAT_O2, STAMP_UTC)
SPO2 = Observation(SPO2_HEADER, NumericValue(544, Decimal("97.5")))


def _decoded(payload: bytes) -> object:
    return decode_live(payload).observation


def test_numeric_with_time_stamp() -> None:
    assert same(_decoded(LIVE_NUMERIC), SPO2)
    assert same(decode_live(LIVE_NUMERIC).readings(), (
        Reading(MDC_PULS_OXIM_SAT_O2, Decimal("97.5"), "%", device_time=AT_UTC),
    ))


def test_numeric_with_every_header_field_and_nan() -> None:
    stamp = ElapsedTime(0x38, 767872800250, 1, 8)
    expected = Observation(
        ObservationHeader(0x01FF, MDC_PULS_OXIM_PULS_RATE, stamp, Decimal("1.5"), 0x0002,
                          7, 1, (MDC_MODALITY_SPOT,), (5,), (9,)),
        NumericValue(2720, AbsentReason.NAN),
    )
    assert same(_decoded(LIVE_NUMERIC_ALL_FIELDS), expected)
    when = datetime(2024, 5, 1, 10, 0, 0, 250000, tzinfo=timezone(timedelta(hours=2)))
    assert same(decode_live(LIVE_NUMERIC_ALL_FIELDS).readings(), (
        Reading(MDC_PULS_OXIM_PULS_RATE, None, "/min", AbsentReason.NAN, when,
                status=Status.QUESTIONABLE, supplemental=str(MDC_MODALITY_SPOT)),
    ))


@pytest.mark.parametrize("reason", sorted(NUMERIC_SPECIAL))
def test_special_values_have_no_value_and_their_reason(reason: AbsentReason) -> None:
    (reading,) = decode_live(NUMERIC_SPECIAL[reason]).readings()
    assert reading.value is None
    assert reading.absent_reason is reason


def test_simple_discrete_with_a_tick_counter_has_no_device_time() -> None:
    stamp = ElapsedTime(0x05, 12345, 0, -128)
    expected = Observation(ObservationHeader(0x0003, MDC_BLP_MEASUREMENT_STATUS, stamp),
                           DiscreteValue(CUFF_LOOSE))
    assert same(_decoded(LIVE_DISCRETE_TICKS), expected)
    assert stamp.device_time() is None
    assert same(decode_live(LIVE_DISCRETE_TICKS).readings(), (
        Reading(MDC_BLP_MEASUREMENT_STATUS, None, "1", value_code=CUFF_LOOSE),
    ))


def test_string_is_one_reading_with_its_text() -> None:
    parsed = decode_live(LIVE_STRING)
    assert same(parsed.observation, Observation(ObservationHeader(0x0001, CUFF_IMPROPERLY_PLACED),
                                                StringValue("Café ok")))
    assert parsed.readings() == (Reading(CUFF_IMPROPERLY_PLACED, None, "1", text="Café ok"),)
    assert parsed.unusable() == ()


def test_sample_array_scales_every_sample_in_order() -> None:
    value = SampleArrayValue(4274, Decimal("0.005"), Decimal("-10.240"), Decimal("0.004"), 1, 2,
                             (2048, 2050, 1990))
    expected = Observation(ObservationHeader(0x0003, MDC_ECG_ELEC_POTL_I, STAMP_UTC), value)
    assert same(_decoded(LIVE_SAMPLE_ARRAY), expected)
    assert same(value.scaled(), (Decimal("0.000"), Decimal("0.010"), Decimal("-0.290")))
    (reading,) = decode_live(LIVE_SAMPLE_ARRAY).readings()
    assert same(reading, Reading(
        MDC_ECG_ELEC_POTL_I, None, "mV", device_time=AT_UTC,
        samples=tuple(Decimal(v) for v in ("0.000", "0.010", "-0.290")),
        sample_period_ms=Decimal("4"),  # 0.004 s
    ))


def test_compound_discrete_gives_one_reading_per_term() -> None:
    expected = Observation(
        ObservationHeader(0x0081, MDC_BLP_MEASUREMENT_STATUS, derived_from=(123456,)),
        CompoundDiscreteValue((CUFF_LOOSE, CUFF_IMPROPERLY_PLACED)),
    )
    assert same(_decoded(LIVE_COMPOUND_DISCRETE), expected)
    assert same(decode_live(LIVE_COMPOUND_DISCRETE).readings(), (
        Reading(MDC_BLP_MEASUREMENT_STATUS, None, "1", value_code=CUFF_LOOSE),
        Reading(MDC_BLP_MEASUREMENT_STATUS, None, "1", value_code=CUFF_IMPROPERLY_PLACED),
    ))


def test_state_event_bits() -> None:
    expected = Observation(ObservationHeader(0x0001, MDC_BLP_MEASUREMENT_STATUS),
                           StateEventValue(2, 0x0007, 0x0001, 0x0005))
    assert same(_decoded(LIVE_STATE_EVENT), expected)
    assert same(decode_live(LIVE_STATE_EVENT).readings(),
                (Reading(MDC_BLP_MEASUREMENT_STATUS, Decimal(5), "1"),))


def test_compound_blood_pressure_is_one_reading_with_components() -> None:
    parts = ((MDC_PRESS_BLD_NONINV_SYS, "120"), (MDC_PRESS_BLD_NONINV_DIA, "80"),
             (MDC_PRESS_BLD_NONINV_MEAN, "93"))
    expected = Observation(
        ObservationHeader(0x0013, MDC_PRESS_BLD_NONINV, STAMP_UTC, object_id=123456),
        CompoundValue(tuple(Component(c, NumericValue(3872, Decimal(v))) for c, v in parts)),
    )
    assert same(_decoded(LIVE_COMPOUND_BP), expected)
    assert same(decode_live(LIVE_COMPOUND_BP).readings(), (Reading(
        MDC_PRESS_BLD_NONINV, None, "mm[Hg]", device_time=AT_UTC,
        components=tuple(ModelComponent(c, Decimal(v), "mm[Hg]") for c, v in parts)),))


def test_compound_with_a_string_part_is_unusable_in_the_model() -> None:
    expected = Observation(ObservationHeader(0x0001, MDC_BLP_MEASUREMENT_STATUS), CompoundValue((
        Component(CUFF_LOOSE, DiscreteValue(CUFF_IMPROPERLY_PLACED)),
        Component(CUFF_IMPROPERLY_PLACED, StringValue("ok")),
    )))
    parsed = decode_live(LIVE_COMPOUND_MIXED)
    assert same(parsed.observation, expected)
    assert parsed.readings() == ()
    assert parsed.unusable() == (UnusableObservation(
        7, MDC_BLP_MEASUREMENT_STATUS, "compound part of class 3 has no model component"),)


def test_bundle_members_take_the_bundle_time_stamp_and_supplemental_info() -> None:
    header = ObservationHeader(0x0042, time_stamp=STAMP_UTC, supplemental=(MDC_MODALITY_SPOT,))
    pulse = Observation(ObservationHeader(0x0001, MDC_PULS_OXIM_PULS_RATE),
                        NumericValue(2720, Decimal(72)))
    spo2 = Observation(ObservationHeader(0x0001, MDC_PULS_OXIM_SAT_O2),
                       NumericValue(544, Decimal("97.5")))
    assert same(_decoded(LIVE_BUNDLE), Bundle(header, (spo2, pulse)))
    spot = str(MDC_MODALITY_SPOT)
    assert same(decode_live(LIVE_BUNDLE).readings(), (
        Reading(MDC_PULS_OXIM_SAT_O2, Decimal("97.5"), "%", device_time=AT_UTC,
                supplemental=spot),
        Reading(MDC_PULS_OXIM_PULS_RATE, Decimal(72), "/min", device_time=AT_UTC,
                supplemental=spot),
    ))


def test_unknown_member_of_a_bundle_is_unusable_and_the_others_are_read() -> None:
    parsed = decode_live(LIVE_BUNDLE_UNKNOWN_MEMBER)
    assert isinstance(parsed.observation, Bundle)
    assert same(parsed.observation.members[0],
                UnsupportedObservation(0x42, b"\xaa\xbb\xcc", "unknown observation class type 66"))
    assert parsed.unusable() == (
        UnusableObservation(0x42, None, "unknown observation class type 66"),)
    assert same(parsed.readings(), (
        Reading(MDC_PULS_OXIM_SAT_O2, Decimal("97.5"), "%", device_time=AT_UTC),))


@pytest.mark.parametrize(("payload", "class_type", "reason"), [
    (LIVE_UNKNOWN_CLASS, 0x42, "unknown observation class type 66"),
    (LIVE_TLV_CLASS, 8, "TLV-encoded observations are not decoded"),
    (LIVE_TLVS_FLAG, 1, "observation with TLVs or reserved header flags"),
])
def test_what_we_do_not_decode_is_a_typed_unusable_record(
    payload: bytes, class_type: int, reason: str
) -> None:
    parsed = decode_live(payload)
    assert isinstance(parsed.observation, UnsupportedObservation)
    assert parsed.observation.body == payload[4:]
    assert parsed.readings() == ()
    assert parsed.unusable() == (UnusableObservation(class_type, None, reason),)


def test_stored_observation_carries_its_record_number() -> None:
    parsed = decode_stored(STORED_NUMERIC)
    assert same(parsed, HealthObservation(SPO2, 42))
    assert same(parsed.readings(), (Reading(MDC_PULS_OXIM_SAT_O2, Decimal("97.5"), "%",
                                            device_time=AT_UTC, record_id=42),))


def test_local_time_without_offset_is_the_device_wall_clock() -> None:
    stamp = ElapsedTime(0x20, 767865600, 0, 0)  # local time, offset field unused
    assert stamp.device_time() == wall(2024, 5, 1, 8)


def test_time_off_the_current_timeline_is_an_untrusted_clock() -> None:
    payload = LIVE_NUMERIC.replace(bytes.fromhex("22 00b3"), bytes.fromhex("02 00b3"))
    (reading,) = decode_live(payload).readings()
    assert reading.device_time == AT_UTC
    assert reading.clock_set is False


def test_status_bits_map_to_the_model() -> None:
    payload = bytes.fromhex("03 01 0e00 0900 b84b0200 3100 2002 cf0300ff")  # status 0x0031
    (reading,) = decode_live(payload).readings()
    assert reading.status == Status.INVALID | Status.TEST_DATA | Status.EARLY_INDICATION


def test_unknown_unit_code_is_unusable_not_guessed() -> None:
    payload = LIVE_NUMERIC.replace(bytes.fromhex("2002 cf03"), bytes.fromhex("ffff cf03"))
    parsed = decode_live(payload)
    assert parsed.readings() == ()
    assert parsed.unusable() == (UnusableObservation(
        1, MDC_PULS_OXIM_SAT_O2, "unit code 65535 has no UCUM mapping here"),)


@pytest.mark.parametrize(("payload", "reason"), [
    (LIVE_NUMERIC[:-1], "too short: the observation is cut off"),
    (LIVE_NUMERIC + b"\x00", "too long: 1 bytes after the last field"),
    (LIVE_NUMERIC[:2], "too short: observation length needs 2 more bytes, 0 left"),
    (LIVE_NUMERIC[:2] + b"\x14\x00" + LIVE_NUMERIC[4:-1],  # Length and value one short
     "too short: numeric value needs 4 more bytes, 3 left"),
    (bytes.fromhex("03 03 0700 0000 0300 ff6f6b"), "string observation is not UTF-8"),
    (bytes.fromhex("03 ff 0900 0000 01 ff 0300 000000"), "a bundle inside a bundle"),
    (bytes.fromhex("03 04 1600 0000 b210 00000000 00000000 00000000 01 00 00000000"),
     "octets per sample must be 1 to 4"),
    (bytes.fromhex("03 04 1800 0000 b210 00000000 00000000 00000000 01 01 ffffffff 0000"),
     "too short: the samples are cut off"),
    (bytes.fromhex("01 01 0c00 0100 b84b0200 2002 cf0300ff"),
     "only part of a segmented observation (first=True, last=False); reassemble first"),
    (b"", "too short: no segmentation header"),
])
def test_malformed_values_are_decode_errors(payload: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_live(payload)
    assert caught.value.fields["uuid"] == "2b8b"
    assert caught.value.fields["reason"] == reason
