"""Serial devices end to end: pty simulators -> real pyserial in gatewayd -> broker -> verifier."""

from __future__ import annotations

import base64
import collections
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.fhir import observation as fhir
from gateway.model import Measurement
from rig.serial.process import SimProcess
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
        # Each serial device names its port, so a technician can tell which cable is which.
        ports = {d["driver"]: d["port"] for d in status["devices"]}
        assert ports == {
            "serial.astm.crp": str(dev / "crp"),
            "serial.nonin.spo2": str(dev / "spo2"),
            "serial.modem.wan": str(dev / "modem"),
        }
        summary = rig.verifier.summary()
        assert summary["missing"] == 0
        assert summary["failures"] == {}
        assert rig.stop_daemon() == 0, rig.log_text()[-2000:]
    finally:
        for sim in sims:
            sim.stop()


CRP = "47.31"  # marker values: searched for in the daemon's log (debug level) afterwards
UNUSABLE = "83.97"


def test_analyser_killed_mid_transfer_twice_result_delivered_once_and_unusable_result_gapped(
    rig: Rig, tmp_path: Path
) -> None:
    """kill -9 of the analyser (1) after the gateway stored the R record but before the analyser
    heard its ACK, (2) halfway through the resend (H, P, O only); the third power-on delivers.
    The provider holds the result under one identifier (duplicates allowed, loss not), nothing
    from the half transfer, and a later result with a unit the mapping refuses arrives as an
    ``unusable-result`` gap record; the daemon runs on throughout."""
    link = tmp_path / "dev" / "crp"
    link.parent.mkdir()
    # A short reply timer: an ENQ sent while the gateway has the port closed goes unanswered.
    args = ["--crp", CRP, "--completed", "20261123101500", "--retry-after", "0.5"]
    args += ["--reply-timeout", "2"]
    rig.start_provider()
    config = rig.write_config([])
    config.write_text(
        config.read_text() + f'\n[[serial_devices]]\nkind = "astm"\nname = "crp"\npath = "{link}"\n'
    )

    def crp() -> list[Measurement]:
        return [m for _, m in rig.received.readings if m.source.startswith("serial.astm")]

    sims = [SimProcess("astm", link, [*args, "--hang-after-frames", "4"]).start()]
    try:
        rig.start_daemon(config)
        # (1) H, P, O, R sent; the analyser goes deaf: the gateway stores R, its ACK is unheard.
        wait_for(lambda: len(crp()) == 1, 60, "the result stored before the analyser's kill")
        assert sims[0].wait_for(lambda e: e.get("record_type") == "R", 0.0) is None
        sims[0].kill()
        # (2) Powered on again, it dies after H, P, O of the resend: half a message, no result.
        sims.append(SimProcess("astm", link, [*args, "--hang-after-frames", "3"]).start())
        assert sims[1].wait_for(lambda e: e.get("record_type") == "P", 30) is not None
        time.sleep(0.5)  # the O frame reaches the gateway; the analyser never hears its ACK
        sims[1].kill()
        # (3) Powered on again: the whole message goes through and is confirmed.
        sims.append(SimProcess("astm", link, args).start())
        assert sims[2].wait_for(lambda e: e.get("event") == "delivered", 30) is not None
        wait_for(lambda: len(crp()) == 2, 30, "the resent result at the provider")
        sims[2].command(f"crp {UNUSABLE} furlong/fortnight")
        assert sims[2].wait_for(lambda e: e.get("event") == "delivered" and e["message"] == 2, 30)
        wait_for(lambda: bool(rig.received.gaps), 30, "the unusable-result gap record")

        readings = crp()
        identifiers = {fhir.observation_identifier(m, "ep-it") for m in readings}
        assert len(identifiers) == 1  # after de-duplication: exactly one result
        assert {(m.value, m.unit, m.device.value) for m in readings} == {
            (Decimal(CRP), "mg/L", "AS0012345")
        }
        (gap,) = rig.received.gaps
        refused = gap["refused"]
        assert isinstance(refused, list)
        (entry,) = refused
        assert (entry["reason"], entry["readings"], entry["error"]) == (
            "unusable-result",
            1,
            "unit not admitted for this test",
        )
        assert entry["details"]["unit"] == "furlong/fortnight"
        assert UNUSABLE in base64.b64decode(entry["raw_record"]).decode()
        assert rig.daemon is not None
        assert rig.daemon.poll() is None  # the daemon kept running through both kills
        status = rig.status(config)
        assert status["ingest"]["unusable_readings"] == 1
        summary = rig.verifier.summary()
        assert summary["missing"] == 0
        assert summary["failures"] == {}
        assert rig.stop_daemon() == 0, rig.log_text()[-2000:]
        log = rig.log_text()
        assert log.count('"serial.port.lost"') >= 2  # both kills were seen as losses
        assert CRP not in log
        assert UNUSABLE not in log
    finally:
        for sim in sims:
            sim.kill()
