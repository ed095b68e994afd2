"""The BLE intake (drivers/ble/intake.py) is the border between notified bytes and the model:
any payload on any characteristic, in any order, is a measurement or a counted refusal, never an
exception; the CGM records held during a RACP transfer stay under their cap."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.ble import intake as intake_mod
from drivers.ble.cgm import CGM_MEASUREMENT_UUID
from drivers.ble.clock_sync import ClockSync
from drivers.ble.glucose import GLUCOSE_MEASUREMENT_UUID
from drivers.ble.glucose_context import GLUCOSE_CONTEXT_UUID
from drivers.ble.intake import Intake, LinkState
from drivers.ble.profiles import PROFILES
from drivers.ble.racp import RACP_UUID
from gateway.model import DeviceId, DeviceIdKind

UUIDS = sorted(
    {p.measurement for p in PROFILES.values()}
    | {u for p in PROFILES.values() for u in p.optional}
    | {GLUCOSE_MEASUREMENT_UUID, GLUCOSE_CONTEXT_UUID, RACP_UUID, CGM_MEASUREMENT_UUID}
)
DEVICE = DeviceId(DeviceIdKind.BTMAC, "A4:C1:38:15:20:01")
AT = datetime(2026, 1, 1, tzinfo=UTC)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(sorted(PROFILES)),
    st.lists(st.tuples(st.sampled_from(UUIDS), st.binary(max_size=40)), max_size=30),
    st.booleans(),
)
def test_any_payloads_become_measurements_or_counted_refusals(
    profile: str, payloads: list[tuple[int, bytes]], racp_busy: bool
) -> None:
    intake = Intake(DEVICE, PROFILES[profile], state=None, seen=None)
    link = LinkState(ClockSync(before=timedelta(0)), racp_busy=racp_busy)
    handed = 0
    for uuid16, payload in payloads:
        out = intake.handle(link, uuid16, payload, AT)
        assert all(m.device == DEVICE for m in out)
        handed += len(out)
    assert intake.malformed >= 0
    assert len(link.held) <= intake_mod.MAX_HELD
    assert intake.readings == handed


def test_held_cgm_records_past_the_cap_end_the_connection_instead_of_growing() -> None:
    intake = Intake(DEVICE, PROFILES["cgm"], state=None, seen=None)
    link = LinkState(ClockSync(before=timedelta(0)), racp_busy=True)
    for _ in range(intake_mod.MAX_HELD + 5):
        intake.handle(link, CGM_MEASUREMENT_UUID, b"\x06\x00\x64\x00\x00\x00", AT)
    assert len(link.held) == intake_mod.MAX_HELD
    assert link.overflow == "held-records-cap"
    assert intake.malformed >= 5
