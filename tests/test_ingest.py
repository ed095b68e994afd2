"""Ingest: group commit, durability before confirmation, retries that never skip a reading."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519, x25519
from structlog.testing import capture_logs

from buffer.capacity import CapacityPolicy
from buffer.outbox import ChainHead, NewRecord, Outbox
from gateway import fhir, wire
from gateway.daemon import pump
from gateway.dbthread import DatabaseThread
from gateway.errors import StoreError
from gateway.fakes import FakeDriver
from gateway.gaps import UnusableReading
from gateway.ingest import IngestWriter, Lane
from gateway.provider import fhir_read
from gateway.provider.verifier import Verifier
from gateway.sealing import RecordSealer
from tests.factories import make_gateway_info, make_measurement

SIGNING = ed25519.Ed25519PrivateKey.generate()
PROVIDER = x25519.X25519PrivateKey.generate()
GW = make_gateway_info()


class FlakyOutbox(Outbox):
    """A real outbox whose first ``failures`` commits fail like a full disk would."""

    def __init__(self, path: Path, failures: int) -> None:
        super().__init__(path)
        self.failures = failures
        self.attempts = 0

    def append(self, records: Sequence[NewRecord], new_head: ChainHead) -> None:
        self.attempts += 1
        if self.failures > 0:
            self.failures -= 1
            raise StoreError("database or disk is full")
        super().append(records, new_head)


def make_writer(outbox: Outbox, db: DatabaseThread) -> IngestWriter:
    sealer = RecordSealer(GW.gateway_id, SIGNING, PROVIDER.public_key())
    return IngestWriter(outbox, sealer, GW, db, window_s=0.01, retry_initial_s=0.01)


def open_all(outbox: Outbox) -> Verifier:
    verifier = Verifier(PROVIDER, {GW.gateway_id: SIGNING.public_key()})
    for rec in outbox.lease(10_000, 10**9):
        verifier.accept_record(rec.record)
    return verifier


async def test_readings_in_one_window_share_one_record(tmp_path: Path) -> None:
    db = DatabaseThread()
    outbox = await db.run(Outbox, tmp_path / "o.db")
    writer = make_writer(outbox, db)
    task = asyncio.create_task(writer.run())
    readings = [make_measurement(device_record_id=i) for i in range(1, 21)]
    futures = [await writer.enqueue([m]) for m in readings]
    seqs = await asyncio.gather(*futures)
    assert set(seqs) == {1}
    assert writer.committed_readings == 20
    verifier = await db.run(open_all, outbox)
    assert verifier.readings_ok == 20
    task.cancel()
    db.shutdown()


async def test_lanes_get_separate_records_and_payload_records_stand_alone(tmp_path: Path) -> None:
    db = DatabaseThread()
    outbox = await db.run(Outbox, tmp_path / "o.db")
    writer = make_writer(outbox, db)
    task = asyncio.create_task(writer.run())
    f1 = await writer.enqueue([make_measurement()], Lane.SPOT)
    f2 = await writer.enqueue([make_measurement(device_record_id=7)], Lane.STREAM)
    s3 = asyncio.create_task(
        writer.submit_payload(wire.RecordKind.HEALTH, {"outbox_depth": 2}, Lane.HEALTH)
    )
    seqs = [await f1, await f2, await s3]
    assert sorted(seqs) == [1, 2, 3]
    leases = [await db.run(outbox.lease, 100, 10**9) for _ in range(3)]
    assert [[(r.lane, r.seq) for r in lease] for lease in leases] == [
        [(1, seqs[0])],
        [(2, seqs[1])],
        [(3, seqs[2])],
    ]
    task.cancel()
    db.shutdown()


async def test_a_failed_commit_is_retried_and_nothing_is_confirmed_before_it_is_durable(
    tmp_path: Path,
) -> None:
    db = DatabaseThread()
    outbox = await db.run(FlakyOutbox, tmp_path / "o.db", 3)
    writer = make_writer(outbox, db)
    task = asyncio.create_task(writer.run())
    driver = FakeDriver([make_measurement(device_record_id=i) for i in range(1, 6)])
    pumping = asyncio.create_task(pump(driver, writer))
    await asyncio.sleep(0.02)
    assert driver.confirmed == []  # the disk is "full": nothing may be confirmed yet
    await asyncio.wait_for(pumping, 5)
    assert [m.device_record_id for m in driver.confirmed] == [1, 2, 3, 4, 5]
    assert outbox.attempts >= 4
    assert writer.last_error is None
    verifier = await db.run(open_all, outbox)
    assert verifier.readings_ok == 5
    assert verifier.chain.missing(GW.gateway_id, 1) == []
    task.cancel()
    db.shutdown()


async def test_chain_continues_across_writer_restarts(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    for round_ in range(3):
        db = DatabaseThread()
        outbox = await db.run(Outbox, path)
        writer = make_writer(outbox, db)
        task = asyncio.create_task(writer.run())
        await writer.submit([make_measurement(device_record_id=round_)])
        task.cancel()
        await db.run(outbox.close)
        db.shutdown()
    db = DatabaseThread()
    outbox = await db.run(Outbox, path)
    verifier = await db.run(open_all, outbox)
    assert verifier.records_ok == 3
    assert verifier.chain.breaks == []
    assert verifier.chain.missing(GW.gateway_id, 1) == []
    db.shutdown()


def test_bundle_of_many_readings_maps_back_exactly() -> None:
    readings = [make_measurement(device_record_id=i) for i in range(1, 4)]
    assert fhir_read.measurements_from_bundle(fhir.bundle(readings, GW)) == readings


def _unusable(raw: bytes = b"R|1|^^^XYZ|7.7|mg/L||N||F") -> UnusableReading:
    return UnusableReading(
        device="serial:AS0012345",
        source="serial.astm.crp",
        error="test code not in the analyser test table",
        received_at=datetime(2024, 3, 1, 10, 15, tzinfo=UTC),
        raw=raw,
        fields=(("test", "XYZ"), ("record_type", "R")),
    )


async def test_an_unusable_reading_becomes_a_durable_sealed_gap_record(tmp_path: Path) -> None:
    """report_unusable returns only once the gap is committed; the provider opens it exactly."""
    db = DatabaseThread()
    outbox = await db.run(Outbox, tmp_path / "o.db")
    writer = make_writer(outbox, db)
    task = asyncio.create_task(writer.run())
    with capture_logs() as logs:
        assert await writer.report_unusable(_unusable()) is True
    assert writer.unusable_readings == 1
    (rec,) = await db.run(outbox.lease, 100, 10**9)
    assert rec.lane == Lane.ALARM
    opened = Verifier(PROVIDER, {GW.gateway_id: SIGNING.public_key()}).accept_record(rec.record)
    assert opened.header.kind is wire.RecordKind.GAP
    (entry,) = opened.body["refused"]
    assert opened.body["type"] == "gap"
    assert entry == {
        "device": "serial:AS0012345",
        "reason": "unusable-result",
        "lane": 1,
        "readings": 1,
        "first": "2024-03-01T10:15:00+00:00",
        "last": "2024-03-01T10:15:00+00:00",
        "source": "serial.astm.crp",
        "error": "test code not in the analyser test table",
        "details": {"test": "XYZ", "record_type": "R"},
        "raw_record": base64.b64encode(b"R|1|^^^XYZ|7.7|mg/L||N||F").decode(),
    }
    assert [e["event"] for e in logs] == ["outbox.committed", "outbox.unusable_recorded"]
    assert "7.7" not in repr(logs)  # the value travels sealed, never in a log line
    task.cancel()
    db.shutdown()


async def test_an_unusable_reading_is_refused_when_even_the_gap_reserve_is_full(
    tmp_path: Path,
) -> None:
    db = DatabaseThread()
    outbox = await db.run(Outbox, tmp_path / "o.db")
    sealer = RecordSealer(GW.gateway_id, SIGNING, PROVIDER.public_key())
    writer = IngestWriter(outbox, sealer, GW, db, window_s=0.0, policy=CapacityPolicy(1))
    await db.run(
        outbox.append, [NewRecord(1, 1, 1, 1, 1000, b"x" * 64)], ChainHead(1, 1, bytes(32))
    )
    task = asyncio.create_task(writer.run())
    assert await writer.report_unusable(_unusable()) is False
    assert writer.unusable_readings == 0
    assert (await db.run(outbox.stats)).depth == 1  # nothing added
    task.cancel()
    db.shutdown()
