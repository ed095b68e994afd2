"""Ingest throughput: readings per second through FHIR mapping, sealing and durable group commit.

N readings from eight simulated devices are handed to the real :class:`IngestWriter` (daemon
defaults: 2 ms commit window, X25519 suite, SQLite WAL with ``synchronous=FULL``) one reading per
``enqueue``, as the drivers' pumps do; the clock stops when every reading's future has resolved,
i.e. when its record is durable. Readings are built before the clock starts (that is driver work).

Standalone: ``python -m bench.ingest [--readings N] [--runs R]``.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import BenchError, Keys, median, mixed_readings, open_pipeline, quiet_logs, say


@dataclass(frozen=True, slots=True)
class IngestRun:
    readings: int
    seconds: float
    records: int
    sealed_bytes: int

    @property
    def per_s(self) -> float:
        return self.readings / self.seconds


async def _run_once(readings: int, db_path: Path, keys: Keys) -> IngestRun:
    items = mixed_readings(readings)
    async with open_pipeline(db_path, keys) as p:
        start = time.perf_counter()
        futures = [await p.writer.enqueue([m]) for m in items]
        await asyncio.gather(*futures)
        elapsed = time.perf_counter() - start
        stats = await p.db.run(p.outbox.stats)
    if stats.depth != p.writer.committed_records or p.writer.committed_readings != readings:
        raise BenchError("ingest: the outbox does not hold what was submitted")
    return IngestRun(readings, elapsed, stats.depth, stats.bytes)


def run_once(readings: int, db_path: Path, keys: Keys | None = None) -> IngestRun:
    """One measured run; leaves the filled outbox at ``db_path`` (the drain benchmark uses it)."""
    return asyncio.run(_run_once(readings, db_path, keys or Keys.generate()))


def measure(readings: int, runs: int, workdir: Path) -> tuple[list[IngestRun], Path]:
    """``runs`` runs, each into a fresh outbox; returns them and the last run's outbox file."""
    results: list[IngestRun] = []
    last = workdir / "ingest-0.db"
    for i in range(runs):
        last = workdir / f"ingest-{i}.db"
        r = run_once(readings, last)
        results.append(r)
        say(
            f"ingest   run {i + 1}/{runs}: {r.per_s:8.0f} readings/s  ({r.readings} readings in "
            f"{r.seconds:.2f} s -> {r.records} records, {r.sealed_bytes / r.readings:.1f} sealed "
            "bytes/reading)"
        )
    return results, last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--readings", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    quiet_logs()
    with tempfile.TemporaryDirectory(prefix="hcg-bench-") as tmp:
        runs, _ = measure(args.readings, args.runs, Path(tmp))
    say(f"ingest_per_s median {median([r.per_s for r in runs]):.0f}")


if __name__ == "__main__":
    main()
