"""The outbox quota is a hard bound: records already queued or in flight are checked again inside
the commit, so a burst (a loaded machine, many devices at once) cannot overshoot it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from buffer.capacity import GAP_RESERVE_FRACTION, CapacityPolicy
from buffer.outbox import Outbox
from gateway.model import Measurement
from gateway.pipeline.dbthread import DatabaseThread
from gateway.pipeline.fakes import FakeDriver
from gateway.pipeline.ingest import IngestWriter, Lane, QuotaExceededError
from gateway.pipeline.pump import pump
from gateway.seal import wire
from gateway.seal.sealing import RecordSealer
from provider.verifier import Verifier
from tests.factories import make_measurement
from tests.test_ingest import GW, PROVIDER, SIGNING, open_all

QUOTA = 16 * 1024


def _writer(outbox: Outbox, db: DatabaseThread) -> IngestWriter:
    sealer = RecordSealer(GW.gateway_id, SIGNING, PROVIDER.public_key())
    return IngestWriter(
        outbox, sealer, GW, db, window_s=0.05, policy=CapacityPolicy(QUOTA), retry_initial_s=0.01
    )


def test_the_policy_says_what_fits_and_only_accounting_records_use_the_reserve() -> None:
    p = CapacityPolicy(1000)
    assert p.fits(1, 900, 100, accounting=False)
    assert not p.fits(1, 901, 100, accounting=False)
    assert not p.fits(3, 850, 100, accounting=False)  # health stops at 90 %
    assert p.fits(0, 1000, 50, accounting=True)
    assert not p.fits(0, 1000, 51, accounting=True)


async def test_a_burst_queued_below_the_quota_is_cut_at_the_quota_not_after_it(
    tmp_path: Path,
) -> None:
    db = DatabaseThread()
    outbox = await db.run(Outbox, tmp_path / "o.db")
    writer = _writer(outbox, db)
    # Each reading its own spot record (one per lane slot is shared, so use separate commits).
    futures = [
        await writer.enqueue([make_measurement(device_record_id=i)], Lane.SPOT)
        for i in range(1, 400)
    ]  # all admitted at enqueue: nothing is held yet
    task = asyncio.create_task(writer.run())
    done = await asyncio.gather(*futures, return_exceptions=True)
    stored = [r for r in done if isinstance(r, int)]
    refused = [r for r in done if isinstance(r, QuotaExceededError)]
    assert stored, "the first readings fit"
    assert outbox.bytes_held <= QUOTA
    assert (await db.run(outbox.stats)).bytes <= QUOTA
    if refused:  # 400 readings in one window share records of 256: refusals are whole records
        assert writer.refusing
        assert writer.gaps.total_refused == len(refused)
    task.cancel()
    db.shutdown()


async def test_commits_in_flight_never_overshoot_and_the_chain_stays_whole(tmp_path: Path) -> None:
    db = DatabaseThread()
    outbox = await db.run(Outbox, tmp_path / "o.db")
    writer = _writer(outbox, db)
    task = asyncio.create_task(writer.run())
    refused = 0

    async def one(i: int) -> None:
        nonlocal refused
        try:
            fut = await writer.enqueue([make_measurement(device_record_id=i)], Lane.SPOT)
            await fut
        except QuotaExceededError:
            refused += 1

    for start in range(0, 2000, 50):  # bursts of 50 at once, many commits in flight
        await asyncio.gather(*(one(i) for i in range(start, start + 50)))
        assert outbox.bytes_held <= QUOTA
    assert refused > 0
    gap_body = writer.gaps.take(ongoing=True, quota_bytes=QUOTA, held_bytes=outbox.bytes_held)
    await writer.submit_payload(wire.RecordKind.GAP, gap_body, Lane.ALARM)
    assert outbox.bytes_held <= QUOTA * (1 + GAP_RESERVE_FRACTION)
    verifier = await db.run(open_all, outbox)
    assert verifier.chain.missing(GW.gateway_id, 1) == []
    task.cancel()
    db.shutdown()


class RefusalRecordingDriver(FakeDriver):
    """Records what the pump tells it was refused (a device that keeps what was not stored)."""

    def __init__(self, readings: Sequence[Measurement]) -> None:
        super().__init__(readings)
        self.told_refused: list[Measurement] = []

    async def refused(self, measurements: Sequence[Measurement]) -> None:
        self.told_refused.extend(measurements)


async def test_a_reading_refused_at_commit_is_not_confirmed_and_the_device_is_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = DatabaseThread()
    outbox = await db.run(Outbox, tmp_path / "o.db")
    writer = _writer(outbox, db)
    monkeypatch.setattr(CapacityPolicy, "fits", lambda *_a, **_k: False)  # nothing fits ...
    monkeypatch.setattr(IngestWriter, "admits", lambda *_a: True)  # ... past the early check
    task = asyncio.create_task(writer.run())
    driver = RefusalRecordingDriver([make_measurement(device_record_id=i) for i in (1, 2)])
    await asyncio.wait_for(pump(driver, writer), 20)
    assert driver.confirmed == []
    assert [m.device_record_id for m in driver.told_refused] == [1, 2]
    assert writer.gaps.total_refused == 2
    task.cancel()
    db.shutdown()


class CursorDevice:
    """A device with a memory cursor (like a RACP meter): confirming N means 1..N are stored;
    a refusal rewinds it to resend from the refused reading."""

    name = "cursor"

    def __init__(self, total: int) -> None:
        self.total = total
        self.cursor = 0
        self.rewind: int | None = None
        self.sent: list[int] = []
        self.outstanding: set[int] = set()  # refused, not confirmed since
        self.skipped: list[tuple[int, int]] = []  # (cursor, a refused reading below it)

    async def measurements(self) -> AsyncIterator[Measurement]:
        n = 1
        while n <= self.total or self.cursor < self.total:
            if n > self.total:
                await asyncio.sleep(0.01)
                if self.rewind is not None:
                    n, self.rewind = self.rewind, None
                continue
            self.sent.append(n)
            await asyncio.sleep(0.005)  # a reading at a time: commits of their own
            yield make_measurement(device_record_id=n)
            n += 1
            if self.rewind is not None:
                n, self.rewind = self.rewind, None

    async def committed(self, measurements: Sequence[Measurement]) -> None:
        ids = {m.device_record_id or 0 for m in measurements}
        self.outstanding -= ids
        self.cursor = max(self.cursor, *ids)
        self.skipped += [(self.cursor, r) for r in self.outstanding if r < self.cursor]

    async def refused(self, measurements: Sequence[Measurement]) -> None:
        self.outstanding |= {m.device_record_id or 0 for m in measurements}
        first = min(m.device_record_id or 0 for m in measurements)
        self.rewind = first if self.rewind is None else min(self.rewind, first)


async def test_a_refusal_at_commit_never_lets_a_later_confirmation_skip_the_refused_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = DatabaseThread()
    outbox = await db.run(Outbox, tmp_path / "o.db")
    sealer = RecordSealer(GW.gateway_id, SIGNING, PROVIDER.public_key())
    policy = CapacityPolicy(1 << 20)  # room for all: only the flaky refusals below refuse
    writer = IngestWriter(outbox, sealer, GW, db, window_s=0.0, policy=policy)
    calls = [0]
    real_fits = CapacityPolicy.fits

    def flaky_fits(self: CapacityPolicy, *args: object, **kwargs: object) -> bool:
        calls[0] += 1
        if calls[0] in (5, 6, 13):  # a few records refused in the middle of the stream
            return False
        return real_fits(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(CapacityPolicy, "fits", flaky_fits)
    task = asyncio.create_task(writer.run())
    device = CursorDevice(30)
    pumping = asyncio.create_task(pump(device, writer))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while device.cursor < 30:
        assert loop.time() < deadline, f"cursor stuck at {device.cursor}"
        await asyncio.sleep(0.01)
    assert writer.gaps.total_refused >= 1  # the flaky refusals happened and were accounted
    assert device.skipped == [], "the cursor passed a refused reading: a restart would lose it"
    stored = await db.run(_stored_ids, outbox)
    assert set(range(1, 31)) <= stored, "every reading up to the cursor is stored"
    pumping.cancel()
    task.cancel()
    await asyncio.gather(pumping, task, return_exceptions=True)
    db.shutdown()


def _stored_ids(outbox: Outbox) -> set[int | None]:
    verifier = Verifier(PROVIDER, {GW.gateway_id: SIGNING.public_key()})
    out: set[int | None] = set()
    while batch := outbox.lease(10_000, 10**9):
        for rec in batch:
            out.update(m.device_record_id for m in verifier.accept_record(rec.record).measurements)
        outbox.ack([r.seq for r in batch])
    return out
