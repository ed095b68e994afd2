"""Ingest: group commit, durability before confirmation, retries that never skip a reading."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519, x25519
from structlog.testing import capture_logs

from buffer.capacity import CapacityPolicy
from buffer.outbox import ChainHead, NewRecord, Outbox
from gateway.errors import StoreError
from gateway.fhir import observation as fhir
from gateway.gaps import UnusableReading
from gateway.model import Measurement
from gateway.pipeline.dbthread import DatabaseThread
from gateway.pipeline.fakes import FakeDriver
from gateway.pipeline.ingest import IngestWriter, Lane
from gateway.pipeline.pump import pump
from gateway.seal import wire
from gateway.seal.sealing import RecordSealer
from provider import fhir_read
from provider.verifier import Verifier
from tests.factories import RECEIVED_AT, make_gateway_info, make_measurement

SIGNING = ed25519.Ed25519PrivateKey.generate()
PROVIDER = x25519.X25519PrivateKey.generate()
GW = make_gateway_info()


class FlakyOutbox(Outbox):
    """A real outbox whose first ``failures`` commits fail like a full disk would."""

    def __init__(self, path: Path, failures: int) -> None:
        super().__init__(path)
        self.failures = failures
        self.attempts = 0

    def append(
        self, records: Sequence[NewRecord], new_head: ChainHead, *, close_stream_chunk: bool = False
    ) -> None:
        self.attempts += 1
        if self.failures > 0:
            self.failures -= 1
            raise StoreError("database or disk is full")
        super().append(records, new_head, close_stream_chunk=close_stream_chunk)


def make_writer(outbox: Outbox, db: DatabaseThread, chunk_s: float = 0.0) -> IngestWriter:
    sealer = RecordSealer(GW.gateway_id, SIGNING, PROVIDER.public_key())
    return IngestWriter(
        outbox, sealer, GW, db, window_s=0.01, retry_initial_s=0.01, stream_chunk_s=chunk_s
    )


def open_all(outbox: Outbox) -> Verifier:
    verifier = Verifier(PROVIDER, {GW.gateway_id: SIGNING.public_key()})
    while batch := outbox.lease(10_000, 10**9):  # one lane per lease
        for rec in batch:
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


# -- continuous streams sealed in chunks ----------------------------------------------------------


def stream_reading(i: int, at_s: float = 0.0) -> Measurement:
    return make_measurement(
        device_record_id=i, received_at=RECEIVED_AT + timedelta(seconds=at_s or i * 0.01)
    )


async def test_stream_readings_share_a_chunk_while_spot_readings_go_at_once(
    tmp_path: Path,
) -> None:
    db = DatabaseThread()
    outbox = await db.run(Outbox, tmp_path / "o.db")
    writer = make_writer(outbox, db, chunk_s=0.5)
    task = asyncio.create_task(writer.run())
    stream = []
    for i in range(1, 11):
        stream.append(await writer.enqueue([stream_reading(i)], Lane.STREAM))
        await asyncio.sleep(0.02)
    assert await db.run(outbox.stream_chunk_opened_ms) is not None  # durable mark while open
    spot = await writer.submit([make_measurement(device_record_id=99)], Lane.SPOT)
    assert not any(f.done() for f in stream)  # held in the chunk, not yet durable
    seqs = await asyncio.wait_for(asyncio.gather(*stream), 2.0)
    assert set(seqs) == {spot + 1}  # one record for the ten stream readings, after the spot one
    assert await db.run(outbox.stream_chunk_opened_ms) is None  # cleared with the chunk
    verifier = await db.run(open_all, outbox)
    assert verifier.readings_ok == 11
    task.cancel()
    db.shutdown()


async def test_a_chunk_closes_when_it_spans_the_chunk_time(tmp_path: Path) -> None:
    db = DatabaseThread()
    outbox = await db.run(Outbox, tmp_path / "o.db")
    writer = make_writer(outbox, db, chunk_s=30.0)
    task = asyncio.create_task(writer.run())
    # 95 readings one second apart in reception time, handed over at once (a backlog).
    futures = [await writer.enqueue([stream_reading(i, at_s=i)], Lane.STREAM) for i in range(95)]
    await asyncio.sleep(0.3)
    done = [f.result() for f in futures if f.done()]
    assert sorted(set(done)) == [1, 2, 3]  # readings 0-29, 30-59, 60-89 (each spans 29 s)
    assert len(done) == 90
    await asyncio.wait_for(writer.drain(), 2.0)  # shutdown seals the open chunk at once
    assert {f.result() for f in futures[90:]} == {4}
    task.cancel()
    db.shutdown()


async def test_unclean_stop_with_an_open_chunk_is_reported_as_an_event(tmp_path: Path) -> None:
    db = DatabaseThread()
    outbox = await db.run(Outbox, tmp_path / "o.db")
    writer = make_writer(outbox, db, chunk_s=60.0)
    task = asyncio.create_task(writer.run())
    held = await writer.enqueue([stream_reading(1)], Lane.STREAM)
    await asyncio.sleep(0.1)
    assert await db.run(outbox.stream_chunk_opened_ms) is not None
    task.cancel()  # the process dies: the chunk in memory is gone
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert not held.done()
    await db.run(outbox.close)

    again = await db.run(Outbox, tmp_path / "o.db")
    writer = make_writer(again, db, chunk_s=60.0)
    task = asyncio.create_task(writer.run())
    for _ in range(50):
        if writer.lost_stream_chunks:
            break
        await asyncio.sleep(0.02)
    assert writer.lost_stream_chunks == 1
    assert await db.run(again.stream_chunk_opened_ms) is None
    (rec,) = await db.run(again.lease, 10, 10**6)
    assert rec.lane == Lane.ALARM
    verifier = Verifier(PROVIDER, {GW.gateway_id: SIGNING.public_key()})
    body = verifier.accept_record(rec.record).body
    assert body["event"] == "stream-chunk-lost"
    assert body["reason"] == "unclean-stop"
    task.cancel()
    db.shutdown()
