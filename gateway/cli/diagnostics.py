"""Checks a technician runs on a support call (gatewayctl uplink-test / selftest).

Each check returns a ``Check`` (name, ok, detail) and never raises for the condition it tests;
none of them reads or prints a clinical value or a byte of a key.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.config.settings import Config
from gateway.control import ask
from gateway.errors import GatewayError
from gateway.pipeline.health import clock_sync
from gateway.progress import NO_PROGRESS, Progress
from gateway.seal import keys
from gateway.uplink.link import check_route
from gateway.uplink.mqtt import MqttUplink, UplinkSettings


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str
    # ok, but worth a look (WARN): the same verdict ``gatewayctl status`` gives as a warning.
    warn: bool = False

    @property
    def verdict(self) -> str:
        return "FAIL" if not self.ok else ("WARN" if self.warn else "PASS")


class CheckWarningError(GatewayError):
    """Raised by a check whose condition is fine to run with but deserves a look (WARN)."""


def _check(name: str, fn: object) -> Check:
    try:
        detail = fn()  # type: ignore[operator]
    except CheckWarningError as exc:
        return Check(name, True, exc.one_line(), warn=True)
    except GatewayError as exc:
        return Check(name, False, exc.one_line())
    except OSError as exc:
        return Check(name, False, f"{exc.strerror or exc}")
    return Check(name, True, str(detail))


def uplink_test(
    cfg: Config, timeout_s: float = 15.0, progress: Progress = NO_PROGRESS
) -> list[Check]:
    """Route through the VPN, TLS with the client certificate, MQTT CONNECT / CONNACK.

    The broker check can take up to ``timeout_s``: ``progress`` shows which check runs.
    """

    def route() -> str:
        found = check_route(cfg.broker_host, cfg.broker_port, cfg.vpn_interface)
        if found is None:
            return "no VPN interface configured: not checked"
        return f"via {found.interface} to {found.address}"

    task = progress.begin("uplink test: route to the broker", total=2, unit="checks")
    checks = [_check("route", route)]
    settings = dataclasses.replace(
        UplinkSettings.from_config(cfg),
        # Its own client id: reusing the gateway's would push the running daemon off the broker.
        client_id=f"{cfg.gateway_id}-uplink-test",
        connect_timeout_s=timeout_s,
        session_expiry_s=0,
    )

    async def connect() -> str:
        uplink = MqttUplink(settings)
        began = time.monotonic()
        try:
            await uplink.connect()
        finally:
            await uplink.close()
        return (
            f"TLS + MQTT 5 CONNACK from {cfg.broker_host}:{cfg.broker_port} in "
            f"{(time.monotonic() - began) * 1000:.0f} ms"
        )

    progress.update(task, 1, label=f"uplink test: TLS + MQTT to {cfg.broker_host}")
    checks.append(_check("broker", lambda: asyncio.run(connect())))
    progress.update(task, 2, label="uplink test")
    progress.end(task, "done" if all(c.ok for c in checks) else "a check failed")
    return checks


def selftest(cfg: Config) -> list[Check]:
    """Everything the gateway needs, checked without touching the running daemon's data."""

    def signing() -> str:
        keys.load_signing_key(cfg.signing_key)
        return f"{cfg.signing_key} is an Ed25519 private key"

    def provider() -> str:
        keys.load_provider_x25519_public(cfg.provider_hpke_public_key)
        if cfg.provider_mlkem_public_key:
            keys.load_provider_mlkem_public(cfg.provider_mlkem_public_key)
        return f"provider key(s) load; suite {cfg.suite}"

    def outbox() -> str:
        path = cfg.outbox_path
        if not path.exists():
            return f"{path} not created yet (the daemon creates it)"
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        conn.execute("PRAGMA trusted_schema = OFF")  # root reads the service account's file
        try:
            (result,) = conn.execute("PRAGMA quick_check").fetchone()
        finally:
            conn.close()
        if result != "ok":
            raise GatewayError(f"outbox {path} failed its check: {result}")
        return f"{path}: quick_check ok"

    def daemon() -> str:
        status = ask(cfg.control_socket, "status")
        return f"gatewayd answers; uplink {status['uplink']['state']}"

    def clock() -> str:
        # A warning, as in `gatewayctl status` and install-check: an unsynchronised clock is
        # usually still right (install-check compares it with the provider's), and nothing
        # stops working; the daemon reports it (clock-not-synchronised) until time sync runs.
        state = clock_sync()
        if not state.get("synchronised"):
            raise CheckWarningError(f"clock NOT synchronised ({state.get('source')})")
        return f"synchronised via {state.get('source')}"

    def tls_files() -> str:
        for p in (cfg.ca_file, cfg.cert_file, cfg.key_file):
            Path(p).read_bytes()
        return "CA, client certificate and key are readable"

    return [
        _check("signing key", signing),
        _check("provider key", provider),
        _check("TLS files", tls_files),
        _check("outbox", outbox),
        _check("daemon", daemon),
        _check("clock", clock),
    ]


def as_json(checks: list[Check]) -> list[dict[str, object]]:
    return [dataclasses.asdict(c) for c in checks]
