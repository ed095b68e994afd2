"""gatewayd: the composition root. Everything is built and wired here, nowhere else.

Start-up order: configuration -> keys -> outbox (durable from the first second, broker or not)
-> ingest writer -> uplink -> drivers -> READY. Shutdown on SIGTERM: drivers stop first, the
writer commits what it already holds, then the uplink and the database close.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from buffer.capacity import CapacityPolicy
from buffer.outbox import Outbox
from buffer.recovery import Replacement, open_outbox
from drivers.serial.modem_driver import ModemDriver
from drivers.serial.oximeter_driver import OximeterDriver
from drivers.simulated import SimulatedDevice
from gateway import __version__, ble_config, fhir, logs, serial_config, wire
from gateway.config import DEFAULT_CONFIG_PATH, Config, load
from gateway.control import ControlServer
from gateway.dbthread import DatabaseThread
from gateway.errors import ConfigError, GatewayError
from gateway.health import HealthReporter
from gateway.ingest import IngestWriter, Lane, QuotaExceededError
from gateway.keys import load_provider_mlkem_public, load_provider_x25519_public, load_signing_key
from gateway.linkmon import LinkMonitor, LinkSettings
from gateway.model import Measurement
from gateway.notify import SystemdNotifier
from gateway.sealing import RecordSealer, provider_public_key
from gateway.seams import Driver, Notifier
from gateway.uplink import MqttUplink, UplinkSettings
from gateway.upload import UploadLoop, UploadSettings
from gateway.watchdog import stalled_loops
from provisioning import runtime as provisioning
from provisioning.errors import NotEnrolledError

if TYPE_CHECKING:
    from drivers.ble.agent import PairingAgent

log = structlog.get_logger("gateway.daemon")

WATCHDOG_STALL_S = 120.0  # a critical loop silent this long stops the watchdog pings
SHUTDOWN_FLUSH_S = 10.0
SHUTDOWN_DRAIN_S = 3.0


class _Shutdown(Exception):  # noqa: N818 - a control-flow signal, not an error
    pass


async def pump(
    driver: Driver,
    writer: IngestWriter,
    lane: Lane | Callable[[Measurement], Lane] = Lane.SPOT,
    on_durable: Callable[[Measurement, int], None] | None = None,
) -> None:
    """Move one driver's readings into the outbox; confirm to the driver in order once durable.

    ``lane`` is the driver's lane, or a function choosing it per reading (a BLE oximeter's
    spot-checks and its continuous values). ``on_durable(reading, record seq)`` lets
    install-check follow a device's reading to the provider's acknowledgement (the record leaves
    the outbox only on PUBACK)."""
    lane_of: Callable[[Measurement], Lane] = lane if callable(lane) else (lambda _m: lane)
    confirmations: asyncio.Queue[tuple[asyncio.Future[int], Measurement]] = asyncio.Queue(
        maxsize=1024
    )

    async def confirm() -> None:
        while True:
            fut, m = await confirmations.get()
            try:
                seq = await fut
                if on_durable is not None:
                    on_durable(m, seq)
                await driver.committed([m])
            finally:
                confirmations.task_done()

    async def refused(m: Measurement) -> None:
        # Not stored: the device keeps it (no confirmation); a device with stored records is
        # told to offer it again, and we wait for space rather than refuse reading after reading.
        hook = getattr(driver, "refused", None)
        if hook is not None:
            await hook([m])
        await writer.wait_for_space(lane_of(m))

    confirmer = asyncio.create_task(confirm(), name=f"driver.{driver.name}.confirm")
    try:
        async for m in driver.measurements():
            try:
                fut = await writer.enqueue([m], lane_of(m))
            except QuotaExceededError:
                await refused(m)
                continue
            await confirmations.put((fut, m))
        await confirmations.join()  # a bounded driver ended: wait for its last confirmations
    finally:
        confirmer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await confirmer


def build_drivers(
    cfg: Config,
    writer: IngestWriter | None = None,
    bound: provisioning.BoundDevices | None = None,
) -> list[tuple[Any, Lane | Callable[[Measurement], Lane]]]:
    """Every configured driver with its upload lane (continuous oximetry is a stream).

    With ``bound`` (an enrolled router) only the devices bound to the episode are read, and none
    while the equipment is being returned."""
    bound = bound or provisioning.BoundDevices(intake=True, devices=None)
    drivers: list[tuple[Any, Lane | Callable[[Measurement], Lane]]] = [
        (
            SimulatedDevice(d.kind, d.address, d.interval_s, count=d.count, memory=d.memory),
            Lane.STREAM if d.stream else Lane.SPOT,
        )
        for d in cfg.sim_devices
        if bound.admits_sim(d)
    ]
    unusable = writer.report_unusable if writer is not None else None
    serial = [d for d in cfg.serial_devices if bound.admits_serial(d)]
    for drv in serial_config.build(serial, report_unusable=unusable):
        drivers.append((drv, Lane.STREAM if isinstance(drv, OximeterDriver) else Lane.SPOT))
    ble_devices = ble_for(cfg, bound)
    ble = ble_config.build(ble_devices, cfg.state_dir)
    drivers.extend((drv, ble_config.lanes_of(drv)) for drv in ble)
    return drivers


def ble_for(cfg: Config, bound: provisioning.BoundDevices) -> list[ble_config.BleDeviceConfig]:
    """The BLE devices to read: [[ble_devices]] when not provisioned, else the episode's binding.

    A bound device keeps the adapter and name of a matching [[ble_devices]] entry; one that a
    [[sim_devices]] entry stands in for (same address) is read by the simulator instead.
    """
    if not bound.intake:
        return []
    if bound.devices is None:
        return list(cfg.ble_devices)
    configured = {c.address.upper(): c for c in cfg.ble_devices}
    simulated = {d.address.upper() for d in cfg.sim_devices}
    out = []
    for b in bound.ble():
        address = b.address.upper()
        if address in simulated:
            continue
        known = configured.get(address)
        try:
            out.append(
                ble_config.BleDeviceConfig.from_binding(
                    b, name=known.name if known else "", adapter=known.adapter if known else None
                )
            )
        except ConfigError as exc:  # a binding we cannot read: say so, read the rest
            # The problem is the message (a device the provider must fix); no traceback.
            log.error("provisioning.binding_unusable", device=address, error=exc.one_line())  # noqa: TRY400
    return out


def bluetooth_links(drivers: Sequence[object]) -> dict[str, Callable[[], dict[str, Any]]]:
    """The BLE drivers' shared advertiser tally as a health "link" (none without BLE)."""
    for d in drivers:
        tally = getattr(d, "tally", None)  # only BLE drivers count advertisers
        if tally is not None:
            return {"bluetooth": tally.snapshot}
    return {}


def build_agent(
    devices: Sequence[ble_config.BleDeviceConfig], drivers: Sequence[object]
) -> PairingAgent | None:
    """Our org.bluez.Agent1 for the BLE devices read (none without any); it also tells the BLE
    drivers when bluetoothd goes away."""
    if not devices:
        return None
    from drivers.ble.agent import PairingAgent  # noqa: PLC0415 - BLE stack only when used
    from drivers.ble.session import BleDeviceDriver  # noqa: PLC0415

    agent = PairingAgent({c.address: c.passkey for c in devices})
    for d in drivers:
        if isinstance(d, BleDeviceDriver):
            agent.on_bluez_lost(d.bluez_lost)
    return agent


async def serve(  # noqa: PLR0915 - the one composition root
    cfg: Config, notifier: Notifier, recent: logs.RecentEvents | None = None
) -> None:
    signing_key = load_signing_key(cfg.signing_key)
    provider_key = provider_public_key(
        load_provider_x25519_public(cfg.provider_hpke_public_key),
        load_provider_mlkem_public(cfg.provider_mlkem_public_key)
        if cfg.provider_mlkem_public_key
        else None,
    )
    sealer = RecordSealer(cfg.gateway_id, signing_key, provider_key)
    db = DatabaseThread()
    outbox, replacement = await db.run(open_outbox, cfg.outbox_path)
    stats = await db.run(outbox.stats)
    log.info(
        "outbox.opened",
        depth=stats.depth,
        head_seq=stats.head_seq,
        epoch=stats.epoch,
        suite=str(sealer.suite_name),
    )
    gateway_info = fhir.GatewayInfo(
        gateway_id=cfg.gateway_id,
        episode_id=cfg.episode_id,
        eui64=None,
        time_sync="ntp",
        software_version=__version__,
    )
    writer = IngestWriter(
        outbox,
        sealer,
        gateway_info,
        db,
        window_s=cfg.commit_window_ms / 1000,
        policy=CapacityPolicy(cfg.outbox_quota_bytes),
        stream_chunk_s=cfg.stream_chunk_s,
    )
    uplink = MqttUplink(
        UplinkSettings(
            host=cfg.broker_host,
            port=cfg.broker_port,
            ca_file=cfg.ca_file,
            cert_file=cfg.cert_file,
            key_file=cfg.key_file,
            client_id=cfg.gateway_id,
            keepalive_s=cfg.keepalive_s,
            session_expiry_s=cfg.session_expiry_s,
            vpn_interface=cfg.vpn_interface,
        )
    )
    upload = UploadLoop(
        outbox,
        db,
        uplink,
        UploadSettings(
            topic=cfg.records_topic,
            health_topic=cfg.health_topic,
            batch_max_records=cfg.batch_max_records,
            batch_max_bytes=cfg.batch_max_bytes,
            window=cfg.inflight_batches,
        ),
        writer.committed_event,
    )
    bound = await asyncio.to_thread(provisioning.devices, cfg)
    lanes = build_drivers(cfg, writer, bound)
    drivers = [d for d, _ in lanes]
    durable_seq: dict[str, int] = {}  # device id -> record seq of its latest durable reading
    links = LinkMonitor(
        LinkSettings(
            broker_host=cfg.broker_host,
            broker_port=cfg.broker_port,
            vpn_interface=cfg.vpn_interface,
            wan_interfaces=cfg.wan_interfaces,
            broadband_interfaces=cfg.broadband_interfaces,
        )
    )
    agent = build_agent(ble_for(cfg, bound), drivers)
    health = HealthReporter(
        gateway_id=cfg.gateway_id,
        episode_id=cfg.episode_id,
        writer=writer,
        outbox=outbox,
        db=db,
        uplink=upload,
        devices=drivers,
        cert_file=cfg.cert_file,
        interval_s=cfg.health_interval_s,
        links={
            "vpn": links.vpn_snapshot,
            "wan-route": links.wan_snapshot,  # modems appear under their configured names
            **{d.config.name: d.snapshot for d in drivers if isinstance(d, ModemDriver)},
            # Neighbours' health devices seen (and ignored) by the BLE drivers' discovery.
            **bluetooth_links(drivers),
        },
        link_alarms=links.alarms,
    )

    async def status(_: object) -> dict[str, object]:
        await asyncio.to_thread(links.refresh)  # a technician asking wants the links as of now
        return await health.snapshot()

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    driver_tasks: list[asyncio.Task[None]] = []

    async def stop_intake(_: object) -> dict[str, object]:
        """Equipment return: no more readings; what was handed over is committed first."""
        for t in driver_tasks:
            t.cancel()
        await asyncio.gather(*driver_tasks, return_exceptions=True)
        await writer.drain()
        log.info("provisioning.intake_stopped", drivers=len(driver_tasks))
        return {"stopped_drivers": len(driver_tasks)}

    async def submit_event(request: Any) -> dict[str, object]:
        body = request.get("body")
        if not isinstance(body, dict):
            raise GatewayError("provisioning.event needs a JSON object 'body'")
        seq = await writer.submit_payload(wire.RecordKind.EVENT, body, Lane.ALARM)
        log.info("provisioning.event_sealed", kind=body.get("event"), seq=seq)
        return {"seq": seq}

    async def delivered(request: Any) -> dict[str, object]:
        seqs = [int(s) for s in request.get("seqs", [])]
        pending = await db.run(outbox.pending, seqs)
        return {"pending": sorted(pending)}

    async def bound_devices(_: object) -> list[dict[str, object]]:
        listed = bound.devices or ()
        seqs = [durable_seq[d.address.upper()] for d in listed if d.address.upper() in durable_seq]
        pending = await db.run(outbox.pending, seqs)
        out: list[dict[str, object]] = []
        for d in listed:
            seq = durable_seq.get(d.address.upper())
            out.append(
                {
                    "transport": d.transport,
                    "address": d.address,
                    "profile": d.profile,
                    "durable_seq": seq,
                    "delivered": seq is not None and seq not in pending,
                }
            )
        return out

    async def shutdown(_: object) -> dict[str, object]:
        loop.call_later(0.2, stop.set)  # answer first, then stop
        return {"stopping": True}

    handlers: dict[str, Any] = {"status": status}
    if recent is not None:  # gatewayctl logs where no journal keeps our lines
        handlers["logs"] = recent.answer
    if cfg.provisioning is not None:
        handlers |= {
            "provisioning.devices": bound_devices,
            "provisioning.event": submit_event,
            "provisioning.pending": delivered,
            "return.stop_intake": stop_intake,
            "return.shutdown": shutdown,
        }
    control = ControlServer(cfg.control_socket, handlers)
    try:
        await control.start()
    except OSError as exc:
        # Diagnostics are not worth losing readings over: run on without the control socket.
        log.error("control.unavailable", socket=str(cfg.control_socket), error=str(exc))  # noqa: TRY400

    def note_durable(m: Measurement, seq: int) -> None:
        durable_seq[str(m.device.value).upper()] = seq

    async def seal_lifecycle_event(body: dict[str, Any]) -> int:
        return await writer.submit_payload(wire.RecordKind.EVENT, body, Lane.ALARM)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def watchdog(interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            progress = {"outbox-writer": writer.last_progress, "uplink": upload.last_progress}
            stalled = stalled_loops(loop.time(), progress, WATCHDOG_STALL_S)
            if stalled:
                log.error("watchdog.stalled", loops=stalled)
                continue
            notifier.notify("WATCHDOG=1", _status_line(writer, upload))

    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(writer.run(), name="ingest.writer")
            tg.create_task(upload.run(), name="uplink")
            if replacement is not None:
                health.alarms.add("outbox-replaced")
                tg.create_task(_report_replacement(writer, replacement), name="outbox.replaced")
            tg.create_task(links.run(), name="links")
            tg.create_task(health.run(), name="health")
            tg.create_task(writer.report_gaps(cfg.health_interval_s), name="gaps")
            if agent is not None:
                tg.create_task(agent.run(), name="ble.agent")
            tg.create_task(
                provisioning.report_pending_events(cfg, seal_lifecycle_event),
                name="provisioning.events",
            )
            if cfg.provisioning is not None and bound.intake:
                tg.create_task(provisioning.renewal_task(cfg), name="provisioning.renewal")
            driver_tasks.extend(
                tg.create_task(pump(d, writer, lane, note_durable), name=f"driver.{d.name}")
                for d, lane in lanes
            )
            wd = notifier.watchdog_interval_s() if isinstance(notifier, SystemdNotifier) else None
            if wd:
                tg.create_task(watchdog(wd), name="watchdog")
            notifier.notify("READY=1", _status_line(writer, upload))
            log.info(
                "gateway.ready",
                gateway_id=cfg.gateway_id,
                drivers=len(drivers),
                version=__version__,
            )
            await stop.wait()
            notifier.notify("STOPPING=1")
            log.info("gateway.stopping")
            for t in driver_tasks:
                t.cancel()
            await asyncio.gather(*driver_tasks, return_exceptions=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(writer.drain(), SHUTDOWN_FLUSH_S)
            if upload.connected.is_set():
                # Give the uplink a moment to deliver what was just committed; whatever is left
                # stays durable in the outbox and goes out after the next start.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(_outbox_empty(db, outbox), SHUTDOWN_DRAIN_S)
            raise _Shutdown  # noqa: TRY301 - leaves the TaskGroup, cancelling what is left
    except* _Shutdown:
        pass
    finally:
        await control.close()
        await uplink.close()
        await db.run(outbox.close)
        db.shutdown()
        log.info("gateway.stopped")


async def _report_replacement(writer: IngestWriter, r: Replacement) -> None:
    """Tell the provider that an outbox was damaged and replaced (and the chain restarted)."""
    body = {
        "type": "event",
        "version": 1,
        "event": "outbox-replaced",
        "reason": r.reason,
        "moved_to": list(r.moved_to),
        "previous_epoch": r.previous_epoch,
        "new_epoch": r.new_epoch,
        "time": datetime.now(UTC).isoformat(),
    }
    seq = await writer.submit_payload(wire.RecordKind.EVENT, body, Lane.ALARM)
    log.error("gateway.alarm", alarm="outbox-replaced", seq=seq, new_epoch=r.new_epoch)


async def _outbox_empty(db: DatabaseThread, outbox: Outbox) -> None:
    # Polling is right here: the depth lives in the database thread, not in an awaitable.
    while (await db.run(outbox.stats)).depth:  # noqa: ASYNC110
        await asyncio.sleep(0.05)


def _status_line(writer: IngestWriter, upload: UploadLoop) -> str:
    err = writer.last_error or upload.last_error
    return (
        f"STATUS=uplink {upload.state}; committed {writer.committed_readings} readings; "
        f"delivered {upload.delivered_records} records" + (f"; last error: {err}" if err else "")
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="gatewayd",
        description="homecare-gateway daemon: reads home medical devices, seals and uploads "
        "readings.",
        epilog="example: gatewayd --config /etc/homecare-gateway/gateway.toml",
    )
    parser.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG_PATH, help="TOML configuration file"
    )
    parser.add_argument(
        "--check-config", action="store_true", help="validate the configuration and exit"
    )
    parser.add_argument("--version", action="version", version=f"gatewayd {__version__}")
    args = parser.parse_args(argv)
    try:
        cfg = provisioning.effective_config(load(args.config))
    except NotEnrolledError as exc:
        # Exit 2: systemd does not restart it (RestartPreventExitStatus); enrolment must come first.
        print(f"gatewayd: {exc.one_line()}", file=sys.stderr)
        return 2
    except GatewayError as exc:
        print(f"gatewayd: {exc.one_line()}", file=sys.stderr)
        return 2
    if args.check_config:
        print(f"gatewayd: configuration {args.config} is valid")
        return 0
    recent = logs.RecentEvents()
    logs.configure(cfg.log_level, recent=recent)
    try:
        asyncio.run(serve(cfg, SystemdNotifier(), recent))
    except GatewayError as exc:
        log.error("gateway.fatal", error=exc.message, hint=exc.hint)  # noqa: TRY400 - no traceback
        print(f"gatewayd: {exc.one_line()}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
