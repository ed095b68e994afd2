"""``python -m bench`` (what ``make bench`` runs): every benchmark, then one JSON line.

One human-readable line per figure goes to stdout as it is measured; the LAST line of stdout is
one JSON object with the figures the product owner asked for (medians of ``--runs`` runs), plus
``targets_met`` and ``machine``. Gateway logs go to stderr (warnings only). Loopback only: a local
mosquitto per benchmark, temporary files under the system temp directory, all removed at the end.
A benchmark that cannot measure (broker, daemon or timeout failure) stops the suite with exit
status 1 and no JSON line, rather than print a figure that was not measured.

Examples::

    python -m bench                 # the full suite, 3 runs each (8-9 minutes on 2 cores)
    python -m bench --quick         # a smoke run: 1 run, small sizes, short windows (<1 minute)
    python -m bench --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import alarm, breakdown, daemon, drain, flash, ingest, latency, wire
from bench.common import BenchError, Window, machine_info, median, quiet_logs, say
from bench.rig import BenchRig
from gateway.errors import GatewayError

# key -> (direction, target): ">=" figures must reach the target, "<=" must stay within it.
# latency_p50_ms, disk_bytes_per_reading, cpu_pct_spot_load and flash_bytes_per_stream_reading
# have no target of their own. flash_mb_per_day: bytes gatewayd wrote at the home load (one 1-Hz
# stream, 20 spot readings a day, health every 60 s; bench/flash.py), extrapolated to a day.
# cpu_pct_idle_load is a continuous stream at 10 readings/s; cpu_pct_spot_load the same rate as
# spot readings, each sent alone (bench/latency.py).
TARGETS: dict[str, tuple[str, float]] = {
    "ingest_per_s": (">=", 20_000),
    "drain_per_s": (">=", 20_000),
    "latency_p99_ms": ("<=", 50),
    "rss_mb": ("<=", 60),
    "startup_s": ("<=", 1.0),
    "wire_bytes_per_reading": ("<=", 150),
    "cpu_pct_idle_load": ("<=", 1.0),
    "flash_mb_per_day": ("<=", 250),
    # device alarm condition -> verified at the provider (bench/alarm.py), idle and under a
    # 10 readings/s stream
    "alarm_p99_ms_idle": ("<=", 1000),
    "alarm_p99_ms_stream": ("<=", 1000),
}


@dataclass(frozen=True, slots=True)
class Sizes:
    ingest_readings: int
    drain_readings: int
    load: Window  # latency and CPU at 10 readings/s
    rss: Window
    wire_readings: int
    alarm_episodes: int  # desaturation episodes a run: two alarms each (onset, end)

    @classmethod
    def for_mode(cls, quick: bool) -> Sizes:
        if quick:
            return cls(5_000, 2_000, Window(2.0, 5.0), Window(3.0, 3.0), 60, 3)
        return cls(20_000, 10_000, Window(3.0, 20.0), Window(8.0, 7.0), 300, 10)


def run_all(rig: BenchRig, work: Path, runs: int, sizes: Sizes, quick: bool) -> dict[str, float]:
    ingest_runs, ingest_db = ingest.measure(sizes.ingest_readings, runs, work)
    say(f"ingest   median {median([r.per_s for r in ingest_runs]):.0f} readings/s")
    stream_runs, _, stream_db = drain.measure(
        rig, work, runs, sizes.drain_readings, (ingest_db, sizes.ingest_readings)
    )
    load_runs = latency.measure(rig, work, runs, sizes.load)
    stream_cpu = latency.measure_stream(rig, work, runs, quick)
    rss_runs = daemon.measure_rss(rig, work, runs, sizes.rss)
    startups = daemon.measure_startup(rig, work, runs, (stream_db, sizes.drain_readings))
    wire_runs = wire.measure(sizes.wire_readings, runs, work)
    flash_runs = flash.measure(rig, work, runs, quick)
    alarm_idle, alarm_stream = alarm.measure(rig, work, runs, sizes.alarm_episodes)
    breakdown.measure(work, quick)
    return {
        "ingest_per_s": round(median([r.per_s for r in ingest_runs])),
        "drain_per_s": round(median([r.per_s for r in stream_runs])),
        "latency_p50_ms": round(median([r.p50_ms for r in load_runs]), 1),
        "latency_p99_ms": round(median([r.p99_ms for r in load_runs]), 1),
        "rss_mb": round(median([r.rss_mb for r in rss_runs]), 1),
        "startup_s": round(median(startups), 3),
        "wire_bytes_per_reading": round(median([r.payload_bytes for r in wire_runs]), 1),
        "disk_bytes_per_reading": round(median([r.disk_bytes for r in wire_runs]), 1),
        "cpu_pct_idle_load": round(median([r.cpu_pct for r in stream_cpu]), 2),
        "cpu_pct_spot_load": round(median([r.cpu_pct for r in load_runs]), 2),
        "flash_mb_per_day": round(median([r.mb_per_day for r in flash_runs]), 1),
        "flash_bytes_per_stream_reading": round(
            median([r.bytes_per_stream_reading for r in flash_runs])
        ),
        "alarm_p50_ms_idle": round(median([r.p50_ms for r in alarm_idle])),
        "alarm_p99_ms_idle": round(median([r.p99_ms for r in alarm_idle])),
        "alarm_p50_ms_stream": round(median([r.p50_ms for r in alarm_stream])),
        "alarm_p99_ms_stream": round(median([r.p99_ms for r in alarm_stream])),
    }


def targets_met(figures: dict[str, float]) -> dict[str, bool]:
    return {
        key: figures[key] >= target if op == ">=" else figures[key] <= target
        for key, (op, target) in TARGETS.items()
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="homecare-gateway benchmarks: one line per figure, then one JSON line.",
        epilog="example: python -m bench --quick",
    )
    parser.add_argument("--runs", type=int, help="runs per benchmark (default 3; 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    args = parser.parse_args(argv)
    runs = args.runs or (1 if args.quick else 3)
    if runs < 1:
        parser.error("--runs must be at least 1")
    quiet_logs()
    machine = machine_info()
    say(
        f"machine  {machine['cores']} cores {machine['cpu']}, {machine['ram_mb']} MB RAM, "
        f"Python {machine['python']}, SQLite {machine['sqlite']}, load average "
        f"{machine['loadavg_at_start'][0]} at start; {runs} run(s) per figure, medians"
    )
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="hcg-bench-") as tmp:
            rig = BenchRig(Path(tmp))
            try:
                figures = run_all(rig, Path(tmp), runs, Sizes.for_mode(args.quick), args.quick)
            finally:
                rig.close()
    except (BenchError, GatewayError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    machine["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    machine["bench_runs"] = runs
    machine["bench_quick"] = args.quick
    machine["bench_seconds"] = round(time.monotonic() - started, 1)
    met = targets_met(figures)
    say(
        "targets  "
        + ", ".join(f"{k} {'met' if ok else 'MISSED'}" for k, ok in met.items())
    )
    result: dict[str, Any] = {**figures, "targets_met": met, "machine": machine}
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
