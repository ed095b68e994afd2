"""Serial devices end to end: pty simulators -> real pyserial in gatewayd -> broker -> verifier."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from drivers.serial.sim.process import SimProcess
from tests.integration.rig import Rig, rig_fixture, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    yield from rig_fixture(tmp_path)


def test_crp_result_oximetry_and_modem_status_through_the_daemon(rig: Rig, tmp_path: Path) -> None:
    dev = tmp_path / "dev"
    dev.mkdir()
    sims = [
        SimProcess("astm", dev / "crp", ["--crp", "12.5", "--reply-timeout", "15"]).start(),
        SimProcess("nonin", dev / "spo2", ["--scenario"]).start(),
        SimProcess("modem", dev / "modem").start(),
    ]
    try:
        rig.start_provider()
        config = rig.write_config([])
        config.write_text(
            config.read_text()
            + "\n[outbox]\nstream_chunk_s = 5\n"
            + f'\n[[serial_devices]]\nkind = "astm"\nname = "crp"\npath = "{dev / "crp"}"\n'
            f'\n[[serial_devices]]\nkind = "nonin"\nname = "spo2"\npath = "{dev / "spo2"}"\n'
            'serial = "501234567"\ninterval_s = 2\n'
            f'\n[[serial_devices]]\nkind = "modem"\nname = "wan"\npath = "{dev / "modem"}"\n'
            "poll_interval_s = 1\n"
        )
        rig.start_daemon(config)

        def crp() -> list[Decimal | None]:
            return [m.value for _, m in rig.received.readings if m.source.startswith("serial.astm")]

        wait_for(lambda: bool(crp()), 60, "the CRP result")
        assert crp()[0] == Decimal("12.5")
        (crp_reading,) = [m for _, m in rig.received.readings if m.source.startswith("serial.astm")]
        assert crp_reading.unit == "mg/L"
        assert crp_reading.device.value == "AS0012345"  # the serial number from the ASTM header
        analyser = sims[0]
        # The analyser was told "accepted" only after the gateway's commit: it got its ACK.
        assert analyser.wait_for(lambda e: e.get("event") == "delivered", 20) is not None

        def oximetry_records() -> collections.Counter[int]:
            return collections.Counter(
                seq for seq, m in rig.received.readings if m.device.value == "501234567"
            )

        # A reading every 2 s sealed in 5-s chunks: several readings share one record.
        wait_for(lambda: max(oximetry_records().values(), default=0) >= 2, 60, "an oximetry chunk")
        status = rig.status(config)
        wan = status["links"]["wan"]
        assert wan["state"] == "answering", wan
        assert wan["registered"] is True
        summary = rig.verifier.summary()
        assert summary["missing"] == 0
        assert summary["failures"] == {}
        assert rig.stop_daemon() == 0, rig.log_text()[-2000:]
    finally:
        for sim in sims:
            sim.stop()
