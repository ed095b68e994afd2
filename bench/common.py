"""What every benchmark shares: readings, an in-process pipeline, statistics, the machine.

Human-readable lines go to stdout as figures are measured (:func:`say`); logs of the gateway code
go to stderr at warning level, so the last stdout line stays the one JSON object of ``bench``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from buffer.capacity import CapacityPolicy
from buffer.outbox import Outbox
from gateway import __version__, logs
from gateway.fhir import observation as fhir
from gateway.model import DeviceId, DeviceIdKind, Measurement, TimeQuality
from gateway.pipeline.dbthread import DatabaseThread
from gateway.pipeline.ingest import IngestWriter
from gateway.seal.sealing import RecordSealer
from rig.devices import expected_reading

GATEWAY_ID = "gw-bench-0001"
EPISODE_ID = "ep-bench"
QUOTA_BYTES = 256 * 1024 * 1024  # the daemon's default outbox.quota_bytes
COMMIT_WINDOW_S = 0.002  # the daemon's default outbox.commit_window_ms
SIM_KINDS = ("pulse-oximeter", "thermometer", "blood-pressure")


@dataclass(frozen=True, slots=True)
class Window:
    """A measuring window on a running daemon, after a warm-up (seconds)."""

    warmup_s: float
    window_s: float


class BenchError(Exception):
    """A benchmark could not measure what it set out to (timeout, broker, daemon failure)."""


def say(line: str) -> None:
    print(line, flush=True)


def quiet_logs() -> None:
    # The gateway's structlog output to stderr, warnings and errors only: a benchmark that prints
    # a debug line per commit would measure the logging and break the "last line is JSON" rule.
    logs.configure("warning", json=True)


def median(values: Sequence[float]) -> float:
    if not values:
        raise BenchError("no samples")
    return float(statistics.median(values))


def percentile(values: Sequence[float], pct: int) -> float:
    """Inclusive-method percentile (``pct`` in 1..99); the single sample when there is one."""
    if not values:
        raise BenchError("no samples")
    if len(values) == 1:
        return float(values[0])
    return float(statistics.quantiles(values, n=100, method="inclusive")[pct - 1])


def address(i: int) -> str:
    return f"00:1b:dc:be:00:{i:02x}"


def reading(kind: str, addr: str, n: int, received_at: datetime) -> Measurement:
    """Reading ``n`` of a simulated device, built as :class:`rig.devices.SimulatedDevice`
    builds it (same values, precision, units, raw bytes and record id)."""
    exp = expected_reading(kind, addr, n)
    return Measurement(
        device=DeviceId(DeviceIdKind.BTMAC, addr),
        mdc_code=exp.mdc_code,
        value=exp.value,
        unit=exp.unit,
        received_at=received_at,
        source=f"sim.{kind}",
        raw=n.to_bytes(4, "big"),
        device_time=received_at.replace(microsecond=0),
        time_quality=TimeQuality.SYNCED,
        components=exp.components,
        device_record_id=n,
    )


def mixed_readings(count: int, devices: int = 8) -> list[Measurement]:
    """``count`` readings from ``devices`` simulated devices in turn (the three simulated kinds)."""
    start = datetime.now(UTC)
    return [
        reading(
            SIM_KINDS[(i % devices) % len(SIM_KINDS)],
            address(i % devices),
            i // devices + 1,
            start + timedelta(milliseconds=i),
        )
        for i in range(count)
    ]


def spo2_stream(count: int, hz: float = 1.0) -> list[Measurement]:
    """``count`` readings of one continuous pulse oximeter at ``hz`` readings per second."""
    start = datetime.now(UTC).replace(microsecond=0)
    step = timedelta(seconds=1 / hz)
    return [
        reading("pulse-oximeter", address(0), n + 1, start + n * step) for n in range(count)
    ]


def gateway_info() -> fhir.GatewayInfo:
    return fhir.GatewayInfo(
        gateway_id=GATEWAY_ID,
        episode_id=EPISODE_ID,
        eui64=None,
        time_sync="ntp",
        software_version=__version__,
    )


@dataclass(frozen=True, slots=True)
class Keys:
    signing: ed25519.Ed25519PrivateKey
    provider: x25519.X25519PrivateKey

    @classmethod
    def generate(cls) -> Keys:
        return cls(ed25519.Ed25519PrivateKey.generate(), x25519.X25519PrivateKey.generate())

    def sealer(self) -> RecordSealer:
        return RecordSealer(GATEWAY_ID, self.signing, self.provider.public_key())


class Pipeline:
    """The daemon's ingest half, in-process: database thread, outbox, sealer, IngestWriter.

    Built with the daemon's defaults (2 ms commit window, 256 MB quota policy, X25519 suite).
    Use as ``async with open_pipeline(path, keys) as p:``.
    """

    def __init__(self, db: DatabaseThread, outbox: Outbox, writer: IngestWriter) -> None:
        self.db = db
        self.outbox = outbox
        self.writer = writer


@contextlib.asynccontextmanager
async def open_pipeline(
    path: Path, keys: Keys, *, stream_chunk_s: float = 0.0
) -> AsyncIterator[Pipeline]:
    db = DatabaseThread()
    outbox = await db.run(Outbox, path)
    writer = IngestWriter(
        outbox,
        keys.sealer(),
        gateway_info(),
        db,
        window_s=COMMIT_WINDOW_S,
        policy=CapacityPolicy(QUOTA_BYTES),
        stream_chunk_s=stream_chunk_s,
    )
    task = asyncio.create_task(writer.run(), name="bench.ingest.writer")
    try:
        yield Pipeline(db, outbox, writer)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await db.run(outbox.close)
        db.shutdown()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def code_version() -> dict[str, Any]:
    """The commit measured, and whether the product code differed from it (read-only git)."""
    root = Path(__file__).resolve().parent.parent
    git = shutil.which("git")
    if git is None:
        return {}
    try:
        head = subprocess.run(  # noqa: S603 - git found on PATH, fixed arguments
            [git, "-C", str(root), "rev-parse", "--short", "HEAD"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        dirty = subprocess.run(  # noqa: S603 - as above; --no-optional-locks: never writes
            [git, "--no-optional-locks", "-C", str(root), "diff", "--quiet", "HEAD", "--",
             "gateway", "buffer", "drivers", "provisioning"],
            check=False,
            capture_output=True,
        ).returncode != 0
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {"git_head": head, "product_code_modified": dirty}


def machine_info() -> dict[str, Any]:
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {
        "cores": os.cpu_count(),
        "cpu": cpu_model(),
        "ram_mb": mem_kb // 1024,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "kernel": platform.release(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "executable": sys.executable,
        **code_version(),
    }
