"""Oximetry reducer: one reading per interval, and never a hidden status change or desaturation."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from drivers.serial.oximetry import OximetryFlag, OximetrySample
from drivers.serial.reducer import (
    UNUSABLE,
    WATCHED,
    OximetryReading,
    OximetryReducer,
    Reason,
    ReducerConfig,
)

OFF = OximetryFlag.SENSOR_OFF
ART = OximetryFlag.ARTIFACT
NONE = OximetryFlag.NONE


def sample(
    t: float, spo2: int | None, pulse: int | None = 70, flags: OximetryFlag = NONE
) -> OximetrySample:
    return OximetrySample(t, spo2, pulse, flags)


def run(reducer: OximetryReducer, samples: list[OximetrySample]) -> list[OximetryReading]:
    return [r for s in samples for r in reducer.feed(s)]


def test_each_interval_reports_the_low_median_and_every_flag_seen() -> None:
    reducer = OximetryReducer(ReducerConfig(interval_s=60.0))
    out = run(
        reducer,
        [
            sample(0, 97, 70),
            sample(20, 96, 90, ART),
            sample(21, 97, 72),
            sample(40, 98, 71),
            sample(60, 97, 70),
        ],
    )
    interval = [r for r in out if r.reason is Reason.INTERVAL]
    assert interval == [OximetryReading(60.0, 97, 71, ART, Reason.INTERVAL, samples=4)]


def test_tick_closes_an_interval_when_no_samples_come_and_empty_intervals_report_nothing() -> None:
    reducer = OximetryReducer(ReducerConfig(interval_s=10.0))
    reducer.feed(sample(0, 95))
    assert reducer.tick(9.9) == []
    assert reducer.tick(10.0) == [OximetryReading(10.0, 95, 70, NONE, Reason.INTERVAL, 1)]
    assert reducer.tick(50.0) == []
    assert reducer.feed(sample(55, 96)) == []
    assert reducer.tick(60.0) == [OximetryReading(60.0, 96, 70, NONE, Reason.INTERVAL, 1)]


def test_sensor_off_and_on_are_reported_at_once() -> None:
    reducer = OximetryReducer()
    out = run(
        reducer,
        [sample(0, 97), sample(1, None, None, OFF), sample(2, None, None, OFF), sample(3, 96)],
    )
    assert out == [
        OximetryReading(1, None, None, OFF, Reason.STATUS_CHANGE),
        OximetryReading(3, 96, 70, NONE, Reason.STATUS_CHANGE),
    ]


def test_a_desaturation_below_90_is_reported_at_once_with_deeper_steps_and_its_end() -> None:
    reducer = OximetryReducer()
    out = run(
        reducer,
        [
            sample(0, 96),
            sample(1, 89),
            sample(2, 87),
            sample(3, 85),
            sample(4, 84),
            sample(5, 91),
            sample(6, 93),
        ],
    )
    assert [(r.time_s, r.spo2_pct, r.reason) for r in out] == [
        (1, 89, Reason.DESATURATION),
        (3, 85, Reason.DESATURATION_DEEPER),
        (6, 93, Reason.DESATURATION_END),  # 91 is still 5 points below the baseline of 96
    ]


def test_a_drop_of_four_points_from_the_baseline_is_a_desaturation_even_above_90() -> None:
    reducer = OximetryReducer(ReducerConfig(interval_s=10.0))
    out = run(reducer, [sample(0, 98), sample(10, 98), sample(12, 95), sample(13, 94)])
    assert [(r.spo2_pct, r.reason) for r in out] == [
        (98, Reason.INTERVAL),
        (94, Reason.DESATURATION),
    ]


def test_the_interval_median_does_not_hide_a_short_desaturation() -> None:
    reducer = OximetryReducer(ReducerConfig(interval_s=60.0))
    samples = [sample(t, 97) for t in range(30)] + [sample(30, 82)]
    samples += [sample(t, 97) for t in range(31, 61)]
    out = run(reducer, samples)
    assert [(r.spo2_pct, r.reason) for r in out] == [
        (82, Reason.DESATURATION),
        (97, Reason.DESATURATION_END),
        (97, Reason.INTERVAL),
    ]


def test_unusable_samples_count_for_neither_median_nor_desaturation() -> None:
    reducer = OximetryReducer(ReducerConfig(interval_s=10.0))
    out = run(reducer, [sample(0, 97), sample(1, 40, 70, OFF), sample(2, 97), sample(10, 97)])
    assert [r.reason for r in out] == [Reason.STATUS_CHANGE, Reason.STATUS_CHANGE, Reason.INTERVAL]
    assert out[-1].spo2_pct == 97


_FLAGS = st.sampled_from([NONE, OFF, ART, OximetryFlag.OUT_OF_TRACK, ART | OFF])


@given(
    st.lists(st.tuples(st.floats(0.0, 30.0), st.integers(60, 100) | st.none(), _FLAGS), max_size=80)
)
def test_no_status_change_and_no_desaturation_is_ever_hidden(
    steps: list[tuple[float, int | None, OximetryFlag]],
) -> None:
    reducer = OximetryReducer(ReducerConfig(interval_s=20.0))
    now, previous = 0.0, None
    in_episode = False
    for delay, spo2, flags in steps:
        now += delay
        current = sample(now, spo2, 70, flags)
        out = reducer.feed(current)
        events = [r for r in out if r.reason is not Reason.INTERVAL]
        if previous is not None and (flags & WATCHED) != (previous & WATCHED):
            assert OximetryReading(now, spo2, 70, flags, Reason.STATUS_CHANGE) in events
        for reading in events:
            if reading.reason is Reason.DESATURATION:
                in_episode = True
            elif reading.reason is Reason.DESATURATION_END:
                in_episode = False
        if spo2 is not None and spo2 < 90 and not flags & UNUSABLE:
            assert in_episode
        previous = flags
