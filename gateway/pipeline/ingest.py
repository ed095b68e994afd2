"""Ingest: measurements in, sealed and durably committed records out (group commit).

Drivers hand readings to :class:`IngestWriter`. The writer gathers whatever arrives within a short
window (and whatever piles up while the previous commit is being fsynced), then on the database
thread maps each lane's readings to one FHIR Bundle, seals it as the next record of the hash chain
and appends all records in one transaction. Only when that transaction is durable are the
submitters' futures resolved - and only then does a driver confirm anything to its device.

A failed commit is never skipped: the batch is retried with backoff, its futures stay pending (so
drivers hold their device-side records and back-pressure builds up), and the error is reported.

Continuous streams (lane STREAM) are sealed in chunks when ``stream_chunk_s`` is set: their
readings gather in memory for up to that long (or MAX_OBSERVATIONS_PER_RECORD readings) and become
one record, so the per-record cost (header, HPKE, signature, fsync, publish, ack) is shared.

Staged, not held: with a staging store (buffer/staging.py), the open chunk's readings are also
appended there at most every ``stage_interval_s``, each encrypted under the chunk's key, which is
stored only wrapped to the provider (gateway/seal/staged.py). Their futures resolve - and their
drivers confirm - once the staged rows are durable. A clean close seals the chunk from memory as
before, then deletes its staged rows (a crash in between sends them again: a duplicate, never a
loss). Staged chunks found at start-up are sent as STAGED_CHUNK records the provider opens.

Without a staging store (or from an older version) a durable mark in the outbox says since when a
chunk is open; a mark found at start-up means the process stopped uncleanly with a chunk in
memory: an EVENT record ``stream-chunk-lost`` tells the provider which stretch of stream readings
is missing, so even that loss is never silent. Spot readings and alarms are never held back.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from buffer.capacity import CapacityPolicy
from buffer.outbox import ChainHead, NewRecord, Outbox, now_ms
from buffer.staging import StagingStore
from gateway.errors import GatewayError, StoreError
from gateway.fhir import observation as fhir
from gateway.gaps import GapLedger, UnusableReading, unusable_gap_body
from gateway.model import Measurement
from gateway.pipeline.dbthread import DatabaseThread
from gateway.seal import cjson, staged, wire
from gateway.seal.sealing import RecordSealer

log = structlog.get_logger("gateway.ingest")

MAX_OBSERVATIONS_PER_RECORD = 256
STAGED = 0  # what a staged reading's future resolves to: durable, its record seq not known yet


class QuotaExceededError(StoreError):
    """The outbox is full for this lane: the readings were not stored and must not be confirmed."""

    hint = (
        "the provider has not acknowledged data for a long time: check the uplink; readings are "
        "kept on devices that store them, and refusals are reported in gap records"
    )


class Lane(enum.IntEnum):
    """Upload priority: lower goes first (within a lane, sequence order is kept)."""

    ALARM = 0  # device alarms and gateway alarms
    SPOT = 1  # spot measurements (a temperature, a blood pressure, a CRP result)
    STREAM = 2  # chunks of continuous streams
    HEALTH = 3  # periodic health telemetry


@dataclass(slots=True)
class _Item:
    kind: wire.RecordKind
    lane: Lane
    measurements: Sequence[Measurement] = ()
    payload: bytes = b""  # canonical JSON, encoded by the submitter
    starts_chunk: bool = False  # the first reading of a stream chunk: a record of its own begins
    must_store: bool = False  # past the quota too (the one stream-chunk-lost event of a start)
    estimate: int = 0  # bytes it was expected to take when admitted (in-flight accounting)
    future: asyncio.Future[int] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass(frozen=True, slots=True)
class CommitResult:
    first_seq: int
    last_seq: int
    records: int
    readings: int


class IngestWriter:
    def __init__(
        self,
        outbox: Outbox,
        sealer: RecordSealer,
        gateway: fhir.GatewayInfo,
        db_thread: DatabaseThread,
        *,
        window_s: float = 0.002,
        max_items: int = 4096,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 30.0,
        policy: CapacityPolicy | None = None,
        stream_chunk_s: float = 0.0,
        staging: StagingStore | None = None,
        stage_interval_s: float = 1.0,
        staging_damaged: str | None = None,
    ) -> None:
        self._outbox = outbox
        self._sealer = sealer
        self._gateway = gateway
        self._db = db_thread
        self._window_s = window_s
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=max_items)
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self.committed_readings = 0
        self.committed_records = 0
        self.last_error: str | None = None
        self.last_progress: float = 0.0  # loop.time() of the last successful commit or idle wait
        self.committed_event = asyncio.Event()  # set after each commit (the uplink wakes on it)
        self.policy = policy
        self.gaps = GapLedger()
        self.refusing = False  # some lane is being refused right now (quota reached)
        # Stream chunking (0 = every commit window seals what it holds, streams included).
        self._stream_chunk_s = stream_chunk_s
        self._chunk: list[_Item] = []
        self._chunk_readings = 0
        self._chunk_opened = 0.0  # loop.time() when the open chunk got its first reading
        self._chunk_opened_ms = 0  # the same, wall clock, for the durable mark
        self._chunk_marked = False
        self._flush_chunk = False
        # Staging (None: the open chunk is held in memory only, as before).
        self._staging = staging
        self._stage_interval_s = stage_interval_s
        self._staging_damaged = staging_damaged  # moved aside at start: what it held is lost
        self._unstaged: list[_Item] = []  # in the open chunk, not staged yet (futures pending)
        self._unstaged_since = 0.0  # loop.time() of the oldest of them
        self._cipher: staged.ChunkCipher | None = None  # the open chunk's key, once staged
        self._cipher_key = 0  # its chunk file's handle in the staging store
        self._closing: list[int] = []  # staged chunks sealed in this round: drop once durable
        self.staged_readings = 0
        self.recovered_chunks = 0  # staged chunks found at start-up and sent
        self.lost_stream_chunks = 0  # unclean stops found at start-up (reported upstream)
        self.unusable_readings = 0  # readings accounted for by an unusable-result gap record
        self.last_refused_bytes = 0  # size of the latest record refused at commit time
        self.record_bytes_estimate = 0  # a recent large sealed record (decays), for admission
        self._inflight_bytes = 0  # estimates of the items admitted and not yet committed

    # -- submitting ---------------------------------------------------------------------------

    async def submit(self, measurements: Sequence[Measurement], lane: Lane = Lane.SPOT) -> int:
        """Queue readings and wait until they are durable; returns the record's sequence number
        (``STAGED`` for a stream reading staged in the open chunk: durable, not sealed yet)."""
        fut = await self.enqueue(measurements, lane)
        return await fut

    async def enqueue(
        self, measurements: Sequence[Measurement], lane: Lane = Lane.SPOT
    ) -> asyncio.Future[int]:
        """Queue readings (waits only for queue space); the future resolves once durable.

        Raises ``QuotaExceededError`` at once when the outbox is too full for this lane: the
        caller must then not confirm the readings to their device. The refusal is recorded for
        the next gap record.
        """
        if not self.admits(lane):
            self.gaps.note(measurements, int(lane), "outbox-quota")
            if not self.refusing:
                log.error("outbox.quota_reached", lane=lane.name, held_bytes=self.held_bytes)
            self.refusing = True
            raise QuotaExceededError(
                f"outbox quota reached: {lane.name.lower()} readings are refused",
                lane=lane.name,
            )
        item = _Item(wire.RecordKind.OBSERVATIONS, lane, measurements=tuple(measurements))
        self._admitted(item)
        await self._queue.put(item)
        return item.future

    async def submit_payload(
        self, kind: wire.RecordKind, payload: Mapping[str, Any], lane: Lane
    ) -> int:
        """Seal a non-clinical JSON payload (health, gap, event) as a record of its own.

        Encoded here, in the caller's task, so a payload that cannot be encoded fails its caller
        and never reaches (let alone blocks) the writer.
        """
        admitted = (
            self.policy is None
            or (kind is wire.RecordKind.GAP and self.policy.admits_gap_record(self.held_bytes))
            or (kind is not wire.RecordKind.GAP and self.admits(lane))
        )
        if not admitted:
            raise QuotaExceededError(f"outbox quota reached: {kind.name.lower()} record refused")
        item = _Item(kind, lane, payload=cjson.dumps(payload))
        self._admitted(item)
        await self._queue.put(item)
        return await item.future

    @property
    def held_bytes(self) -> int:
        return self._outbox.bytes_held

    def admits(self, lane: Lane) -> bool:
        """The early check at enqueue: would a typical record still fit once everything already
        admitted but not yet committed is stored? (The commit itself enforces the bound.)"""
        if self.policy is None:
            return True
        held = self.held_bytes + self._inflight_bytes
        return self.policy.admits(int(lane), held) and self.policy.fits(
            int(lane), held, self.record_bytes_estimate, accounting=False
        )

    def _admitted(self, item: _Item) -> None:
        item.estimate = self.record_bytes_estimate
        self._inflight_bytes += item.estimate

    def _settled(self, item: _Item) -> None:
        self._inflight_bytes = max(0, self._inflight_bytes - item.estimate)
        item.estimate = 0

    async def wait_for_space(self, lane: Lane, poll_s: float = 1.0) -> None:
        """Return once ``lane`` is accepted again (the uplink freed space)."""
        while not self.admits(lane):  # noqa: ASYNC110 - space is freed on the database thread
            await asyncio.sleep(poll_s)

    async def wait_for_room(self, lane: Lane, poll_s: float = 1.0) -> None:
        """After a refusal at commit time: return once a record as large as the refused one
        would fit in ``lane`` (not merely once the early admission check passes again)."""
        policy = self.policy
        while policy is not None and not policy.fits(  # noqa: ASYNC110 - as wait_for_space
            int(lane), self.held_bytes, self.last_refused_bytes, accounting=False
        ):
            await asyncio.sleep(poll_s)

    async def report_gaps(self, interval_s: float = 60.0, poll_s: float = 1.0) -> None:
        """Seal a GAP record when refusing ends, and every ``interval_s`` while it goes on."""
        loop = asyncio.get_running_loop()
        last_report = loop.time()
        while True:
            await asyncio.sleep(poll_s)
            if self.refusing and self.admits(Lane.HEALTH):
                self.refusing = False
                log.warning("outbox.quota_recovered", held_bytes=self.held_bytes)
            due = not self.refusing or loop.time() - last_report >= interval_s
            if not self.gaps or not due or self.policy is None:
                continue
            body = self.gaps.take(
                ongoing=self.refusing,
                quota_bytes=self.policy.quota_bytes,
                held_bytes=self.held_bytes,
            )
            try:
                seq = await self.submit_payload(wire.RecordKind.GAP, body, Lane.ALARM)
            except QuotaExceededError:
                self.gaps.put_back(body)  # even the reserve is full: try again later
                continue
            last_report = loop.time()
            log.warning("outbox.gap_recorded", seq=seq, entries=len(body["refused"]))

    async def report_unusable(self, reading: UnusableReading) -> bool:
        """Seal a GAP record for a reading that cannot be used; True once it is durable.

        The driver confirms the reading to its device only after this returns True. False when
        even the gap reserve of the quota is full: the driver then refuses the reading (the
        device keeps it and offers it again) instead of confirming it.
        """
        body = unusable_gap_body(
            [reading],
            quota_bytes=self.policy.quota_bytes if self.policy else None,
            held_bytes=self.held_bytes,
        )
        try:
            seq = await self.submit_payload(wire.RecordKind.GAP, body, Lane.ALARM)
        except QuotaExceededError:
            # The outcome is the message (the driver NAKs, the analyser keeps it): no traceback.
            log.error("outbox.unusable_refused", source=reading.source)  # noqa: TRY400
            return False
        self.unusable_readings += 1
        log.warning("outbox.unusable_recorded", seq=seq, source=reading.source)
        return True

    # -- the writer task ----------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.last_progress = loop.time()
        await self._report_lost_chunk()
        await self._recover_staged()
        while True:
            try:
                first = await asyncio.wait_for(self._queue.get(), timeout=self._wait_s(loop))
            except TimeoutError:
                self.last_progress = loop.time()  # idle is healthy
                if self._chunk and (self._chunk_due(loop) or self._stage_due(loop)):
                    await self._commit_round([], loop)
                continue
            batch = [first]
            if self._window_s > 0:
                await asyncio.sleep(self._window_s)
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._commit_round(batch, loop)
            self.last_progress = loop.time()

    async def drain(self) -> None:
        """Wait until everything queued so far is committed, an open chunk too (at shutdown)."""
        self._flush_chunk = True
        await self._queue.join()

    # -- stream chunks ------------------------------------------------------------------------

    def _chunked(self, item: _Item) -> bool:
        return (
            self._stream_chunk_s > 0
            and item.lane is Lane.STREAM
            and item.kind is wire.RecordKind.OBSERVATIONS
        )

    def _wait_s(self, loop: asyncio.AbstractEventLoop) -> float:
        if not self._chunk:
            return 1.0
        # Wake when the chunk is due, and at least once a second (a shutdown may be waiting).
        due = self._chunk_opened + self._stream_chunk_s
        if self._unstaged:
            due = min(due, self._unstaged_since + self._stage_interval_s)
        return max(0.0, min(1.0, due - loop.time()))

    def _stage_due(self, loop: asyncio.AbstractEventLoop) -> bool:
        return bool(self._unstaged) and (
            loop.time() - self._unstaged_since >= self._stage_interval_s
        )

    def _beyond_chunk(self, item: _Item) -> bool:
        """Would ``item`` stretch the open chunk to ``stream_chunk_s`` of reception time?"""
        first = self._chunk[0].measurements[0].received_at
        last = item.measurements[-1].received_at
        return (last - first).total_seconds() >= self._stream_chunk_s

    def _chunk_due(self, loop: asyncio.AbstractEventLoop) -> bool:
        return bool(self._chunk) and (
            self._flush_chunk
            or loop.time() - self._chunk_opened >= self._stream_chunk_s
            or self._chunk_readings >= MAX_OBSERVATIONS_PER_RECORD
        )

    def _take_chunk(self) -> list[_Item]:
        chunk, self._chunk, self._chunk_readings = self._chunk, [], 0
        self._chunk_marked = False
        # Sealed now, from memory: what was not staged yet need not be; what was staged (and
        # confirmed) must be stored whatever the quota says, and its rows go once it is durable.
        self._unstaged.clear()
        for item in chunk:
            item.must_store = item.future.done()
        if self._cipher is not None:
            self._closing.append(self._cipher_key)
            self._cipher = None
        return chunk

    async def _commit_round(self, batch: list[_Item], loop: asyncio.AbstractEventLoop) -> None:
        """Commit what must not wait; gather stream readings into the open chunk."""
        now: list[_Item] = []
        closed = False
        for item in batch:
            if not self._chunked(item) or not item.measurements:
                now.append(item)
                continue
            if self._chunk and self._beyond_chunk(item):
                now.extend(self._take_chunk())
                closed = True
            if not self._chunk:
                self._chunk_opened, self._chunk_opened_ms = loop.time(), now_ms()
                item.starts_chunk = True
            self._chunk.append(item)
            self._chunk_readings += len(item.measurements)
            if self._staging is not None:
                if not self._unstaged:
                    self._unstaged_since = loop.time()
                self._unstaged.append(item)
            if self._chunk_readings >= MAX_OBSERVATIONS_PER_RECORD:
                now.extend(self._take_chunk())
                closed = True
        if self._chunk_due(loop):
            now.extend(self._take_chunk())
            closed = True
        if not self._chunk:
            self._flush_chunk = False
        try:
            if now:
                await self._commit_with_retry(now, close_stream_chunk=closed)
        finally:
            for _ in now:
                self._queue.task_done()
        await self._after_commit(loop)

    async def _after_commit(self, loop: asyncio.AbstractEventLoop) -> None:
        """Stage what is due (or, with no staging file, mark the open chunk durably)."""
        await self._drop_closed()
        if self._staging is not None:
            if self._stage_due(loop):
                await self._stage_with_retry()
            return
        if self._chunk and not self._chunk_marked:
            try:
                await self._db.run(self._outbox.open_stream_chunk, self._chunk_opened_ms)
                self._chunk_marked = True
            except GatewayError as exc:  # the chunk itself is still sealed when due
                self.last_error = exc.one_line()
                log.error("outbox.stream_mark_failed", error=exc.message)  # noqa: TRY400

    # -- staging ------------------------------------------------------------------------------

    async def _stage_with_retry(self) -> None:
        """Stage the open chunk's unstaged readings durably, then resolve their futures."""
        items = list(self._unstaged)
        delay = self._retry_initial_s
        while True:
            try:
                await self._db.run(self._stage_rows, items)
                break
            except GatewayError as exc:  # futures stay pending: the drivers confirm nothing
                self.last_error = exc.one_line()
                log.error(  # noqa: TRY400 - the message is the diagnosis
                    "outbox.stage_failed", error=exc.message, items=len(items), retry_s=delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max_s)
        self.last_error = None
        self._unstaged.clear()
        for item in items:
            self.staged_readings += len(item.measurements)
            if not item.future.done():
                item.future.set_result(STAGED)
        log.debug("outbox.staged", readings=sum(len(i.measurements) for i in items))

    def _stage_rows(self, items: list[_Item]) -> None:
        """On the database thread: encrypt one row per reading and append them durably."""
        assert self._staging is not None
        cipher, header = self._cipher, None
        if cipher is None:
            cipher = staged.ChunkCipher.open(self._sealer, self._chunk_opened_ms)
            header = cipher.header
        plaintexts = [
            # float_free: as in _group; a one-reading Bundle, so the provider maps nothing.
            cjson.dumps(fhir.bundle([m], self._gateway), float_free=True)
            for item in items
            for m in item.measurements
        ]
        first = cipher.next_row
        rows = [cipher.encrypt(first + i, p) for i, p in enumerate(plaintexts)]
        key = self._staging.stage(header, self._cipher_key, first, rows)
        # Only once durable: a failed append is retried at the same row numbers.
        cipher.next_row = first + len(rows)
        self._cipher, self._cipher_key = cipher, key

    async def _drop_closed(self) -> None:
        """Staged chunks just sealed (durably) in the outbox: delete their rows."""
        if self._staging is None or not self._closing:
            return
        keys, self._closing = self._closing, []
        for key in keys:
            try:
                await self._db.run(self._staging.drop, key)
            except GatewayError as exc:  # they are sent again after a restart: duplicates
                log.error("outbox.stage_drop_failed", error=exc.message)  # noqa: TRY400

    async def _recover_staged(self) -> None:
        """Staged chunks left by an unclean stop: each becomes a STAGED_CHUNK record."""
        if self._staging is None:
            return
        if self._staging_damaged is not None:
            log.error("outbox.staging_replaced", error=self._staging_damaged)
            await self._commit_lost_event(now_ms(), close_mark=False, reason="staging-damaged")
        for chunk in await self._db.run(self._staging.chunks):
            if chunk.rows:
                body = staged.recovered_body(
                    chunk.header,
                    chunk.rows,
                    int(Lane.STREAM),
                    datetime.now(UTC),
                    chunk.rows_version,
                )
                item = _Item(
                    wire.RecordKind.STAGED_CHUNK,
                    Lane.STREAM,
                    payload=cjson.dumps(body),
                    must_store=True,  # confirmed readings: the quota's refusal is not an option
                )
                await self._commit_with_retry([item])
                self.recovered_chunks += 1
                log.warning(
                    "outbox.staged_chunk_recovered",
                    seq=item.future.result(),
                    rows=len(chunk.rows),
                    opened_ms=chunk.header.opened_ms,
                )
            else:  # marked, nothing readable staged (not written by this version): say so
                await self._commit_lost_event(chunk.header.opened_ms, close_mark=False)
            await self._db.run(self._staging.drop, chunk.key)

    async def _report_lost_chunk(self) -> None:
        opened = await self._db.run(self._outbox.stream_chunk_opened_ms)
        if opened is None:
            return
        await self._commit_lost_event(opened, close_mark=True)

    async def _commit_lost_event(
        self, opened: int, *, close_mark: bool, reason: str = "unclean-stop"
    ) -> None:
        body = {
            "type": "event",
            "version": 1,
            "event": "stream-chunk-lost",
            "reason": reason,
            "lane": int(Lane.STREAM),
            "opened": datetime.fromtimestamp(opened / 1000, UTC).isoformat(),
            "detected": datetime.now(UTC).isoformat(),
        }
        item = _Item(
            wire.RecordKind.EVENT, Lane.ALARM, payload=cjson.dumps(body), must_store=True
        )
        await self._commit_with_retry([item], close_stream_chunk=close_mark)
        self.lost_stream_chunks += 1
        log.error("gateway.alarm", alarm="stream-chunk-lost", seq=item.future.result())

    async def _commit_with_retry(
        self, batch: list[_Item], *, close_stream_chunk: bool = False
    ) -> None:
        delay = self._retry_initial_s
        while True:
            try:
                result, seqs = await self._db.run(self._seal_and_append, batch, close_stream_chunk)
            except GatewayError as exc:
                self.last_error = exc.one_line()
                log.error(  # noqa: TRY400 - the message is the diagnosis; no traceback needed
                    "outbox.commit_failed", error=exc.message, items=len(batch), retry_s=delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max_s)
                continue
            self.last_error = None
            break
        self.committed_readings += result.readings
        self.committed_records += result.records
        for item, seq in zip(batch, seqs, strict=True):
            self._settled(item)
            if seq is None:
                self._refused_at_commit(item)
            elif not item.future.done():
                item.future.set_result(seq)
        self.committed_event.set()
        log.debug(
            "outbox.committed",
            records=result.records,
            readings=result.readings,
            first_seq=result.first_seq,
            last_seq=result.last_seq,
        )

    def _refused_at_commit(self, item: _Item) -> None:
        """A record that did not fit under the quota (capacity.py): refused like at enqueue."""
        if item.measurements:
            self.gaps.note(item.measurements, int(item.lane), "outbox-quota")
        if not self.refusing:
            log.error("outbox.quota_reached", lane=item.lane.name, held_bytes=self.held_bytes)
        self.refusing = True
        if not item.future.done():
            item.future.set_exception(
                QuotaExceededError(
                    f"outbox quota reached: {item.lane.name.lower()} record refused at commit",
                    lane=item.lane.name,
                )
            )

    # -- on the database thread ---------------------------------------------------------------

    def _seal_and_append(
        self, batch: list[_Item], close_stream_chunk: bool = False
    ) -> tuple[CommitResult, list[int | None]]:
        """Seal and append ``batch``; the seq of each item, None for one refused by the quota."""
        records, index_of_item = self._group(batch)
        forced = {index_of_item[i] for i, item in enumerate(batch) if item.must_store}
        head: ChainHead = self._outbox.head()
        seq, prev = head.seq, head.head_hash
        created = now_ms()
        new: list[NewRecord] = []
        seq_of_record: list[int | None] = []
        readings = 0
        held = self._outbox.bytes_held
        largest = 0
        for index, (kind, lane, plaintext, n) in enumerate(records):
            sealed = self._sealer.seal(
                plaintext,
                kind=kind,
                lane=int(lane),
                epoch=head.epoch,
                seq=seq + 1,
                prev_hash=prev,
                created_ms=created,
            )
            accounting = kind in (wire.RecordKind.GAP, wire.RecordKind.EVENT)
            if (
                self.policy is not None
                and index not in forced
                and not self.policy.fits(int(lane), held, len(sealed), accounting=accounting)
            ):
                seq_of_record.append(None)  # refused: no seq taken, the chain stays unbroken
                self.last_refused_bytes = len(sealed)  # an int: read on the loop, no lock needed
                continue
            seq += 1
            held += len(sealed)
            largest = max(largest, len(sealed))
            prev = wire.record_hash(sealed)
            new.append(NewRecord(seq, head.epoch, int(lane), int(kind), created, sealed))
            seq_of_record.append(seq)
            readings += n
        if new or close_stream_chunk:
            self._outbox.append(
                new, ChainHead(head.epoch, seq, prev), close_stream_chunk=close_stream_chunk
            )
        # Ints written here and read on the loop: no lock needed. The estimate follows the
        # largest recent record and decays, so one huge chunk does not hold admission down.
        self.record_bytes_estimate = max(largest, self.record_bytes_estimate * 9 // 10)
        first = head.seq + 1
        return (
            CommitResult(first, seq, len(new), readings),
            [seq_of_record[i] for i in index_of_item],
        )

    def _group(
        self, batch: list[_Item]
    ) -> tuple[list[tuple[wire.RecordKind, Lane, bytes, int]], list[int]]:
        # Observation items of a lane share one record until it holds MAX_OBSERVATIONS_PER_RECORD.
        groups: list[tuple[wire.RecordKind, Lane, list[Measurement] | None, bytes]] = []
        index_of_item: list[int] = []
        open_slot: dict[Lane, int] = {}
        for item in batch:
            if item.kind is not wire.RecordKind.OBSERVATIONS:
                index_of_item.append(len(groups))
                groups.append((item.kind, item.lane, None, item.payload))
                continue
            slot = open_slot.get(item.lane, -1)
            group = groups[slot][2] if slot >= 0 else None
            if (
                group is None
                or item.lane is Lane.ALARM  # an alarm is sealed alone: nothing rides with it
                or item.starts_chunk
                or len(group) + len(item.measurements) > MAX_OBSERVATIONS_PER_RECORD
            ):
                slot, group = len(groups), []
                groups.append((item.kind, item.lane, group, b""))
                open_slot[item.lane] = slot
            group.extend(item.measurements)
            index_of_item.append(slot)
        records = [
            # float_free: the Bundle's numbers come from Measurements, Decimal by construction.
            (kind, lane, cjson.dumps(fhir.bundle(ms, self._gateway), float_free=True), len(ms))
            if ms is not None
            else (kind, lane, text, 0)
            for kind, lane, ms, text in groups
        ]
        return records, index_of_item
