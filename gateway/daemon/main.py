"""gatewayd: the composition root. Everything is built and wired here, nowhere else.

Start-up order: configuration -> keys -> outbox (durable from the first second, broker or not)
-> ingest writer -> uplink -> drivers -> READY. Shutdown on SIGTERM: drivers stop first, the
writer commits what it already holds, then the uplink and the database close.

Shutdown on a low battery (gateway/power): the same, and then the "shutting-down-on-battery"
record is sealed, the outbox checkpointed, the uplink given a bounded moment to deliver, the
power-cut marker written and the system asked to power off.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from buffer.capacity import CapacityPolicy
from buffer.outbox import Outbox
from buffer.recovery import Replacement, open_outbox
from buffer.staging import open_staging, staging_path
from drivers.serial.modem_driver import ModemDriver
from gateway import __version__, alarms, logs
from gateway.commands.ledger import LEDGER_FILE, Ledger
from gateway.commands.runner import CommandRunner
from gateway.config.settings import DEFAULT_CONFIG_PATH, Config, load
from gateway.control import Authority, Command, ControlServer
from gateway.daemon import overrides
from gateway.daemon.answers import ControlHandlers
from gateway.daemon.commands import DaemonCommands
from gateway.daemon.intake import Intake
from gateway.daemon.notify import SystemdNotifier
from gateway.daemon.wiring import (
    ble_for,
    bluetooth_links,
    build_agent,
    build_drivers,
    check_devices,
    power_off_for,
)
from gateway.errors import GatewayError
from gateway.fhir import observation as fhir
from gateway.model import Measurement
from gateway.pipeline.dbthread import DatabaseThread
from gateway.pipeline.health import HealthReporter
from gateway.pipeline.ingest import IngestWriter, Lane
from gateway.pipeline.seams import Notifier
from gateway.pipeline.supervise import Supervisors
from gateway.pipeline.watchdog import LoopWatch
from gateway.power.monitor import PowerMonitor, UpsSettings
from gateway.power.poweroff import PowerOff, PowerOffError
from gateway.power.tracker import DebounceRule
from gateway.seal import wire
from gateway.seal.keys import (
    load_provider_mlkem_public,
    load_provider_x25519_public,
    load_signing_key,
)
from gateway.seal.sealing import RecordSealer, provider_public_key
from gateway.updates import beacon as updates_beacon
from gateway.uplink.linkmon import LinkMonitor, LinkSettings
from gateway.uplink.mqtt import MqttUplink, UplinkSettings
from gateway.uplink.upload import UploadLoop, UploadSettings
from provisioning import runtime as provisioning
from provisioning.errors import NotEnrolledError

log = structlog.get_logger("gateway.daemon")

WATCHDOG_STALL_S = 120.0  # a critical loop silent this long stops the watchdog pings
SHUTDOWN_FLUSH_S = 10.0
SHUTDOWN_DRAIN_S = 3.0
POWER_CUT_DRAIN_S = 15.0  # on battery: how long the uplink may take for the last records


class _Shutdown(Exception):  # noqa: N818 - a control-flow signal, not an error
    pass


def ups_settings(cfg: Config) -> UpsSettings | None:
    p = cfg.power
    if p is None:
        return None
    return UpsSettings(
        host=p.host,
        port=p.port,
        ups=p.ups,
        low_runtime_s=p.low_runtime_s,
        poll_interval_s=p.poll_interval_s,
        timeout_s=min(5.0, max(1.0, p.poll_interval_s * 2)),
        rule=DebounceRule(confirm_s=p.confirm_s),
    )


async def serve(  # noqa: PLR0912, PLR0915 - the one composition root
    cfg: Config,
    notifier: Notifier,
    recent: logs.RecentEvents | None = None,
    power_off: PowerOff | None = None,
) -> None:
    power_off = power_off or power_off_for(cfg)
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
    staging, staging_damaged = await db.run(open_staging, staging_path(cfg.outbox_path))
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
        test_episode=cfg.test_episode,
    )
    writer = IngestWriter(
        outbox,
        sealer,
        gateway_info,
        db,
        window_s=cfg.commit_window_ms / 1000,
        policy=CapacityPolicy(cfg.outbox_quota_bytes),
        stream_chunk_s=cfg.stream_chunk_s,
        staging=staging,
        stage_interval_s=cfg.stage_interval_s,
        staging_damaged=staging_damaged,
    )
    uplink = MqttUplink(UplinkSettings.from_config(cfg))
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
    links = LinkMonitor(
        LinkSettings(
            broker_host=cfg.broker_host,
            broker_port=cfg.broker_port,
            vpn_interface=cfg.vpn_interface,
            wan_interfaces=cfg.wan_interfaces,
            broadband_interfaces=cfg.broadband_interfaces,
        )
    )
    supervisors = Supervisors()
    watch = LoopWatch(WATCHDOG_STALL_S)
    watch.add_last_progress("outbox-writer", lambda: writer.last_progress)
    watch.add_last_progress("uplink", lambda: upload.last_progress)
    driver_tasks: list[asyncio.Task[None]] = []
    durable_seq: dict[str, int] = {}
    intake = Intake(
        cfg, writer, supervisors, watch, functools.partial(note_durable, durable_seq), driver_tasks
    )
    intake.prepare(lanes)
    drivers = intake.drivers  # changed in place when devices are re-bound by command
    intake.agent = agent = build_agent(ble_for(cfg, bound), drivers)
    stop = asyncio.Event()

    async def seal_lifecycle_event(body: dict[str, Any]) -> int:
        return await writer.submit_payload(wire.RecordKind.EVENT, body, Lane.ALARM)

    power = PowerMonitor(
        ups_settings(cfg),
        state_dir=cfg.state_dir,
        seal_event=seal_lifecycle_event,
        on_low_battery=stop.set,
    )
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
        loops=watch,
        power=power,
        supervisors=supervisors,
    )
    loop = asyncio.get_running_loop()
    answers = ControlHandlers(
        writer=writer,
        db=db,
        outbox=outbox,
        health=health,
        links=links,
        bound=bound,
        stop=stop,
        gateway_id=cfg.gateway_id,
        episode=cfg.episode_id,
        returning=lambda: provisioning.is_returning(cfg),
        driver_tasks=driver_tasks,
        durable_seq=durable_seq,
    )
    runner = await _command_runner(
        cfg,
        DaemonCommands(
            cfg=cfg,
            intake=intake,
            health=health,
            links=links,
            writer=writer,
            db=db,
            outbox=outbox,
            seal_event=seal_lifecycle_event,
        ),
        seal_lifecycle_event,
    )
    if runner is None:
        health.alarms.add(alarms.COMMAND_LEDGER_UNUSABLE)
    else:
        uplink.subscribe(cfg.commands_topic, runner.offer)
    intake.on_rebound.append(answers.rebound)
    handlers = answers.handlers(cfg.provisioning is not None)
    if recent is not None:  # gatewayctl logs where no journal keeps our lines
        handlers["logs"] = Command(recent.answer, Authority.READ)  # redacted lines
    control = ControlServer(cfg.control_socket, handlers)
    try:
        await control.start()
    except OSError as exc:
        # Diagnostics are not worth losing readings over: run on without the control socket.
        log.error("control.unavailable", socket=str(cfg.control_socket), error=str(exc))  # noqa: TRY400

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def watchdog(interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            stalled = watch.stalled()
            if stalled:
                log.error("watchdog.stalled", loops=stalled)
                continue
            notifier.notify("WATCHDOG=1", _status_line(writer, upload))

    # What may end this TaskGroup (and the daemon, exit 1, so systemd restarts it): the writer,
    # the outbox, the uplink and the other shared loops - each device's readings depend on them,
    # and a restart rebuilds them from durable state. What may not: one driver. Each runs under
    # a supervisor that restarts it after a fault (gateway/pipeline/supervise.py).
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(writer.run(), name="ingest.writer")
            tg.create_task(upload.run(), name="uplink")
            if replacement is not None:
                health.alarms.add("outbox-replaced")
                tg.create_task(_report_replacement(writer, replacement), name="outbox.replaced")
            tg.create_task(links.run(), name="links")
            tg.create_task(health.run(), name="health")
            tg.create_task(power.run(), name="power")
            tg.create_task(writer.report_gaps(cfg.health_interval_s), name="gaps")
            if agent is not None:
                tg.create_task(agent.run(), name="ble.agent")
            tg.create_task(
                provisioning.report_pending_events(cfg, seal_lifecycle_event),
                name="provisioning.events",
            )
            if cfg.provisioning is not None and bound.intake:
                tg.create_task(provisioning.renewal_task(cfg), name="provisioning.renewal")
            # Software updates: report what the root updater did, and tell its health gate once
            # this version is READY and delivering (gateway/updates/beacon.py).
            tg.create_task(
                updates_beacon.report_outcomes(cfg.state_dir, seal_lifecycle_event),
                name="updates.outcomes",
            )
            tg.create_task(
                updates_beacon.beacon_task(
                    cfg.state_dir, updates_beacon.running_release(__version__), upload
                ),
                name="updates.beacon",
            )
            intake.start(tg)
            if runner is not None:
                tg.create_task(runner.run(), name="commands")
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
            if power.stopping_on_battery:
                notifier.notify("STOPPING=1", "STATUS=battery low: clean stop, then power-off")
            else:
                notifier.notify("STOPPING=1")
            log.info("gateway.stopping", on_battery=power.stopping_on_battery)
            for t in driver_tasks:
                t.cancel()
            await asyncio.gather(*driver_tasks, return_exceptions=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(writer.drain(), SHUTDOWN_FLUSH_S)
            if power.stopping_on_battery:
                await _last_record_on_battery(power, seal_lifecycle_event)
            if upload.connected.is_set():
                # Give the uplink a moment to deliver what was just committed; whatever is left
                # stays durable in the outbox and goes out after the next start.
                drain_s = POWER_CUT_DRAIN_S if power.stopping_on_battery else SHUTDOWN_DRAIN_S
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(_outbox_empty(db, outbox), drain_s)
            if power.stopping_on_battery:
                await _checkpoint(db, outbox)  # after the acks: the file is final
            raise _Shutdown  # noqa: TRY301 - leaves the TaskGroup, cancelling what is left
    except* _Shutdown:
        pass
    finally:
        await control.close()
        await uplink.close()
        await db.run(outbox.close)
        await db.run(staging.close)
        if runner is not None:
            await asyncio.to_thread(runner.close)
        db.shutdown()
        log.info("gateway.stopped")
    if power.stopping_on_battery:
        await _power_off(power, power_off)


async def _last_record_on_battery(
    power: PowerMonitor, seal: Callable[[dict[str, Any]], Awaitable[int]]
) -> None:
    """The battery is low: seal "shutting-down-on-battery" after every reading held."""
    try:
        seq = await asyncio.wait_for(seal(power.shutdown_body()), SHUTDOWN_FLUSH_S)
        log.warning("power.shutdown_sealed", seq=seq)
    except (GatewayError, TimeoutError) as exc:
        # The readings are all committed; only this notice is missing. Say so and go on.
        log.error("power.shutdown_not_sealed", error=str(exc))  # noqa: TRY400


async def _checkpoint(db: DatabaseThread, outbox: Outbox) -> None:
    """Before a planned power-off: the database file alone holds everything (WAL folded in)."""
    try:
        left = await db.run(outbox.checkpoint)
        log.info("outbox.checkpointed", frames_left=left)
    except GatewayError as exc:
        log.error("outbox.checkpoint_failed", error=exc.message)  # noqa: TRY400


async def _power_off(power: PowerMonitor, power_off: PowerOff) -> None:
    """After the clean stop: the marker for the next start, then the system powers off."""
    try:
        await asyncio.to_thread(power.write_marker)
    except OSError as exc:
        log.error("power.marker_not_written", error=exc.strerror)  # noqa: TRY400
    try:
        await power_off.request()
    except PowerOffError as exc:
        # Everything is committed and checkpointed; the battery ends it if the system will not.
        log.error("power.power_off_failed", error=exc.message, hint=exc.hint)  # noqa: TRY400
        return
    log.warning("power.power_off_requested")


async def _command_runner(
    cfg: Config, commands: DaemonCommands, seal: Callable[[dict[str, Any]], Awaitable[int]]
) -> CommandRunner | None:
    """The signed-command loop; None (commands not taken, an alarm raised) when the ledger
    cannot be opened: without it no replay can be refused, and readings matter more."""
    try:
        ledger = await asyncio.to_thread(Ledger, cfg.state_dir / LEDGER_FILE)
    except GatewayError as exc:
        log.error("commands.ledger_unusable", error=exc.one_line())  # noqa: TRY400
        return None
    return CommandRunner(
        gateway_id=cfg.gateway_id,
        episode=cfg.episode_id,
        key_text=cfg.command_key,
        registry=commands.registry(),
        ledger=ledger,
        seal=seal,
    )


def note_durable(durable_seq: dict[str, int], m: Measurement, seq: int) -> None:
    """The seq of each device's latest durable reading (``provisioning.devices`` answers it)."""
    durable_seq[str(m.device.value).upper()] = seq


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


EXIT_CONDITION_SKIP, EXIT_CONDITION_FAIL = 1, 255


def check_enrolled(config: Path) -> int:
    """ExecCondition: should the service start? A factory-state or returned router is skipped
    quietly (``systemctl status`` shows the condition and this line); a broken configuration
    fails the unit, with the message, so it is seen."""
    try:
        provisioning.effective_config(load(config))
    except NotEnrolledError as exc:
        print(f"gatewayd: not starting: {exc.one_line()}", file=sys.stderr)
        return EXIT_CONDITION_SKIP
    except GatewayError as exc:
        print(f"gatewayd: {exc.one_line()}", file=sys.stderr)
        return EXIT_CONDITION_FAIL
    return 0


def main(argv: Sequence[str] | None = None) -> int:  # noqa: PLR0911 - one exit per outcome
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
    parser.add_argument(
        "--check-enrolled",
        action="store_true",
        help="exit 0 if the daemon should run, 1 if the router is not enrolled for an episode "
        "(systemd's ExecCondition: the unit is skipped, not failed), 255 if the configuration "
        "is unusable",
    )
    parser.add_argument("--version", action="version", version=f"gatewayd {__version__}")
    args = parser.parse_args(argv)
    if args.check_enrolled:
        return check_enrolled(args.config)
    try:
        cfg = provisioning.effective_config(load(args.config))
        # Settings the command centre changed (config.set), kept across restarts.
        cfg = overrides.static_command_key(overrides.apply(cfg, overrides.load(cfg.state_dir)))
        check_devices(cfg)
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
    except Exception as exc:
        # A failure of the writer, the outbox or the uplink left the TaskGroup (drivers never do:
        # their supervisors keep them). Say which, plainly, and exit 1: systemd restarts us.
        failures = _leaves(exc)
        first = failures[0]
        message = first.one_line() if isinstance(first, GatewayError) else type(first).__name__
        log.critical(
            "gateway.fatal",
            error_types=[type(e).__name__ for e in failures],
            error=message,
            exc_info=first,
        )
        print(f"gatewayd: stopped by {message}; systemd restarts it", file=sys.stderr)
        return 1
    return 0


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, or ``exc`` itself."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)] or [exc]
    return [exc]


if __name__ == "__main__":
    raise SystemExit(main())
