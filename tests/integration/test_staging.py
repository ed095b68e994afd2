"""Staged, not held (issue 17, item 2): a Nonin oximeter on a pty, real pyserial in gatewayd,
the real broker and verifier. The stream is sealed in 30-s chunks; gatewayd is killed (-9) about
10 s into a chunk. Every interval reading the driver had confirmed before the kill (each one
staged on disk, encrypted) reaches the provider's verifier after the restart, and nothing is
reported lost. Before staging, those readings were lost and reported as ``stream-chunk-lost``.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from buffer.staging import staged_rows_on_disk, staging_path
from gateway.seal import wire
from rig.serial.oximeter import NoninSim
from tests.integration.rig import Rig, rig_fixture, wait_for

pytestmark = pytest.mark.integration

SERIAL = "501234567"
CHUNK_S = 30
INTERVAL_S = 1


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    yield from rig_fixture(tmp_path)


def _staged_rows(rig: Rig) -> int:
    """Rows in the staging files: readings confirmed to the driver, not yet in a sealed chunk."""
    return staged_rows_on_disk(staging_path(rig.state_dir / "outbox.db"))


def _intervals(rig: Rig, before: datetime | None = None) -> list[datetime]:
    return sorted(
        m.received_at
        for _, m in rig.received.readings
        if m.device.value == SERIAL
        and m.supplemental == "interval"
        and (before is None or m.received_at < before)
    )


def test_kill_9_ten_seconds_into_a_chunk_loses_no_confirmed_stream_reading(
    rig: Rig, tmp_path: Path
) -> None:
    link = tmp_path / "spo2"
    with NoninSim(link):
        rig.start_provider()
        config = rig.write_config([])
        config.write_text(
            config.read_text()
            + f"\n[outbox]\nstream_chunk_s = {CHUNK_S}\n"
            + f'\n[[serial_devices]]\nkind = "nonin"\nname = "spo2"\npath = "{link}"\n'
            f'serial = "{SERIAL}"\ninterval_s = {INTERVAL_S}\n'
        )
        rig.start_daemon(config)
        wait_for(lambda: _staged_rows(rig) > 0, 60, "the first staged stream reading")
        opened = time.monotonic()
        wait_for(lambda: time.monotonic() - opened >= 10, 15, "10 s into the chunk")
        staged = _staged_rows(rig)
        rig.stop_daemon(9)
        killed = datetime.now(UTC)
        # Still in the open chunk at the kill: nothing of it had been sealed or delivered.
        assert _intervals(rig) == []
        assert staged >= 10  # SpO2 and pulse every second for ~10 s

        rig.start_daemon(config)
        wait_for(
            lambda: len(_intervals(rig, killed)) >= staged,
            60,
            f"the {staged} staged readings at the provider",
        )
        before_kill = _intervals(rig, killed)
        # Nothing missing in the stretch before the kill: no hole in the series (each interval
        # brings an SpO2 and a pulse reading; the provider de-duplicates what came twice).
        gaps = [b - a for a, b in itertools.pairwise(before_kill)]
        assert max(gaps) <= timedelta(seconds=2.5 * INTERVAL_S), gaps
        assert wire.RecordKind.STAGED_CHUNK in rig.received.kinds.values()
        assert not any(e.get("event") == "stream-chunk-lost" for e in rig.received.events)
        summary = rig.verifier.summary()
        assert summary["failures"] == {}
        assert summary["missing"] == 0
        assert rig.stop_daemon() == 0, rig.log_text()[-2000:]
