"""Staged, not held (issue 17 item 2): the open stream chunk's readings are durable within a
second, encrypted under a chunk key only the provider can unwrap, and an unclean stop sends them
as a STAGED_CHUNK record the provider opens, checks and reads."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import mmap
import os
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, mlkem, x25519

from buffer.outbox import Outbox
from buffer.staging import (
    MAX_SLOTS,
    SLOT_BYTES,
    StagedChunk,
    StagingStore,
    open_staging,
    staging_path,
)
from buffer.stagingfmt import BLOCK, decode_v2, encode_v1_frames, encode_v1_header
from gateway.config.settings import load
from gateway.errors import ConfigError, StoreError, VerifyError
from gateway.fhir import observation as fhir
from gateway.model import Measurement
from gateway.pipeline.dbthread import DatabaseThread
from gateway.pipeline.ingest import STAGED, IngestWriter, Lane
from gateway.seal import cjson, staged, wire
from gateway.seal.sealing import (
    RecordSealer,
    SuiteName,
    provider_private_key,
    provider_public_key,
)
from provider.verifier import Verifier
from tests.factories import (
    RECEIVED_AT,
    VALID_CONFIG,
    make_gateway_info,
    make_measurement,
    write_config,
)

SIGNING = ed25519.Ed25519PrivateKey.generate()
PROVIDER = x25519.X25519PrivateKey.generate()
GW = make_gateway_info()
SEALER = RecordSealer(GW.gateway_id, SIGNING, PROVIDER.public_key())


def stream_reading(i: int) -> Measurement:
    return make_measurement(device_record_id=i, received_at=RECEIVED_AT + timedelta(seconds=i))


def sealed_rows(n: int) -> tuple[staged.ChunkCipher, list[bytes], list[bytes]]:
    cipher = staged.ChunkCipher.open(SEALER, 1_700_000_000_000)
    plain = [cjson.dumps({"row": i, "pad": "x" * 50}) for i in range(n)]
    return cipher, plain, [cipher.encrypt(i, p) for i, p in enumerate(plain)]


def body_of(cipher: staged.ChunkCipher, rows: list[bytes]) -> dict[str, Any]:
    return staged.recovered_body(cipher.header, rows, int(Lane.STREAM), datetime.now(UTC))


def open_body(body: dict[str, Any]) -> list[bytes]:
    return staged.open_rows(body, PROVIDER, SuiteName.X25519, GW.gateway_id, 7)


# -- the cipher and the provider's side -----------------------------------------------------


def test_rows_round_trip_through_the_provider_key_only() -> None:
    cipher, plain, rows = sealed_rows(5)
    assert all(p not in r for p, r in zip(plain, rows, strict=True))  # not plaintext at rest
    assert open_body(body_of(cipher, rows)) == plain
    other = x25519.X25519PrivateKey.generate()
    with pytest.raises(VerifyError, match="does not unwrap") as err:
        staged.open_rows(body_of(cipher, rows), other, SuiteName.X25519, GW.gateway_id)
    assert err.value.reason == "staged-chunk"


@pytest.mark.parametrize(
    "tamper",
    [
        "flip-a-byte",
        "swap-two-rows",
        "drop-the-first-row",
        "row-from-another-chunk",
        "other-gateway",
        "no-rows",
    ],
)
def test_an_altered_missing_or_moved_row_fails_the_whole_chunk(tamper: str) -> None:
    cipher, _, rows = sealed_rows(4)
    body = body_of(cipher, rows)
    gateway = GW.gateway_id
    if tamper == "flip-a-byte":
        bad = bytearray(rows[2])
        bad[5] ^= 1
        body["rows"][2] = base64.b64encode(bytes(bad)).decode()
    elif tamper == "swap-two-rows":
        body["rows"][0], body["rows"][1] = body["rows"][1], body["rows"][0]
    elif tamper == "drop-the-first-row":
        body["rows"] = body["rows"][1:]
    elif tamper == "row-from-another-chunk":
        _, _, other_rows = sealed_rows(4)
        body["rows"][3] = base64.b64encode(other_rows[3]).decode()
    elif tamper == "other-gateway":
        gateway = "gw-someone-else"
    else:
        body["rows"] = []
    with pytest.raises(VerifyError) as err:
        staged.open_rows(body, PROVIDER, SuiteName.X25519, gateway)
    assert err.value.reason == "staged-chunk"


def test_a_retried_row_encrypts_to_the_same_bytes() -> None:
    """A failed staging commit is retried at the same row numbers: same nonce, same plaintext,
    hence the same ciphertext - the nonce is never used for two different messages."""
    cipher, plain, rows = sealed_rows(2)
    assert cipher.encrypt(1, plain[1]) == rows[1]


# -- the staging file -----------------------------------------------------------------------


def test_staged_rows_survive_a_reopen_in_order_and_go_with_their_chunk(tmp_path: Path) -> None:
    path = staging_path(tmp_path / "outbox.db")
    store = StagingStore(path)
    cipher, _, rows = sealed_rows(5)
    key = store.stage(cipher.header, 0, 0, rows[:2])
    assert store.stage(None, key, 2, rows[2:]) == key
    assert store.chunks() == []  # the open chunk is not "left over"
    store.close()  # as after a kill: nothing else was done
    again = StagingStore(path)
    (chunk,) = again.chunks()
    assert chunk.header == cipher.header
    assert list(chunk.rows) == rows
    assert chunk.rows_version == staged.ROWS_VERSION
    again.drop(chunk.key)
    assert again.chunks() == []
    again.close()
    assert on_disk_at(path) == []  # the release is durable after a clean close


def on_disk_at(path: Path) -> list[StagedChunk]:
    reader = StagingStore(path)
    try:
        return reader.chunks()
    finally:
        reader.close()


def test_a_released_slot_is_reused_in_place_without_growing(tmp_path: Path) -> None:
    """Flash wear: chunk after chunk goes into the same preallocated file, overwritten in place
    (its size never changes, so an fdatasync has no metadata to commit), and stale blocks of the
    chunk before are never read as the current chunk's."""
    path = staging_path(tmp_path / "outbox.db")
    store = StagingStore(path)
    big, _, big_rows = sealed_rows(40)
    key = store.stage(big.header, 0, 0, big_rows[:20])
    store.stage(None, key, 20, big_rows[20:])
    (slot,) = path.iterdir()
    assert slot.stat().st_size == SLOT_BYTES
    store.drop(key)
    small, _, small_rows = sealed_rows(3)
    key = store.stage(small.header, 0, 0, small_rows)
    assert list(path.iterdir()) == [slot]
    assert slot.stat().st_size == SLOT_BYTES
    store.close()
    (chunk,) = on_disk_at(path)
    assert chunk.header == small.header
    assert list(chunk.rows) == small_rows  # not the 37 stale rows of the chunk before


def test_commits_are_whole_blocks_and_never_rewrite_an_earlier_one(tmp_path: Path) -> None:
    """Every commit starts on a fresh 512-byte block: a torn write can only damage the commit
    being written, never the blocks of readings already confirmed."""
    path = staging_path(tmp_path / "outbox.db")
    store = StagingStore(path)
    cipher, _, rows = sealed_rows(3)
    key = store.stage(cipher.header, 0, 0, rows[:1])
    (slot_file,) = path.iterdir()
    first = slot_file.read_bytes()
    store.stage(None, key, 1, rows[1:2])
    second = slot_file.read_bytes()
    used = decode_v2(first)[3]
    assert used % BLOCK == 0
    assert second[:used] == first[:used]
    assert decode_v2(second)[3] > used
    store.close()


def test_a_filesystem_that_refuses_direct_io_gets_the_same_file_through_the_page_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """O_DIRECT is an optimisation only: where a write with it fails with EINVAL (tmpfs, a
    device with 4-KiB sectors), the store goes on through the page cache, same format."""
    real_pwrite = os.pwrite
    refused = []

    def no_direct(fd: int, data: Any, offset: int) -> int:
        if isinstance(data, mmap.mmap):  # the aligned buffer of a direct write
            refused.append(offset)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", no_direct)
    path = staging_path(tmp_path / "outbox.db")
    store = StagingStore(path)
    cipher, _, rows = sealed_rows(3)
    key = store.stage(cipher.header, 0, 0, rows[:2])
    store.stage(None, key, 2, rows[2:])
    assert refused
    assert not store.direct_io
    store.close()
    (chunk,) = on_disk_at(path)
    assert list(chunk.rows) == rows


def test_a_new_chunk_whose_first_commit_fails_does_not_hold_its_slot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer retries a failed first commit as a new chunk (new header): every attempt must
    find the slot free again, or a flaky disk would use up the slots until a restart."""
    path = staging_path(tmp_path / "outbox.db")
    store = StagingStore(path)
    real_fdatasync = os.fdatasync

    def failing(fd: int) -> None:  # the write went through, the flush does not
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", failing)
    for _ in range(MAX_SLOTS + 2):
        cipher, _, rows = sealed_rows(1)
        with pytest.raises(StoreError, match="append"):
            store.stage(cipher.header, 0, 0, rows)
    monkeypatch.setattr(os, "fdatasync", real_fdatasync)
    cipher, _, rows = sealed_rows(1)
    store.stage(cipher.header, 0, 0, rows)
    assert [p.name for p in path.iterdir()] == ["slot-0.stg"]
    store.close()
    (chunk,) = on_disk_at(path)
    assert chunk.header == cipher.header


@pytest.mark.parametrize("cut", [1, 5, 17])
def test_a_torn_last_commit_leaves_the_confirmed_rows_readable(tmp_path: Path, cut: int) -> None:
    """A power cut during an append can only tear the commit being written (its readings were
    never confirmed): everything before it reads back; garbage after it is ignored."""
    path = staging_path(tmp_path / "outbox.db")
    store = StagingStore(path)
    cipher, _, rows = sealed_rows(4)
    key = store.stage(cipher.header, 0, 0, rows[:3])
    (file,) = path.iterdir()
    before_last = decode_v2(file.read_bytes())[3]
    store.stage(None, key, 3, rows[3:])
    store.close()
    blob = bytearray(file.read_bytes())
    end = decode_v2(bytes(blob))[3]
    # The last commit, torn: only its first ``cut`` bytes reached the disk.
    torn = bytes(blob[: before_last + cut]) + bytes(end - before_last - cut) + bytes(blob[end:])
    file.write_bytes(torn)
    (chunk,) = StagingStore(path).chunks()
    assert list(chunk.rows) == rows[:3]
    blob[end : end + 24] = b"HCU2" + cipher.header.chunk_id + b"garb"  # a stray unit after
    blob[before_last + 40] ^= 0xFF  # and the last commit damaged in its payload: CRC
    file.write_bytes(bytes(blob))
    (chunk,) = StagingStore(path).chunks()
    assert list(chunk.rows) == rows[:3]


# -- the previous format: a router upgrades with staged chunks present -----------------------


def write_v1_file(folder: Path, header: staged.ChunkHeader, rows: list[bytes]) -> Path:
    """A chunk file exactly as the previous gateway version wrote it (format version 1)."""
    folder.mkdir(exist_ok=True)
    file = folder / f"chunk-{header.chunk_id.hex()}.stg"
    file.write_bytes(encode_v1_header(header) + encode_v1_frames(0, rows))
    return file


def v1_rows(n: int) -> tuple[staged.ChunkCipher, list[bytes], list[bytes]]:
    """Rows as the previous version encrypted them: each deflated alone (rows version 1)."""
    cipher, plain, _ = sealed_rows(n)
    aad, nonce = staged.row_aad, staged.row_nonce
    aead = cipher._aead
    rows = [
        aead.encrypt(nonce(i), zlib.compress(p, 6), aad(cipher.header.chunk_id, i))
        for i, p in enumerate(plain)
    ]
    return cipher, plain, rows


def test_a_chunk_staged_by_the_previous_version_is_read_sent_and_deleted(tmp_path: Path) -> None:
    """Routers in the field upgrade with staged chunks present: a version-1 file is read at
    start-up, goes out as a version-1 STAGED_CHUNK body the provider opens, and is unlinked;
    new chunks then go into slots."""
    path = staging_path(tmp_path / "outbox.db")
    cipher, plain, rows = v1_rows(3)
    old = write_v1_file(path, cipher.header, rows)
    store = StagingStore(path)
    (chunk,) = store.chunks()
    assert chunk.rows_version == 1
    assert list(chunk.rows) == rows
    body = staged.recovered_body(
        chunk.header, chunk.rows, int(Lane.STREAM), datetime.now(UTC), chunk.rows_version
    )
    assert body["version"] == 1
    assert open_body(body) == plain
    store.drop(chunk.key)
    assert not old.exists()
    fresh, _, fresh_rows = sealed_rows(2)
    store.stage(fresh.header, 0, 0, fresh_rows)
    assert [p.name for p in path.iterdir()] == ["slot-0.stg"]
    store.close()


async def test_an_upgrade_with_a_version_1_chunk_delivers_it_before_anything_new(
    tmp_path: Path,
) -> None:
    """The writer of this version recovers the previous version's staged chunk end to end: one
    STAGED_CHUNK record the verifier opens, its readings exactly those staged."""
    db = DatabaseThread()
    outbox = await db.run(Outbox, tmp_path / "o.db")
    readings = [stream_reading(i) for i in range(3)]
    cipher = staged.ChunkCipher.open(SEALER, 1_700_000_000_000)
    plain = [cjson.dumps(fhir.bundle([m], GW), float_free=True) for m in readings]
    rows = [
        cipher._aead.encrypt(
            staged.row_nonce(i), zlib.compress(p, 6), staged.row_aad(cipher.header.chunk_id, i)
        )
        for i, p in enumerate(plain)
    ]
    write_v1_file(staging_path(tmp_path / "o.db"), cipher.header, rows)
    store = await db.run(StagingStore, staging_path(tmp_path / "o.db"))
    writer = make_writer(outbox, db, store)
    task = asyncio.create_task(writer.run())
    await wait_until(lambda: writer.recovered_chunks == 1, "the recovered chunk")
    verifier, opened = await db.run(open_all, outbox)
    (record,) = opened
    assert record.header.kind is wire.RecordKind.STAGED_CHUNK
    assert list(record.measurements) == readings
    assert verifier.failures == {}
    assert not list(staging_path(tmp_path / "o.db").glob("chunk-*"))
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    db.shutdown()


def test_a_version_2_row_needs_row_0_and_a_version_1_body_reads_as_before() -> None:
    """Rows version 2 deflate rows 1.. against row 0: a chunk's rows shrink to ~100 bytes, and
    the provider opens them only together with row 0 (dropping it fails the tag anyway)."""
    cipher, plain, rows = sealed_rows(4)
    assert all(len(r) < len(rows[0]) for r in rows[1:])
    assert open_body(body_of(cipher, rows)) == plain
    v1, v1_plain, v1_encrypted = v1_rows(2)
    body = staged.recovered_body(
        v1.header, v1_encrypted, int(Lane.STREAM), datetime.now(UTC), rows_version=1
    )
    assert open_body(body) == v1_plain
    body["version"] = True  # JSON true is not the number 1
    with pytest.raises(VerifyError):
        open_body(body)


def test_a_chunk_file_with_a_damaged_header_is_kept_aside_and_has_no_rows(tmp_path: Path) -> None:
    path = staging_path(tmp_path / "outbox.db")
    path.mkdir()
    (path / "chunk-00.stg").write_bytes(b"HCS1 this is not a header" * 10)
    (chunk,) = StagingStore(path).chunks()
    assert chunk.rows == ()
    assert [p.name.split(".stg")[1][:9] for p in path.iterdir()] == [".corrupt-"]


def test_a_file_in_the_way_of_the_staging_folder_is_moved_aside(tmp_path: Path) -> None:
    path = staging_path(tmp_path / "outbox.db")
    path.write_bytes(b"this is not a folder")
    store, reason = open_staging(path)
    assert reason is not None
    assert path.is_dir()
    assert store.chunks() == []
    assert [p.name for p in tmp_path.glob("*.corrupt-*")]
    store.close()


# -- the writer -----------------------------------------------------------------------------


def make_writer(
    outbox: Outbox,
    db: DatabaseThread,
    store: StagingStore,
    chunk_s: float = 30.0,
    stage_s: float = 0.1,
) -> IngestWriter:
    return IngestWriter(
        outbox,
        SEALER,
        GW,
        db,
        window_s=0.005,
        retry_initial_s=0.01,
        stream_chunk_s=chunk_s,
        staging=store,
        stage_interval_s=stage_s,
    )


def open_all(outbox: Outbox) -> tuple[Verifier, list[Any]]:
    verifier = Verifier(PROVIDER, {GW.gateway_id: SIGNING.public_key()})
    opened: list[Any] = []
    while batch := outbox.lease(10_000, 10**9):
        opened.extend(verifier.accept_record(rec.record) for rec in batch)
    return verifier, opened


def on_disk(tmp_path: Path) -> list[StagedChunk]:
    """What a restart would find in the staging folder (read by a store of its own)."""
    reader = StagingStore(staging_path(tmp_path / "o.db"))
    try:
        return reader.chunks()
    finally:
        reader.close()


async def wait_until(predicate: Any, what: str, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_stream_readings_are_confirmed_once_staged_long_before_the_chunk_closes(
    tmp_path: Path,
) -> None:
    db = DatabaseThread()
    outbox = await db.run(Outbox, tmp_path / "o.db")
    store = await db.run(StagingStore, staging_path(tmp_path / "o.db"))
    writer = make_writer(outbox, db, store)
    task = asyncio.create_task(writer.run())
    futures = [await writer.enqueue([stream_reading(i)], Lane.STREAM) for i in range(5)]
    # Durable (staged) within the stage interval, though the chunk stays open for 30 s.
    results = await asyncio.wait_for(asyncio.gather(*futures), 5.0)
    assert results == [STAGED] * 5
    assert writer.staged_readings == 5
    assert (await db.run(outbox.stats)).depth == 0  # nothing sealed yet
    (chunk,) = on_disk(tmp_path)
    assert len(chunk.rows) == 5
    # A clean close seals the chunk from memory and deletes its staged rows.
    await asyncio.wait_for(writer.drain(), 5.0)
    await wait_until(lambda: writer.committed_records == 1, "the sealed chunk")
    await wait_until(lambda: not on_disk(tmp_path), "the staged rows deleted")
    verifier, opened = await db.run(open_all, outbox)
    assert [r.header.kind for r in opened] == [wire.RecordKind.OBSERVATIONS]
    assert verifier.readings_ok == 5
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    db.shutdown()


async def test_an_unclean_stop_loses_no_staged_reading(tmp_path: Path) -> None:
    """The process dies with a chunk open: at the next start its staged rows go out as one
    STAGED_CHUNK record, and the provider reads back exactly the readings that were confirmed.
    No stream-chunk-lost event. (Before staging, these readings were lost and only reported.)"""
    db = DatabaseThread()
    outbox = await db.run(Outbox, tmp_path / "o.db")
    store = await db.run(StagingStore, staging_path(tmp_path / "o.db"))
    writer = make_writer(outbox, db, store, stage_s=1.0)
    task = asyncio.create_task(writer.run())
    readings = [stream_reading(i) for i in range(12)]
    confirmed = []
    for m in readings[:10]:
        confirmed.append(await writer.enqueue([m], Lane.STREAM))
    await asyncio.wait_for(asyncio.gather(*confirmed), 5.0)
    late = [await writer.enqueue([m], Lane.STREAM) for m in readings[10:]]
    # Let the writer take them into the open chunk (their staging is due only in 1 s), then
    # the process dies. (Cancelling while its queue.get() completes could be swallowed by
    # Python 3.11's wait_for.)
    await wait_until(writer._queue.empty, "the writer taking the last two")
    await asyncio.sleep(0.05)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert not any(f.done() for f in late)  # never confirmed: the device was told nothing
    await db.run(outbox.close)
    await db.run(store.close)

    outbox = await db.run(Outbox, tmp_path / "o.db")
    store = await db.run(StagingStore, staging_path(tmp_path / "o.db"))
    writer = make_writer(outbox, db, store)
    task = asyncio.create_task(writer.run())
    await wait_until(lambda: writer.recovered_chunks == 1, "the recovered chunk")
    assert writer.lost_stream_chunks == 0
    assert await db.run(store.chunks) == []
    verifier, opened = await db.run(open_all, outbox)
    (record,) = opened
    assert record.header.kind is wire.RecordKind.STAGED_CHUNK
    assert record.header.lane == Lane.STREAM
    assert list(record.measurements) == readings[:10]
    assert verifier.readings_ok == 10
    assert verifier.failures == {}
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    db.shutdown()


async def test_a_crash_after_the_seal_before_the_delete_gives_duplicates_not_losses(
    tmp_path: Path,
) -> None:
    db = DatabaseThread()
    outbox = await db.run(Outbox, tmp_path / "o.db")
    store = await db.run(StagingStore, staging_path(tmp_path / "o.db"))
    writer = make_writer(outbox, db, store)

    async def no_drop() -> None:  # the crash: the chunk record is durable, its rows are not gone
        writer._closing.clear()

    writer._drop_closed = no_drop  # type: ignore[method-assign]
    task = asyncio.create_task(writer.run())
    futures = [await writer.enqueue([stream_reading(i)], Lane.STREAM) for i in range(3)]
    await asyncio.wait_for(asyncio.gather(*futures), 5.0)
    await asyncio.wait_for(writer.drain(), 5.0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    store = await db.run(StagingStore, staging_path(tmp_path / "o.db"))  # the restart
    writer = make_writer(outbox, db, store)
    task = asyncio.create_task(writer.run())
    await wait_until(lambda: writer.recovered_chunks == 1, "the recovered chunk")
    _, opened = await db.run(open_all, outbox)
    kinds = [r.header.kind for r in opened]
    assert sorted(kinds) == [wire.RecordKind.OBSERVATIONS, wire.RecordKind.STAGED_CHUNK]
    # The same three readings twice: the identifier de-duplicates them at the provider.
    assert [list(r.measurements) for r in opened] == [[stream_reading(i) for i in range(3)]] * 2
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    db.shutdown()


async def test_a_chunk_left_open_by_the_previous_version_is_still_reported_lost(
    tmp_path: Path,
) -> None:
    """An outbox of the previous version (schema 2: the open-chunk mark, no staging file) with
    records in it: the upgraded writer reports the held chunk as ``stream-chunk-lost`` once,
    leaves every stored record as it was, and stages from then on."""
    db = DatabaseThread()
    old = await db.run(Outbox, tmp_path / "o.db")
    old_writer = IngestWriter(old, SEALER, GW, db, window_s=0.005, stream_chunk_s=30.0)
    task = asyncio.create_task(old_writer.run())
    await old_writer.submit([make_measurement(device_record_id=1)], Lane.SPOT)
    await old_writer.enqueue([stream_reading(2)], Lane.STREAM)
    await wait_until(lambda: old.stream_chunk_opened_ms() is not None, "the old mark")
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await db.run(old.close)
    assert not staging_path(tmp_path / "o.db").exists()  # the previous version had none

    outbox = await db.run(Outbox, tmp_path / "o.db")
    store = await db.run(StagingStore, staging_path(tmp_path / "o.db"))
    writer = make_writer(outbox, db, store)
    task = asyncio.create_task(writer.run())
    await wait_until(lambda: writer.lost_stream_chunks == 1, "the lost chunk reported")
    assert writer.recovered_chunks == 0
    staged_now = await writer.enqueue([stream_reading(3)], Lane.STREAM)
    assert await asyncio.wait_for(staged_now, 5.0) == STAGED
    verifier, opened = await db.run(open_all, outbox)
    assert verifier.readings_ok == 1  # the spot reading stored before the upgrade
    events = [r.body for r in opened if r.header.kind is wire.RecordKind.EVENT]
    assert [(e["event"], e["reason"]) for e in events] == [("stream-chunk-lost", "unclean-stop")]
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    db.shutdown()


async def test_a_failing_staging_commit_is_retried_and_confirms_nothing_meanwhile(
    tmp_path: Path,
) -> None:
    db = DatabaseThread()
    outbox = await db.run(Outbox, tmp_path / "o.db")
    store = await db.run(StagingStore, staging_path(tmp_path / "o.db"))
    failures = [2]
    real_stage = store.stage

    def flaky(*args: Any) -> int:
        if failures[0]:
            failures[0] -= 1
            raise StoreError("staging append failed: disk I/O error")
        return real_stage(*args)

    store.stage = flaky  # type: ignore[method-assign,assignment]
    writer = make_writer(outbox, db, store)
    task = asyncio.create_task(writer.run())
    fut = await writer.enqueue([stream_reading(1)], Lane.STREAM)
    await wait_until(lambda: failures[0] == 1, "the first failed attempt")
    assert not fut.done()  # not durable: the driver confirms nothing
    assert await asyncio.wait_for(fut, 10.0) == STAGED
    (chunk,) = on_disk(tmp_path)
    assert len(chunk.rows) == 1
    opened = staged.open_rows(
        staged.recovered_body(chunk.header, list(chunk.rows), 2, datetime.now(UTC)),
        PROVIDER,
        SuiteName.X25519,
        GW.gateway_id,
    )
    assert len(opened) == 1
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    db.shutdown()


def test_the_stage_interval_is_configured_and_bounded(files: Path) -> None:
    assert load(write_config(files, VALID_CONFIG)).stage_interval_s == 1.0
    cfg = load(write_config(files, VALID_CONFIG + "\n[outbox]\nstage_interval_s = 2.5\n"))
    assert cfg.stage_interval_s == 2.5
    with pytest.raises(ConfigError, match="stage_interval_s"):
        load(write_config(files, VALID_CONFIG + "\n[outbox]\nstage_interval_s = 11\n"))


def test_the_chunk_key_is_wrapped_with_the_hybrid_suite_too() -> None:
    mlkem_key = mlkem.MLKEM768PrivateKey.generate()
    hybrid = provider_private_key(PROVIDER, mlkem_key)
    sealer = RecordSealer(
        GW.gateway_id, SIGNING, provider_public_key(PROVIDER.public_key(), mlkem_key.public_key())
    )
    cipher = staged.ChunkCipher.open(sealer, 1_700_000_000_000)
    assert cipher.header.kem_id == 0x647A
    rows = [cipher.encrypt(0, b'{"row":0}')]
    body = staged.recovered_body(cipher.header, rows, int(Lane.STREAM), datetime.now(UTC))
    assert staged.open_rows(body, hybrid, SuiteName.MLKEM768_X25519, GW.gateway_id) == [
        b'{"row":0}'
    ]
    with pytest.raises(VerifyError):  # the X25519 half alone does not open it
        staged.open_rows(body, PROVIDER, SuiteName.X25519, GW.gateway_id)
