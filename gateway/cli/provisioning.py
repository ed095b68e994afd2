"""gatewayctl commands for logistics staff: enrol, install-check, return, lifecycle.

Thin like the rest of the CLI: parse, call one provisioning function, render. The messages are
for the person holding the router; docs/operations.md explains every one of them.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from functools import partial
from pathlib import Path
from typing import Any

from drivers.ble.unbond import BluezUnbonder
from gateway.cli import output
from gateway.config.settings import Config, load
from gateway.control import ask
from gateway.progress import Progress
from provisioning import runtime
from provisioning.bundle import BoundDevice
from provisioning.enrol import enrol, est_client, token_from_text
from provisioning.equipment_return import EquipmentReturn, ReturnOptions, ReturnResult
from provisioning.errors import InstallCheckFailedError, TokenRejectedError
from provisioning.install_check import install_check
from provisioning.keystore import FileKeyStore
from provisioning.layout import StateLayout
from provisioning.profile import enrolment_config, write_config
from provisioning.state import LifecycleStore, Phase

EXIT_OK, EXIT_PROBLEM = 0, 1


def _out(data: dict[str, Any], as_json: bool, lines: list[str]) -> None:
    if as_json:
        print(json.dumps(data, sort_keys=True, default=str))
    else:
        output.screen().text("\n".join(lines))


COMMAND_LINE_REFUSAL = (
    "a token on the command line is readable by every program on the router (/proc): "
    "it was not used"
)


def _token(args: argparse.Namespace, cfg: Config) -> str | None:
    if args.token is not None:
        raise TokenRejectedError(
            COMMAND_LINE_REFUSAL,
            hint="run 'gatewayctl enrol' and type the token when asked, or "
            "'gatewayctl enrol --token-file FILE' ('-' reads it from standard input)",
        )
    if args.token_file == "-":  # noqa: S105 - the stdin convention, not a secret
        return token_from_text(sys.stdin.read(4096), cfg.gateway_id)
    if args.token_file is not None:
        try:
            with Path(args.token_file).open() as f:
                text = f.read(4096)
        except OSError as exc:
            raise TokenRejectedError(f"cannot read {args.token_file}: {exc.strerror}") from None
        return token_from_text(text, cfg.gateway_id)
    if LifecycleStore(cfg.state_dir).load().phase is not Phase.FACTORY:
        return None  # identity already issued: only the bundle is (re)fetched
    if sys.stdin.isatty():
        return token_from_text(
            getpass.getpass("Enrolment token (or scan the QR code): "), cfg.gateway_id
        )
    return None


def cmd_enrol(args: argparse.Namespace) -> int:
    # A fresh router has no gateway.toml: enrolment writes it from the provider profile.
    composed = enrolment_config(args.config)
    cfg = composed.config
    token = _token(args, cfg)
    # Rewritten from a changed profile only before enrolment: never under a running episode.
    fresh = LifecycleStore(cfg.state_dir).load().phase is Phase.FACTORY
    if composed.write and (fresh or not cfg.path.exists()):
        write_config(cfg.path, composed.text)
    result = enrol(cfg, token)
    _out(
        {
            "gateway_id": result.gateway_id,
            "episode": result.episode_id,
            "devices": result.devices,
            "certificate_expires": result.certificate_expires.isoformat(),
        },
        args.json,
        [
            f"enrolled: router {result.gateway_id}, episode {result.episode_id}, "
            f"{result.devices} device(s) bound",
            f"certificate valid until {result.certificate_expires:%Y-%m-%d}",
            "next: start the service (systemctl restart gatewayd), take one measurement with "
            "each device, then run: gatewayctl install-check",
        ],
    )
    return EXIT_OK


def cmd_install_check(args: argparse.Namespace) -> int:
    cfg = runtime.effective_config(load(args.config))
    daemon = partial(ask, cfg.control_socket)
    with output.progress(args.json) as progress:
        rows = install_check(
            cfg, daemon, est_client(cfg), device_timeout_s=args.timeout, progress=progress
        )
    passed = all(r.verdict != "FAIL" for r in rows)
    if args.json:
        print(json.dumps({"passed": passed, "rows": [r.to_json() for r in rows]}, sort_keys=True))
    else:
        screen = output.screen()
        screen.checks([(r.verdict, r.name, r.detail) for r in rows])
        screen.text("installation check PASSED" if passed else "installation check FAILED")
    if not passed:
        print(
            f"gatewayctl: {InstallCheckFailedError('a check failed').one_line()}", file=sys.stderr
        )
    return EXIT_OK if passed else EXIT_PROBLEM


def cmd_return(args: argparse.Namespace) -> int:
    raw = load(args.config)
    phase = LifecycleStore(raw.state_dir).load().phase
    bound = phase in (Phase.BOUND, Phase.RETURNING) and StateLayout(raw.state_dir).bundle.exists()
    # A router whose episode files were changed must still be erasable: no file check here.
    cfg = runtime.effective_config(raw, check_files=False) if bound else raw
    devices = runtime.load_bundle(cfg, check_files=False).devices if bound else ()
    with output.progress(args.json) as progress:
        result = _return_flow(args, cfg, devices, progress).run()
    return _after_return(args, result)


def _return_flow(
    args: argparse.Namespace, cfg: Config, devices: tuple[BoundDevice, ...], progress: Progress
) -> EquipmentReturn:
    return EquipmentReturn(
        cfg,
        daemon=partial(ask, cfg.control_socket),
        keystore=FileKeyStore(StateLayout(cfg.state_dir).keys_dir),
        est=est_client(cfg),
        devices=devices,
        # A [[sim_devices]] entry stands in for a bound BLE address: BlueZ never saw it.
        unbonder=BluezUnbonder(skip=[d.address for d in cfg.sim_devices]),
        options=ReturnOptions(
            force=args.force,
            drain_timeout_s=args.drain_timeout,
            report_timeout_s=min(60.0, args.drain_timeout),
        ),
        progress=progress,
    )


def _after_return(args: argparse.Namespace, result: ReturnResult) -> int:
    if result.already_factory:
        _out(
            {"state": "factory", "already": True},
            args.json,
            ["already in the factory state: nothing to do"],
        )
        return EXIT_OK
    f = result.facts
    erased = f.get("erased", {})
    _out(
        {"state": "factory", **f},
        args.json,
        [
            f"records not delivered: {f.get('unsent_records', 0)}"
            + (" (--force)" if f.get("forced") else ""),
            f"return report uploaded: {'yes' if f.get('report_uploaded') else 'NO'}",
            f"BLE bonds removed: {', '.join(f.get('bonds_removed', [])) or 'none'}",
            f"certificate revoked: {'yes' if f.get('revoked') else 'NOT CONFIRMED'}",
            f"keys destroyed: {', '.join(erased.get('keys', [])) or 'none left'}",
            f"files deleted: {len(erased.get('files', []))}",
            "the router is in the factory state: pack it for the depot",
        ],
    )
    return EXIT_OK


def cmd_lifecycle(args: argparse.Namespace) -> int:
    cfg = load(args.config)
    if cfg.provisioning is None:
        # The demo and hand-configured rigs: no enrolment, the file names keys and episode, so
        # the lifecycle file (still "factory") says nothing about this gateway.
        if args.json:
            data = {"state": "configured", "episode": cfg.episode_id, "provisioning": False}
            print(json.dumps(data, sort_keys=True))
            return EXIT_OK
        output.screen().key_values(
            [
                ("state", "configured (no [provisioning] table: no enrolment or return)"),
                ("episode", f"{cfg.episode_id} (from {cfg.path})"),
            ]
        )
        return EXIT_OK
    lc = LifecycleStore(cfg.state_dir).load()
    if args.json:
        data = {
            "state": lc.phase.value,
            "episode": lc.episode_id,
            "since": lc.since,
            "return_done": list(lc.return_done),
        }
        print(json.dumps(data, sort_keys=True, default=str))
        return EXIT_OK
    pairs: list[tuple[str, object]] = [
        ("state", lc.phase.value),
        ("episode", lc.episode_id or None),
        ("since", lc.since or None),
    ]
    if lc.phase is Phase.RETURNING:
        pairs.append(("return", f"steps done: {', '.join(lc.return_done) or 'none'}"))
    output.screen().key_values(pairs)
    return EXIT_OK


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    if name == "enrol":
        group = p.add_mutually_exclusive_group()
        group.add_argument(
            "--token",
            metavar="VALUE",
            help="refused: the command line is visible to every program (/proc); without "
            "options enrol asks for the token, or use --token-file",
        )
        group.add_argument(
            "--token-file",
            metavar="FILE",
            help="a file holding the token or the QR text; '-' reads standard input",
        )
    if name == "install-check":
        p.add_argument(
            "--timeout", type=float, default=300.0, help="seconds to wait for each device's reading"
        )
    if name == "return":
        p.add_argument(
            "--force",
            action="store_true",
            help="finish even if records cannot be delivered (their number goes in the report)",
        )
        p.add_argument(
            "--drain-timeout", type=float, default=600.0, help="seconds to wait for the provider"
        )


COMMANDS = {
    "enrol": (
        cmd_enrol,
        "enrol this router for a patient episode (one-time token from the delivery note)",
        "gatewayctl enrol (asks for the token); gatewayctl enrol --token-file /media/usb/token.txt",
    ),
    "install-check": (
        cmd_install_check,
        "check each bound device, uplink, VPN, modem and clock (PASS / FAIL table)",
        "gatewayctl install-check",
    ),
    "return": (
        cmd_return,
        "equipment return: deliver everything, revoke, erase, back to factory state",
        "gatewayctl return; gatewayctl return --force",
    ),
    "lifecycle": (
        cmd_lifecycle,
        "show the provisioning state (factory, enrolled, bound, returning)",
        "gatewayctl lifecycle",
    ),
}

__all__ = ["COMMANDS", "add_arguments"]
