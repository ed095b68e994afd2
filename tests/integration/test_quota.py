"""Disk quota: refuse the least urgent first, delete nothing, account for every refusal, recover."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from buffer.capacity import GAP_RESERVE_FRACTION
from tests.integration.rig import Rig, rig_fixture, wait_for

pytestmark = pytest.mark.integration

QUOTA = 16 * 1024
STORED = ("thermometer", "C0:FF:EE:00:00:21")  # keeps readings until confirmed
LIVE = ("pulse-oximeter", "C0:FF:EE:00:00:22")  # live only: refused readings are gone


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    yield from rig_fixture(tmp_path)


def last_refusal(rig: Rig) -> datetime:
    times = [
        datetime.fromisoformat(item["last"])
        for gap in rig.received.gaps
        for item in gap["refused"]  # type: ignore[attr-defined]
    ]
    return max(times, default=datetime.min.replace(tzinfo=UTC))


def last_live_arrival(rig: Rig) -> datetime:
    times = [m.received_at for _, m in rig.received.readings if m.device.value == LIVE[1]]
    return max(times, default=datetime.min.replace(tzinfo=UTC))


def test_quota_refuses_accounts_and_recovers(rig: Rig, tmp_path: Path) -> None:
    memory = tmp_path / "thermometer-memory.json"
    rig.broker.start()
    rig.broker.stop()  # the provider is unreachable: the outbox can only fill up
    config = rig.write_config([])
    config.write_text(
        config.read_text().replace("[uplink]", f"[outbox]\nquota_bytes = {QUOTA}\n\n[uplink]")
        + "\n[health]\ninterval_s = 2\n"
        f'\n[[sim_devices]]\nkind = "{STORED[0]}"\naddress = "{STORED[1]}"\ninterval_s = 0.02\n'
        f'memory = "{memory}"\n'
        f'\n[[sim_devices]]\nkind = "{LIVE[0]}"\naddress = "{LIVE[1]}"\ninterval_s = 0.05\n'
    )
    rig.start_daemon(config)
    wait_for(lambda: "outbox.quota_reached" in rig.log_text(), 60, "the quota to be reached")
    time.sleep(3.0)  # refusing for a while; a first (ongoing) gap record is sealed
    assert rig.daemon is not None
    assert rig.daemon.poll() is None, "the daemon must stay up when the disk quota is reached"
    held = rig.outbox_bytes()
    # The bound (buffer/capacity.py): readings up to the quota, gap records in the reserve above.
    assert held <= QUOTA * (1 + GAP_RESERVE_FRACTION), f"outbox holds {held} B, quota {QUOTA}"
    # The pumps stopped pulling on purpose: the watchdog sees paused loops, not stalled ones.
    loops = rig.status(config)["loops"]
    paused = {name for name, state in loops.items() if state["paused"] == "outbox quota reached"}
    assert paused, loops
    assert not any(state["stalled"] for state in loops.values()), loops

    rig.start_provider()  # space comes back as the provider acknowledges
    wait_for(lambda: "outbox.quota_recovered" in rig.log_text(), 60, "recovery")
    wait_for(lambda: any(not g["ongoing"] for g in rig.received.gaps), 30, "the final gap record")
    # Refusals can recur while the devices' backlog refills a 16 KiB outbox; stop only once live
    # readings taken after the last refusal have arrived, so every refused one lies below them.
    wait_for(lambda: last_live_arrival(rig) > last_refusal(rig), 30, "readings after the refusals")
    assert rig.stop_daemon() == 0, rig.log_text()[-2000:]
    time.sleep(0.5)

    refused: dict[str, int] = {}
    for gap in rig.received.gaps:
        for item in gap["refused"]:  # type: ignore[attr-defined]
            assert item["reason"] == "outbox-quota"
            refused[item["device"]] = refused.get(item["device"], 0) + item["readings"]
    got: dict[str, set[int]] = {}
    for _, m in rig.received.readings:
        got.setdefault(m.device.value, set()).add(m.device_record_id or -1)

    stored, live = got[STORED[1]], got[LIVE[1]]
    assert stored == set(range(1, max(stored) + 1)), "a device with memory loses nothing"
    confirmed = int(memory.read_text().split('"confirmed": ')[1].split("}")[0])
    assert set(range(1, confirmed + 1)) <= stored
    missing_live = set(range(1, max(live) + 1)) - live
    assert missing_live, "the live device must have had readings refused"
    assert refused[f"btmac:{LIVE[1]}"] == len(missing_live), "every lost reading is accounted for"
    summary = rig.verifier.summary()
    assert summary["missing"] == 0, summary
    assert summary["failures"] == {}
    print(
        f"\nquota test: quota {QUOTA} B, held at most {held} B while refusing, "
        f"refused {refused}, live readings lost and reported {len(missing_live)}"
    )
