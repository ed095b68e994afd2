"""Health reports: so the command centre can tell "nothing measured" from "something broke".

Every ``interval_s`` (and once at start) the gateway seals a health record (kind HEALTH, lane
HEALTH, its own MQTT topic) with the state of the outbox, the uplink, the ingest writer, every
bound device (last seen, silent longer than expected, battery), the clock and the TLS client
certificate. It goes through the outbox like any record, so reports written during an outage
arrive afterwards, in order, with the outage visible in them. No clinical value is ever in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import structlog
from cryptography import x509

from buffer.outbox import Outbox, OutboxStats
from gateway import __version__
from gateway import alarms as alarms_
from gateway.errors import GatewayError
from gateway.pipeline.dbthread import DatabaseThread
from gateway.pipeline.ingest import IngestWriter, Lane, QuotaExceededError
from gateway.pipeline.supervise import Supervisors
from gateway.pipeline.watchdog import LoopWatch
from gateway.seal import wire

log = structlog.get_logger("gateway.health")

SILENT_FACTOR = 3.0  # a device is "silent" after this many of its expected intervals
# A device that sent input we refused (malformed, oversize) keeps its alarm this long after.
REJECTED_INPUT_ALARM_S = 900.0


@dataclass(frozen=True, slots=True)
class DeviceHealth:
    device: str  # DeviceId as text (kind:value), an identifier, not a clinical value
    driver: str
    state: str  # e.g. "streaming", "connected", "out-of-range", "waiting"
    last_seen: datetime | None
    expected_interval_s: float | None
    readings: int
    battery_pct: int | None = None
    rssi_dbm: int | None = None
    port: str | None = None  # a serial device's port path (its stable udev name)
    # BLE: readings the device sent again that were recognised as already stored (PHD IG: equal
    # readings with one device timestamp are one reading) and not handed over; None elsewhere.
    duplicates: int | None = None
    rejected_input: int = 0  # frames, records or notifications refused as malformed / oversize
    last_rejected: datetime | None = None

    def rejecting(self, now: datetime) -> bool:
        return (
            self.last_rejected is not None
            and (now - self.last_rejected).total_seconds() < REJECTED_INPUT_ALARM_S
        )

    def silent(self, now: datetime) -> bool:
        if self.expected_interval_s is None:
            return False
        if self.last_seen is None:
            return True
        return (now - self.last_seen).total_seconds() > SILENT_FACTOR * self.expected_interval_s

    def as_json(self, now: datetime) -> dict[str, Any]:
        return {
            "device": self.device,
            "driver": self.driver,
            "state": self.state,
            "last_seen": self.last_seen.isoformat() if self.last_seen else None,
            "expected_interval_s": self.expected_interval_s,
            "silent": self.silent(now),
            "readings": self.readings,
            "battery_pct": self.battery_pct,
            "rssi_dbm": self.rssi_dbm,
            "port": self.port,
            "duplicates": self.duplicates,
            "rejected_input": self.rejected_input,
            "last_rejected": self.last_rejected.isoformat() if self.last_rejected else None,
        }


class ReportsHealth(Protocol):
    def health(self) -> Sequence[DeviceHealth]: ...


class PowerView(Protocol):
    """The router's power supply (gateway/power/monitor.py), as the report shows it."""

    def snapshot(self) -> dict[str, Any]: ...

    def alarms(self) -> list[str]: ...

    async def reported(self) -> None:
        """A report with this snapshot was sealed (the power-cut marker has done its job)."""
        ...


# Without a [power] table nothing is known about the supply, and the report says so.
NO_POWER = {"state": "unknown", "reason": "no UPS configured"}


class UplinkView(Protocol):
    state: str
    last_error: str | None
    delivered_records: int


def certificate_expiry(cert_file: Path) -> datetime | None:
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    except (OSError, ValueError):
        return None
    return cert.not_valid_after_utc


def clock_sync() -> dict[str, Any]:
    """The NTP state as chrony reports it; ``{"source": "unknown"}`` where chrony is absent."""
    chronyc = shutil.which("chronyc")
    if chronyc is None:
        synced = Path("/run/systemd/timesync/synchronized").exists()
        return {"source": "systemd-timesyncd" if synced else "unknown", "synchronised": synced}
    try:
        out = subprocess.run(  # noqa: S603 - fixed arguments, our own binary lookup
            [chronyc, "-c", "tracking"], capture_output=True, text=True, timeout=2, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {"source": "chrony", "synchronised": False, "error": "chronyc did not answer"}
    fields = out.strip().split(",")
    if len(fields) < 14:
        return {"source": "chrony", "synchronised": False, "error": "unexpected chronyc output"}
    try:
        offset_s = float(fields[4])  # "system time" offset column of the CSV tracking report
        stratum = int(fields[2])
    except ValueError:
        return {"source": "chrony", "synchronised": False, "error": "unexpected chronyc output"}
    return {
        "source": "chrony",
        "synchronised": stratum < 16 and fields[-1].strip() != "Not synchronised",
        "offset_ms": round(offset_s * 1000, 3),
        "stratum": stratum,
    }


def _decimals(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(repr(round(value, 3)))
    if isinstance(value, dict):
        return {k: _decimals(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_decimals(v) for v in value]
    return value


class HealthReporter:
    def __init__(
        self,
        *,
        gateway_id: str,
        episode_id: str,
        writer: IngestWriter,
        outbox: Outbox,
        db: DatabaseThread,
        uplink: UplinkView,
        devices: Sequence[ReportsHealth],
        cert_file: Path,
        interval_s: float,
        clock_probe: Callable[[], dict[str, Any]] = clock_sync,
        links: Mapping[str, Callable[[], dict[str, Any]]] | None = None,
        link_alarms: Callable[[], list[str]] | None = None,
        loops: LoopWatch | None = None,
        power: PowerView | None = None,
        supervisors: Supervisors | None = None,
    ) -> None:
        self._loops = loops
        self._power = power
        self._supervisors = supervisors
        self._links = dict(links or {})
        self._link_alarms = link_alarms
        self._gateway_id = gateway_id
        self._episode_id = episode_id
        self._writer = writer
        self._outbox = outbox
        self._db = db
        self._uplink = uplink
        self._devices = devices
        self._cert_not_after = certificate_expiry(cert_file)
        self.interval_s = interval_s
        self._clock_probe = clock_probe
        self._started = time.monotonic()
        self.reports = 0
        self.alarms: set[str] = set()  # standing alarms raised elsewhere (e.g. outbox-replaced)
        self._interval_changed = asyncio.Event()

    def set_interval(self, interval_s: float) -> None:
        """A new interval (a signed config.set): the current wait ends, the next one is new."""
        self.interval_s = interval_s
        self._interval_changed.set()

    async def snapshot(self) -> dict[str, Any]:
        """The report as JSON-ready data (numbers as Decimal: canonical JSON has no floats)."""
        report: dict[str, Any] = _decimals(await self._collect())
        return report

    async def _collect(self) -> dict[str, Any]:
        now = datetime.now(UTC)
        stats: OutboxStats = await self._db.run(self._outbox.stats)
        clock = await asyncio.to_thread(self._clock_probe)
        devices = [d.as_json(now) for drv in self._devices for d in drv.health()]
        cert_days = (
            round((self._cert_not_after - now).total_seconds() / 86400, 1)
            if self._cert_not_after
            else None
        )
        alarms = sorted(self.alarms)
        alarms += [
            alarms_.about(alarms_.DEVICE_SILENT, d["device"]) for d in devices if d["silent"]
        ]
        alarms += [
            alarms_.about(alarms_.DEVICE_INPUT_REJECTED, str(d.device))
            for drv in self._devices
            for d in drv.health()
            if d.rejecting(now)
        ]
        supervisors = self._supervisors
        if supervisors is not None:
            alarms += [alarms_.about(alarms_.DRIVER_RESTARTING, s) for s in supervisors.failing()]
        if self._writer.last_error:
            alarms.append(alarms_.OUTBOX_COMMIT_FAILING)
        if self._writer.refusing:
            alarms.append(alarms_.OUTBOX_QUOTA_REACHED)
        if getattr(self._writer, "lost_stream_chunks", 0):
            alarms.append(alarms_.STREAM_CHUNK_LOST)
        if getattr(self._uplink, "refused", False):
            alarms.append(alarms_.UPLINK_REFUSED)
        if getattr(self._uplink, "outside_vpn", False):
            alarms.append(alarms_.VPN_DOWN)
        if self._link_alarms is not None:
            alarms += self._link_alarms()
        loops = self._loops.snapshot() if self._loops is not None else {}
        alarms += [
            alarms_.about(alarms_.LOOP_STALLED, name) for name, s in loops.items() if s["stalled"]
        ]
        if cert_days is not None and cert_days < 14:
            alarms.append(alarms_.CERTIFICATE_EXPIRES_SOON)
        power = self._power.snapshot() if self._power is not None else dict(NO_POWER)
        if self._power is not None:
            alarms += self._power.alarms()
        return {
            "type": "health",
            "version": 1,
            "gateway_id": self._gateway_id,
            "episode": self._episode_id,
            "time": now.isoformat(),
            "software_version": __version__,
            "uptime_s": round(time.monotonic() - self._started, 1),
            "outbox": {
                "depth": stats.depth,
                "bytes": stats.bytes,
                "oldest_age_s": stats.oldest_age_s(time.time_ns() // 1_000_000),
                "last_seq": stats.head_seq,
                "epoch": stats.epoch,
                "quota_bytes": self._writer.policy.quota_bytes if self._writer.policy else None,
                "refused_readings": self._writer.gaps.total_refused,
            },
            "ingest": {
                "committed_readings": self._writer.committed_readings,
                "unusable_readings": self._writer.unusable_readings,
                "last_error": self._writer.last_error,
            },
            "uplink": {
                "state": self._uplink.state,
                "delivered_records": self._uplink.delivered_records,
                "last_error": self._uplink.last_error,
                "last_tls_alert": getattr(self._uplink, "last_tls_alert", None),
            },
            "devices": devices,
            "links": {name: probe() for name, probe in self._links.items()},
            "clock": clock,
            "certificate": {
                "not_after": self._cert_not_after.isoformat() if self._cert_not_after else None,
                "days_left": cert_days,
            },
            "loops": loops,
            "power": power,
            "supervision": supervisors.snapshot() if supervisors is not None else {},
            "alarms": alarms,
        }

    async def report_once(self) -> int | None:
        """Seal one health report into the outbox; its sequence number (None: quota reached)."""
        body = await self.snapshot()
        try:
            seq = await self._writer.submit_payload(wire.RecordKind.HEALTH, body, Lane.HEALTH)
        except QuotaExceededError:
            # Health is the first lane refused; the gap records carry the alarm meanwhile.
            log.warning("health.refused_quota", alarms=body["alarms"])
            return None
        self.reports += 1
        if self._power is not None:
            await self._power.reported()
        log.info(
            "health.reported", seq=seq, outbox_depth=body["outbox"]["depth"], alarms=body["alarms"]
        )
        return seq

    async def run(self) -> None:
        while True:
            try:
                await self.report_once()
            except GatewayError as exc:
                # A report that cannot be made (database trouble) must not take the daemon down;
                # the ingest writer's own retries and status carry the real problem.
                log.error("health.report_failed", error=exc.message)  # noqa: TRY400
            self._interval_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._interval_changed.wait(), self.interval_s)
