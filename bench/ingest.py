"""Ingest throughput: readings per second through FHIR mapping, sealing and durable group commit.

Prints one JSON object. Median of several runs (machines here are shared and noisy).
Usage: .venv/bin/python -m bench.ingest [--readings N] [--runs R]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from buffer.outbox import Outbox
from gateway.dbthread import DatabaseThread
from gateway.ingest import IngestWriter
from gateway.sealing import RecordSealer
from tests.factories import make_gateway_info, make_measurement


async def one_run(readings: int, workdir: Path) -> tuple[float, int, int]:
    gw = make_gateway_info()
    sealer = RecordSealer(
        gw.gateway_id,
        ed25519.Ed25519PrivateKey.generate(),
        x25519.X25519PrivateKey.generate().public_key(),
    )
    db = DatabaseThread()
    outbox = await db.run(Outbox, workdir / "bench.db")
    writer = IngestWriter(outbox, sealer, gw, db)
    task = asyncio.create_task(writer.run())
    items = [make_measurement(device_record_id=i) for i in range(readings)]
    start = time.perf_counter()
    futures = [await writer.enqueue([m]) for m in items]
    await asyncio.gather(*futures)
    elapsed = time.perf_counter() - start
    stats = await db.run(outbox.stats)
    task.cancel()
    await db.run(outbox.close)
    db.shutdown()
    return readings / elapsed, stats.depth, stats.bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--readings", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rates, records, size = [], 0, 0
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            rate, records, size = asyncio.run(one_run(args.readings, Path(tmp)))
            rates.append(rate)
    print(
        json.dumps(
            {
                "ingest_per_s": round(statistics.median(rates)),
                "ingest_runs_per_s": [round(r) for r in rates],
                "records_per_run": records,
                "disk_bytes_per_reading": round(size / args.readings, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
