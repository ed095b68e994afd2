"""The GHS lane of ``Intake`` without a radio: segments in, Measurements / unusable readings out,
and the RACP cursor that passes a stored record only once everything it carried is durable."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.ble.clock_sync import ClockSync
from drivers.ble.ghs import (
    LIVE_HEALTH_OBSERVATIONS_UUID,
    STORED_HEALTH_OBSERVATIONS_UUID,
    HealthObservation,
)
from drivers.ble.ghs_segment import segment_body
from drivers.ble.ghs_values import FLAG_TYPE, NumericValue, Observation, ObservationHeader
from drivers.ble.intake import Intake, LinkState, RacpState
from drivers.ble.profiles import PROFILES
from gateway.model import DeviceId, DeviceIdKind, Measurement

DEVICE = DeviceId(DeviceIdKind.BTMAC, "A4:C1:38:00:00:01")
AT = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)
FEV1 = 152586
LITRE, UNMAPPED = 1600, 9


def intake(state: Path | None = None) -> Intake:
    return Intake(DEVICE, PROFILES["generic-health-sensor"],
                  state=None if state is None else RacpState(state, -1), seen=None)


def stored(record: int, unit: int = LITRE) -> list[bytes]:
    body = HealthObservation(Observation(ObservationHeader(FLAG_TYPE, FEV1),
                                         NumericValue(unit, Decimal("3.10"))), record)
    return segment_body(body.encode_body(), 7)


def feed(i: Intake, link: LinkState, payloads: list[bytes]) -> list[Measurement]:
    return [m for p in payloads for m in i.handle(link, STORED_HEALTH_OBSERVATIONS_UUID, p, AT)]


@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=40)), max_size=30))
@settings(max_examples=300)
def test_any_bytes_never_raise_and_every_body_is_accounted(
        values: list[tuple[bool, bytes]]) -> None:
    """Devices are untrusted: whatever arrives, ``handle`` returns, and what could not be used
    is counted as malformed and queued for a gap record (bounded)."""
    i, link = intake(), LinkState(ClockSync(None))
    for is_stored, payload in values:
        uuid16 = STORED_HEALTH_OBSERVATIONS_UUID if is_stored else LIVE_HEALTH_OBSERVATIONS_UUID
        i.handle(link, uuid16, payload, AT)
    assert len(i.take_unusable()) == i.unusable_count >= i.malformed


async def test_a_record_with_nothing_usable_is_passed_once_its_gap_is_durable(
        tmp_path: Path) -> None:
    state = tmp_path / "ghs.json"
    i, link = intake(state), LinkState(ClockSync(None))
    first = feed(i, link, stored(5))
    assert feed(i, link, stored(6, UNMAPPED)) == []  # unit code 9: no UCUM mapping
    (gap,) = i.take_unusable()
    assert "unit code 9" in gap.error
    await i.unusable_recorded(durable=True)
    assert not state.exists()  # record 5 still waits for its commit
    await i.committed(first)
    assert json.loads(state.read_text()) == {"last_sequence": 6}


async def test_a_refused_gap_record_leaves_the_record_to_be_fetched_again(tmp_path: Path) -> None:
    state = tmp_path / "ghs.json"
    i, link = intake(state), LinkState(ClockSync(None))
    feed(i, link, stored(1, UNMAPPED))
    i.take_unusable()
    await i.unusable_recorded(durable=False)
    assert not state.exists()
    again = LinkState(ClockSync(None))  # the next connection delivers it again
    assert feed(i, again, stored(1, UNMAPPED)) == []
    assert len(i.take_unusable()) == 1  # reported again, not skipped as "handed"
