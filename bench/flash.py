"""Flash wear: bytes gatewayd writes to storage per reading and per day at a home load.

The home load (issue 17): one continuous stream at 1 reading/s (a pulse oximeter, lane STREAM,
sealed in 30-s chunks, staged every ``outbox.stage_interval_s``), 20 spot readings a day, a
health report every 60 s. Counted from ``write_bytes`` of ``/proc/<pid>/io`` of the daemon (all
its threads, and children it has reaped). What that counter includes and what it does not:

* writes through the page cache count when a page becomes dirty: 4 KiB however few bytes of it
  changed, again each time a page already written back is changed again (SQLite's WAL frames,
  checkpoints, ack deletes; the WAL index is a shared mapping, counted the same way);
* direct I/O (``O_DIRECT``: the staging slots, buffer/staging.py) counts the bytes submitted,
  whole 512-byte blocks;
* not included: the filesystem's own journal and metadata (written by kernel threads), and
  whatever the flash controller does below the block layer (a 512-byte write may still program
  a whole flash page and add to garbage collection). So this is bytes handed to the block layer
  on the process's behalf, a lower bound of what the flash sees.

Two windows on a fresh state directory each run (``make bench``: 60 s and 20 s; ``--quick``
30 s and 20 s):

* the stream and the health reports, extrapolated to a day (``rate * 86400``);
* spot readings alone, one every ``SPOT_INTERVAL_S``, to price one spot reading; 20 of them are
  added to the day.

Run alone: ``python -m bench.flash [--runs N] [--quick]`` (1.5 minutes a run).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import address, median, quiet_logs, say
from bench.rig import BenchRig, Daemon, SimDevice
from provider.broker import MosquittoBroker

STREAM = (SimDevice("pulse-oximeter", address(0x40), 1.0, stream=True),)
SPOT_INTERVAL_S = 2.0
SPOTS = (SimDevice("thermometer", address(0x41), SPOT_INTERVAL_S),)
SPOTS_PER_DAY = 20
DAY_S = 86_400
WARMUP_S = 10.0


def write_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        key, _, value = line.partition(":")
        if key == "write_bytes":
            return int(value)
    raise KeyError("write_bytes")  # pragma: no cover - every Linux since 2.6.20 has it


@dataclass(frozen=True, slots=True)
class FlashRun:
    stream_bytes_per_s: float  # the stream and health reports
    bytes_per_stream_reading: float
    bytes_per_spot_reading: float
    mb_per_day: float  # home load: the stream, health, and SPOTS_PER_DAY spot readings


def _window(daemon: Daemon, warmup_s: float, window_s: float) -> tuple[float, float]:
    time.sleep(warmup_s)
    t0, b0 = time.monotonic(), write_bytes(daemon.pid)
    time.sleep(window_s)
    t1, b1 = time.monotonic(), write_bytes(daemon.pid)
    return b1 - b0, t1 - t0


def flash_once(
    rig: BenchRig,
    broker: MosquittoBroker,
    workdir: Path,
    run: int,
    window_s: float,
    *,
    stage_interval_s: float | None = None,
) -> FlashRun:
    config = rig.write_config(broker, workdir / f"flash-{run}", STREAM)
    if stage_interval_s is not None:
        extra = f"\n[outbox]\nstage_interval_s = {stage_interval_s}\n"
        config.write_text(config.read_text() + extra)
    stream = Daemon(config, workdir, f"flash-{run}")
    try:
        stream.start()
        # The window spans whole chunk periods (30 s) and health intervals (60 s), so it holds
        # the same number of chunk seals and health reports whatever the phase.
        written, seconds = _window(stream, WARMUP_S, window_s)
        stream.stop()
    finally:
        stream.kill()
    spot = Daemon(rig.write_config(broker, workdir / f"flash-spot-{run}", SPOTS), workdir,
                  f"flash-spot-{run}")
    try:
        spot.start()
        spot_written, spot_seconds = _window(spot, 5.0, 20.0)
        spot.stop()
    finally:
        spot.kill()
    rate = written / seconds
    per_spot = spot_written / (spot_seconds / SPOT_INTERVAL_S)
    return FlashRun(
        stream_bytes_per_s=rate,
        bytes_per_stream_reading=rate * STREAM[0].interval_s,
        bytes_per_spot_reading=per_spot,
        mb_per_day=(rate * DAY_S + SPOTS_PER_DAY * per_spot) / 1e6,
    )


def measure(
    rig: BenchRig, workdir: Path, runs: int, quick: bool, stage_interval_s: float | None = None
) -> list[FlashRun]:
    broker = rig.start_broker("flash")
    window_s = 30.0 if quick else 60.0
    results = []
    for i in range(runs):
        r = flash_once(rig, broker, workdir, i, window_s, stage_interval_s=stage_interval_s)
        results.append(r)
        say(
            f"flash    run {i + 1}/{runs}: {r.mb_per_day:7.1f} MB/day at the home load "
            f"({r.bytes_per_stream_reading:,.0f} bytes written per stream reading incl. health "
            f"over {window_s:.0f} s; {r.bytes_per_spot_reading:,.0f} per spot reading)"
        )
    say(f"flash    median {median([r.mb_per_day for r in results]):.1f} MB/day")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.flash", description="flash wear at the home load, alone",
        epilog="example: python -m bench.flash --runs 5",
    )
    parser.add_argument("--runs", type=int, default=3, help="runs (default 3), median printed")
    parser.add_argument("--quick", action="store_true", help="30-s windows instead of 60 s")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    quiet_logs()
    with tempfile.TemporaryDirectory(prefix="hcg-bench-") as tmp:
        rig = BenchRig(Path(tmp))
        try:
            measure(rig, Path(tmp), args.runs, args.quick)
        finally:
            rig.close()


if __name__ == "__main__":
    main()
