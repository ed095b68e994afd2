"""Where the time goes: the database thread's work per reading, stage by stage.

For two record shapes - ``bulk`` (256 readings per record, the ingest benchmark's shape) and
``single`` (one reading per record, what a 1 Hz stream or a 10 readings/s trickle produces) - the
steps of ``IngestWriter._seal_and_append`` and of the uplink's outbox work are timed one by one
with the real functions, without a profiler in the way:

FHIR mapping (``fhir.bundle``), canonical JSON (``cjson.dumps``), zlib, HPKE encryption, Ed25519
signature, the chain hash, the SQLite append transaction (``synchronous=FULL``: fsync at commit),
and on the upload side the lease and the ack (DELETE + fsync) of one batch.

``python -m bench.breakdown --cprofile`` also prints a cProfile of ``_seal_and_append`` on bulk
batches (function-level, with cProfile's own overhead inflating the pure-Python parts).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import hashlib
import pstats
import tempfile
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.common import Keys, gateway_info, mixed_readings, quiet_logs, say, spo2_stream
from buffer.outbox import ChainHead, NewRecord, Outbox
from gateway.fhir import observation as fhir
from gateway.model import Measurement
from gateway.pipeline.dbthread import DatabaseThread
from gateway.pipeline.ingest import IngestWriter, Lane, _Item
from gateway.seal import cjson, wire
from gateway.seal.sealing import AEAD_AES_256_GCM, KDF_HKDF_SHA256, KEM_IDS, SuiteName, hpke_suite

UPLOAD_BATCH = 500  # UploadSettings.batch_max_records


@dataclass(frozen=True, slots=True)
class Breakdown:
    shape: str
    per_record: int  # readings per record
    per_txn: int  # readings per append transaction
    us_per_reading: dict[str, float]
    sealed_bytes_per_reading: float

    @property
    def total_us(self) -> float:
        return sum(self.us_per_reading.values())


class _Laps:
    """Accumulates the time between consecutive ``lap`` calls under the lap's name."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self._t = time.perf_counter()

    def start(self) -> None:
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.totals[name] = self.totals.get(name, 0.0) + now - self._t
        self._t = now


def _header(gateway_id: str, seq: int, flags: int) -> wire.RecordHeader:
    return wire.RecordHeader(
        kind=wire.RecordKind.OBSERVATIONS,
        lane=int(Lane.SPOT),
        flags=flags,
        kem_id=KEM_IDS[SuiteName.X25519],
        kdf_id=KDF_HKDF_SHA256,
        aead_id=AEAD_AES_256_GCM,
        epoch=1,
        seq=seq,
        created_ms=time.time_ns() // 1_000_000,
        prev_hash=wire.GENESIS_HASH,
        gateway_id=gateway_id,
    )


def _crypto_stages(groups: Sequence[Sequence[Measurement]], keys: Keys) -> dict[str, float]:
    """Seconds per record for each sealing step (the steps of RecordSealer.seal, in order)."""
    gw = gateway_info()
    suite, provider = hpke_suite(keys.sealer().suite_name), keys.provider.public_key()
    laps = _Laps()
    for i, group in enumerate(groups):
        header = _header(gw.gateway_id, i + 1, wire.FLAG_ZLIB)
        laps.start()
        bundle = fhir.bundle(group, gw)
        laps.lap("fhir")
        plaintext = cjson.dumps(bundle)
        laps.lap("json")
        packed = zlib.compress(plaintext, 6)
        laps.lap("zlib")
        ciphertext = suite.encrypt(packed, provider, info=header.hpke_info())
        laps.lap("hpke")
        signature = keys.signing.sign(
            wire.SIGNING_CONTEXT + wire.signed_part(header, ciphertext)
        )
        laps.lap("sign")
        hashlib.sha256(wire.assemble(header, ciphertext, signature)).digest()
        laps.lap("hash")
    return {k: v / len(groups) for k, v in laps.totals.items()}


def _sealed(readings: Sequence[Measurement], per_record: int, keys: Keys) -> list[bytes]:
    sealer, gw = keys.sealer(), gateway_info()
    return [
        sealer.seal(
            cjson.dumps(fhir.bundle(readings[i : i + per_record], gw)),
            kind=wire.RecordKind.OBSERVATIONS,
            lane=int(Lane.SPOT),
            epoch=1,
            seq=i + 1,
            prev_hash=wire.GENESIS_HASH,
            created_ms=0,
        )
        for i in range(0, len(readings), per_record)
    ]


def _outbox_stages(
    records: Sequence[bytes], records_per_txn: int, db_path: Path
) -> tuple[float, float, float]:
    """Seconds per append transaction, per lease of an upload batch, per ack of that batch."""
    outbox = Outbox(db_path)
    laps = _Laps()
    appends = batches = 0
    try:
        for start in range(0, len(records), records_per_txn):
            head = outbox.head()
            chunk = records[start : start + records_per_txn]
            new = [
                NewRecord(head.seq + 1 + j, head.epoch, int(Lane.SPOT), 1, 0, rec)
                for j, rec in enumerate(chunk)
            ]
            last = ChainHead(head.epoch, head.seq + len(new), wire.record_hash(chunk[-1]))
            laps.start()
            outbox.append(new, last)
            laps.lap("append")
            appends += 1
        while True:
            laps.start()
            batch = outbox.lease(UPLOAD_BATCH, 256 * 1024)
            laps.lap("lease")
            if not batch:
                break
            outbox.ack([r.seq for r in batch])
            laps.lap("ack")
            batches += 1
    finally:
        outbox.close()
    t = laps.totals
    return t["append"] / appends, t["lease"] / max(1, batches), t["ack"] / max(1, batches)


def breakdown(
    shape: str, readings: Sequence[Measurement], per_record: int, per_txn: int, workdir: Path
) -> Breakdown:
    keys = Keys.generate()
    groups = [readings[i : i + per_record] for i in range(0, len(readings), per_record)]
    per_rec = _crypto_stages(groups, keys)
    records = _sealed(readings, per_record, keys)
    records_per_txn = max(1, per_txn // per_record)
    append_s, lease_s, ack_s = _outbox_stages(
        records, records_per_txn, workdir / f"profile-{shape}.db"
    )
    readings_per_batch = min(UPLOAD_BATCH, (256 * 1024) // len(records[0]) or 1) * per_record
    us = {k: v * 1e6 / per_record for k, v in per_rec.items()}
    us["sqlite_append"] = append_s * 1e6 / (records_per_txn * per_record)
    us["lease"] = lease_s * 1e6 / readings_per_batch
    us["ack"] = ack_s * 1e6 / readings_per_batch
    sealed = sum(len(r) for r in records) / len(readings)
    return Breakdown(shape, per_record, records_per_txn * per_record, us, sealed)


LABELS = {
    "fhir": "FHIR mapping (fhir.bundle)",
    "json": "canonical JSON (cjson.dumps)",
    "zlib": "zlib level 6",
    "hpke": "HPKE X25519 / AES-256-GCM",
    "sign": "Ed25519 signature",
    "hash": "SHA-256 chain hash",
    "sqlite_append": "SQLite append txn + fsync",
    "lease": "upload: lease (SELECT)",
    "ack": "upload: ack (DELETE + fsync)",
}


def measure(workdir: Path, quick: bool) -> list[Breakdown]:
    n_bulk, n_single = (1024, 100) if quick else (4096, 400)
    results = [
        breakdown("bulk", mixed_readings(n_bulk), 256, 4096, workdir),
        breakdown("single", spo2_stream(n_single), 1, 1, workdir),
    ]
    for b in results:
        total = b.total_us
        say(
            f"profile  {b.shape}: {b.per_record} reading(s)/record, {b.per_txn} per transaction: "
            f"{total:.0f} us of database-thread work per reading "
            f"(={1e6 / total:.0f} readings/s on one core), {b.sealed_bytes_per_reading:.0f} "
            "sealed bytes/reading"
        )
        for key, us in sorted(b.us_per_reading.items(), key=lambda kv: -kv[1]):
            share = 100 * us / total
            say(f"profile  {b.shape:6s} {us:8.1f} us/reading {share:5.1f} %  {LABELS[key]}")
    return results


def cprofile_bulk(readings: int, workdir: Path) -> None:
    """cProfile of ``IngestWriter._seal_and_append`` on bulk batches of 4096 one-reading items
    (the batches the ingest benchmark hands the database thread), run here on the main thread so
    the profiler sees it. Private names on purpose: this is the function the thread runs."""

    async def go() -> None:
        keys = Keys.generate()
        outbox = Outbox(workdir / "cprofile.db")
        db = DatabaseThread()
        writer = IngestWriter(outbox, keys.sealer(), gateway_info(), db)
        items = [
            _Item(wire.RecordKind.OBSERVATIONS, Lane.SPOT, measurements=(m,))
            for m in mixed_readings(readings)
        ]
        prof = cProfile.Profile()
        prof.enable()
        for start in range(0, readings, 4096):
            writer._seal_and_append(items[start : start + 4096])
        prof.disable()
        outbox.close()
        db.shutdown()
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)

    asyncio.run(go())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cprofile", action="store_true", help="also print a cProfile")
    args = parser.parse_args()
    quiet_logs()
    with tempfile.TemporaryDirectory(prefix="hcg-bench-") as tmp:
        measure(Path(tmp), args.quick)
        if args.cprofile:
            cprofile_bulk(4096 * 2, Path(tmp))


if __name__ == "__main__":
    main()
