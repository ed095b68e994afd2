"""Alarms never wait (issue 17, item 1): a Nonin oximeter on a pty, real pyserial in gatewayd,
the real broker and verifier. The stream is sealed in 30-s chunks; a desaturation must not be.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from buffer.staging import staged_rows_on_disk, staging_path
from gateway.pipeline.ingest import Lane
from gateway.seal import wire
from rig.serial.oximeter import NoninSim
from tests.integration.rig import Rig, rig_fixture, wait_for

pytestmark = pytest.mark.integration

SERIAL = "501234567"
CHUNK_S = 30


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    yield from rig_fixture(tmp_path)


def _desaturations(rig: Rig) -> list[tuple[int, str]]:
    return [
        (seq, m.supplemental)
        for seq, m in rig.received.readings
        if m.device.value == SERIAL and m.supplemental.startswith("desaturation")
    ]


def _chunk_open(rig: Rig) -> bool:
    """An open stream chunk with interval readings staged (gateway/pipeline/ingest.py)."""
    return staged_rows_on_disk(staging_path(rig.state_dir / "outbox.db")) > 0


def _intervals(rig: Rig) -> int:
    return sum(
        m.device.value == SERIAL and m.supplemental == "interval" for _, m in rig.received.readings
    )


def test_a_desaturation_goes_out_at_once_and_survives_a_kill_during_the_open_chunk(
    rig: Rig, tmp_path: Path
) -> None:
    """The desaturation reaches the provider on the ALARM lane, each record alone, while the
    stream chunk that holds the interval readings is still open. gatewayd is then killed (-9)
    in the middle of the desaturation: after the restart the alarm is there exactly once."""
    link = tmp_path / "spo2"
    with NoninSim(link) as oximeter:
        rig.start_provider()
        config = rig.write_config([])
        config.write_text(
            config.read_text()
            + f"\n[outbox]\nstream_chunk_s = {CHUNK_S}\n"
            + f'\n[[serial_devices]]\nkind = "nonin"\nname = "spo2"\npath = "{link}"\n'
            f'serial = "{SERIAL}"\ninterval_s = 2\n'
        )
        rig.start_daemon(config)

        def streaming() -> bool:
            try:
                devices = rig.status(config).get("devices", [])
            except ValueError:  # the daemon's control socket is not up yet
                return False
            return any(d.get("state") == "streaming" for d in devices)

        wait_for(streaming, 60, "the oximeter streaming")
        wait_for(lambda: _chunk_open(rig), 60, "interval readings held in an open chunk")
        oximeter.set(spo2_pct=80, pulse_bpm=118)  # onset
        wait_for(lambda: bool(_desaturations(rig)), 60, "the desaturation at the provider")
        # It did not wait for the stream: no interval reading has left its open chunk yet.
        assert _intervals(rig) == 0
        seqs = {seq for seq, _ in _desaturations(rig)}
        assert {rig.received.lanes[s] for s in seqs} == {int(Lane.ALARM)}
        for seq in seqs:  # sealed alone: SpO2 and pulse of the event, nothing else
            assert all(m.supplemental.startswith("desaturation")
                       for s, m in rig.received.readings if s == seq)

        onset = [m for _, m in rig.received.readings
                 if m.device.value == SERIAL and m.supplemental == "desaturation"]
        assert len(onset) == 2  # SpO2 and pulse of the event

        # kill -9 while the desaturation lasts and the chunk is open, then start again: the
        # alarm was already durable and acknowledged, so nothing of it depended on the chunk.
        rig.stop_daemon(9)
        rig.start_daemon(config)
        wait_for(streaming, 60, "the oximeter streaming after the restart")
        oximeter.set(spo2_pct=97, pulse_bpm=80)  # recovery: an alarm too (the all-clear)
        wait_for(
            lambda: any(s == "desaturation-end" for _, s in _desaturations(rig)),
            60,
            "the end of the desaturation at the provider",
        )
        # The onset before the kill: delivered, and once (a duplicate would be a second entry).
        assert all(sum(m == o for _, m in rig.received.readings) == 1 for o in onset)
        # The kill cost the open chunk nothing: its staged interval readings arrive (in a
        # staged-chunk record), and nothing is reported lost.
        wait_for(
            lambda: wire.RecordKind.STAGED_CHUNK in rig.received.kinds.values(),
            60,
            "the staged interval readings",
        )
        assert _intervals(rig) > 0
        assert not any(e.get("event") == "stream-chunk-lost" for e in rig.received.events)
        summary = rig.verifier.summary()
        assert summary["failures"] == {}
        assert rig.stop_daemon() == 0, rig.log_text()[-2000:]
