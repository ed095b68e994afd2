"""kill -9 at random moments during ingest and upload: nothing confirmed to a device is lost.

The simulated devices run in stored-records mode: like a RACP meter they keep every reading
until the gateway confirms it, and the gateway confirms only after its outbox commit is durable.
So after any number of crashes, every reading a device forgot must have reached the provider.
Bounded: CRASH_KILLS (default 100) cycles of a fraction of a second to 1.5 s each, loopback only.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rig.devices import expected_reading
from tests.integration.rig import Rig, rig_fixture, wait_for

pytestmark = pytest.mark.integration

DEVICES = (("thermometer", "C0:FF:EE:00:00:11", 0.05), ("blood-pressure", "C0:FF:EE:00:00:12", 0.2))


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    yield from rig_fixture(tmp_path)


def integrity(db: Path) -> str:
    conn = sqlite3.connect(db, timeout=10)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def confirmed(memory: Path) -> int:
    return int(json.loads(memory.read_text())["confirmed"])


def test_hundred_kill_9_lose_nothing_confirmed(rig: Rig, tmp_path: Path) -> None:
    kills = int(os.environ.get("CRASH_KILLS", "100"))
    seed = int(os.environ.get("CRASH_SEED", str(time.time_ns() % 100_000)))
    rng = random.Random(seed)
    memories = {addr: tmp_path / f"device-{addr.replace(':', '')}.json" for _, addr, _ in DEVICES}
    rig.start_provider()
    sims = "".join(
        f'\n[[sim_devices]]\nkind = "{kind}"\naddress = "{addr}"\ninterval_s = {interval}\n'
        f'memory = "{memories[addr]}"\n'
        for kind, addr, interval in DEVICES
    )
    config = rig.write_config([])
    config.write_text(config.read_text() + sims)
    db = rig.state_dir / "outbox.db"
    started = time.monotonic()
    checks = 0
    for i in range(kills):
        rig.start_daemon(config)
        time.sleep(rng.uniform(0.2, 1.5))
        assert rig.stop_daemon(signal.SIGKILL) == -signal.SIGKILL
        if db.exists():
            assert integrity(db) == "ok", f"after kill {i + 1} (seed {seed})"
            checks += 1
        if i % 10 == 9:
            rig.broker.stop()  # the provider's broker goes down now and then, too
            rig.broker.start()
    crash_s = time.monotonic() - started

    # Last start: let the devices' backlog drain and the outbox empty, then stop cleanly.
    rig.start_daemon(config)
    time.sleep(2.0)
    wait_for(lambda: rig.outbox_depth() == 0, 90, "the outbox to drain after the last crash")
    assert rig.stop_daemon() == 0, rig.log_text()[-3000:]
    time.sleep(1.0)

    received: dict[str, set[int]] = {addr: set() for addr in memories}
    for _, m in rig.received.readings:
        received[m.device.value].add(m.device_record_id or -1)
        kind = next(k for k, a, _ in DEVICES if a == m.device.value)
        exp = expected_reading(kind, m.device.value, m.device_record_id or -1)
        assert (m.value, m.components) == (exp.value, exp.components)
    summary = rig.verifier.summary()
    print(
        f"\ncrash test: {kills} x kill -9 in {crash_s:.0f} s (seed {seed}), "
        f"{checks} integrity checks ok, readings {sum(map(len, received.values()))}, "
        f"(re-sent readings {len(rig.received.readings) - sum(map(len, received.values()))}), "
        f"records {summary['records']}, duplicate records {summary['duplicates']}, "
        f"missing {summary['missing']}"
    )
    for addr, memory in memories.items():
        forgotten = confirmed(memory)  # the device no longer holds readings 1..forgotten
        got = received[addr]
        assert forgotten > 0
        assert set(range(1, forgotten + 1)) <= got, (
            f"{addr}: lost {sorted(set(range(1, forgotten + 1)) - got)[:10]} (seed {seed})"
        )
        assert got == set(range(1, max(got) + 1)), f"{addr}: gaps (seed {seed})"
    assert summary["missing"] == 0, summary
    assert summary["chain_breaks"] == 0, summary
    assert summary["signature_failures"] == 0
    assert summary["failures"] == {}
