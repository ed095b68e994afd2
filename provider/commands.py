"""``homecare-provider command``: sign and send commands to routers, and read their outcomes.

The command centre's side of issue 20 (the router's is gateway/commands and
gateway/daemon/commands.py; docs/operations.md "Commands from the command centre")::

    homecare-provider command keygen --desk .desk          # once: the command key (0600)
    homecare-provider command send --desk .desk --gateway gw-0421 health.report
    homecare-provider command send --desk .desk --gateway gw-0421 config.set \\
        --arg key=health_interval_s --arg value=30
    homecare-provider command outcomes --desk .desk --gateway gw-0421
    homecare-provider command support-bundle --desk .desk --gateway gw-0421 --out sb.tar.gz

The key's public half goes into every bundle the desk signs afterwards (``command_key``); a
router enrolled before has none and refuses every command (``no-command-key``). The counter per
router is kept durably in the desk (``command-counters.json``, written before the command is
published): it only rises, so a re-sent envelope is refused ``replayed`` and a new one is signed
instead. Outcomes come only from verified, sealed event records (``receive --desk`` appends them
to ``command-outcomes.jsonl``); what was published is in ``commands-sent.jsonl``.
A production provider keeps the command key in an HSM and signs in its own back office.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import hashlib
import json
import secrets
import ssl
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from gateway.atomicfile import atomic_write
from gateway.commands import envelope
from gateway.commands.envelope import MAX_LIFETIME, Command
from gateway.errors import GatewayError

TOPIC_PREFIX = "homecare/v1"
KEY_FILE = "command-signing.key"
COUNTERS_FILE = "command-counters.json"
OUTCOMES_FILE = "command-outcomes.jsonl"
SENT_FILE = "commands-sent.jsonl"
SUPPORT_DIR = "support"
DEFAULT_TTL = timedelta(hours=1)
PUBLISH_TIMEOUT_S = 15.0
MAX_OUTCOME_LINES = 10_000  # read back from the outcomes file, newest last


class CommandDeskError(GatewayError):
    """The command centre's tool cannot do what was asked (a key, a counter, the broker)."""

    hint = "see homecare-provider command --help and docs/operations.md"


def commands_topic(gateway_id: str, prefix: str = TOPIC_PREFIX) -> str:
    return f"{prefix}/cmd/{gateway_id}"


# -- the key -----------------------------------------------------------------------------------


def public_key_text(key: ed25519.Ed25519PrivateKey) -> str:
    """What the bundle's ``command_key`` (or ``[provider] command_key``) holds."""
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def keygen(path: Path) -> ed25519.Ed25519PrivateKey:
    """Create the command key (PKCS#8 PEM, 0600) unless one exists; return it."""
    if path.exists():
        return load_key(path)
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    atomic_write(path, pem, 0o600)
    return key


def keygen_in_memory() -> ed25519.Ed25519PrivateKey:
    """A throwaway command key (tests, demos)."""
    return ed25519.Ed25519PrivateKey.generate()


def load_key(path: Path) -> ed25519.Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise CommandDeskError(f"cannot load the command key {path}: {exc}") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise CommandDeskError(f"{path} is not an Ed25519 private key")
    return key


# -- the counters ------------------------------------------------------------------------------


class CounterBook:
    """The last counter used per router, durable before anything is published (flock'd)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with (self.path.parent / f".{self.path.name}.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _read(self) -> dict[str, int]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise CommandDeskError(
                f"{self.path} is damaged: {exc}",
                hint="restore it from backup; never lower a counter (routers refuse old ones)",
            ) from None
        return {str(k): int(v) for k, v in data.items()}

    def last(self, gateway_id: str) -> int:
        return self._read().get(gateway_id, 0)

    def next(self, gateway_id: str) -> int:
        with self._locked():
            counters = self._read()
            counters[gateway_id] = counters.get(gateway_id, 0) + 1
            atomic_write(self.path, json.dumps(counters, sort_keys=True).encode(), 0o600)
            return counters[gateway_id]


# -- making and sending --------------------------------------------------------------------------


def make_command(
    gateway_id: str,
    name: str,
    args: Mapping[str, Any],
    counter: int,
    *,
    ttl: timedelta = DEFAULT_TTL,
    now: datetime | None = None,
    command_id: str | None = None,
) -> Command:
    if not timedelta(0) < ttl <= MAX_LIFETIME:
        raise CommandDeskError(f"a command lives at most {MAX_LIFETIME}; asked {ttl}")
    now = now or datetime.now(UTC)
    return Command(
        gateway_id=gateway_id,
        command_id=command_id or f"c-{secrets.token_hex(8)}",
        counter=counter,
        issued_at=now,
        expires_at=now + ttl,
        name=name,
        args=dict(args),
    )


@dataclass(frozen=True, slots=True)
class BrokerSettings:
    host: str
    port: int
    ca: Path
    cert: Path
    key: Path
    client_id: str = "provider-commands"


def publish(settings: BrokerSettings, topic: str, payload: bytes) -> None:
    """Publish with QoS 1 and return once the broker acknowledged it (PUBACK, success)."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"{settings.client_id}-{secrets.token_hex(4)}",
        protocol=mqtt.MQTTv5,
    )
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(settings.ca))
    ctx.load_cert_chain(str(settings.cert), str(settings.key))
    client.tls_set_context(ctx)
    connected, acked = threading.Event(), threading.Event()
    outcome: dict[str, str] = {}

    def on_connect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        outcome["connect"] = str(rc)
        connected.set()

    def on_publish(_c: Any, _u: Any, _mid: int, rc: Any, _p: Any) -> None:
        outcome["publish"] = "" if not rc.is_failure else str(rc)
        acked.set()

    client.on_connect, client.on_publish = on_connect, on_publish
    try:
        client.connect(settings.host, settings.port, keepalive=10)
    except (OSError, ssl.SSLError) as exc:
        raise CommandDeskError(
            f"cannot reach the broker {settings.host}:{settings.port}: {exc}"
        ) from None
    client.loop_start()
    try:
        if not connected.wait(PUBLISH_TIMEOUT_S) or outcome.get("connect") != "Success":
            raise CommandDeskError(f"the broker did not accept us: {outcome.get('connect')}")
        info = client.publish(topic, payload, qos=1)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise CommandDeskError(f"publish failed: {mqtt.error_string(info.rc)}")
        if not acked.wait(PUBLISH_TIMEOUT_S):
            raise CommandDeskError("the broker did not acknowledge the command in time")
        if outcome.get("publish"):
            raise CommandDeskError(f"the broker refused the command: {outcome['publish']}")
    finally:
        client.disconnect()
        client.loop_stop()


class CommandCentre:
    """The desk's command state: key, counters, sent log, outcomes, support bundles."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.counters = CounterBook(root / COUNTERS_FILE)

    @property
    def key_path(self) -> Path:
        return self.root / KEY_FILE

    def public_key(self) -> str | None:
        """The command key to pin in bundles; None before ``command keygen``."""
        return public_key_text(load_key(self.key_path)) if self.key_path.exists() else None

    def sign(
        self, gateway_id: str, name: str, args: Mapping[str, Any], ttl: timedelta = DEFAULT_TTL
    ) -> tuple[Command, bytes]:
        """A new command with the router's next counter (durable first), signed."""
        key = load_key(self.key_path)
        command = make_command(gateway_id, name, args, self.counters.next(gateway_id), ttl=ttl)
        return command, envelope.sign(command, key)

    def send(self, broker: BrokerSettings, command: Command, signed: bytes) -> None:
        publish(broker, commands_topic(command.gateway_id), signed)
        entry = {
            "gateway_id": command.gateway_id,
            "command_id": command.command_id,
            "counter": command.counter,
            "command": command.name,
            "expires_at": command.expires_at.isoformat(),
            "envelope_sha256": hashlib.sha256(signed).hexdigest(),
            "sent_at": datetime.now(UTC).isoformat(),
        }
        with (self.root / SENT_FILE).open("a") as f:
            f.write(json.dumps(entry, sort_keys=True) + "\n")

    def note_event(self, body: Mapping[str, Any]) -> None:
        """A verified event record from ``receive --desk``: outcomes and support bundles kept."""
        event = body.get("event")
        if event in ("command", "command-dropped"):
            keep = {k: v for k, v in body.items() if k != "result"}
            keep["result"] = body.get("result")
            with (self.root / OUTCOMES_FILE).open("a") as f:
                f.write(json.dumps(keep, sort_keys=True, default=str) + "\n")
        elif event == "support-bundle":
            archive = support_archive(body)
            folder = self.root / SUPPORT_DIR
            folder.mkdir(exist_ok=True, mode=0o700)
            name = f"{_safe(body.get('gateway_id'))}-{_safe(body.get('command_id'))}.tar.gz"
            atomic_write(folder / name, archive, 0o600)

    def outcomes(self, gateway_id: str | None = None) -> list[dict[str, Any]]:
        try:
            lines = (self.root / OUTCOMES_FILE).read_text().splitlines()[-MAX_OUTCOME_LINES:]
        except FileNotFoundError:
            return []
        out = [json.loads(line) for line in lines if line.strip()]
        return [o for o in out if gateway_id is None or o.get("gateway_id") == gateway_id]


def _safe(text: Any) -> str:
    return "".join(c for c in str(text) if c.isalnum() or c in "-_.")[:64] or "unknown"


def support_archive(body: Mapping[str, Any]) -> bytes:
    """The support bundle's .tar.gz from its (verified, decrypted) event record; sha256 checked."""
    try:
        archive = base64.b64decode(str(body["archive"]), validate=True)
    except (KeyError, ValueError) as exc:
        raise CommandDeskError(f"the support-bundle record is unusable: {exc}") from None
    if hashlib.sha256(archive).hexdigest() != body.get("sha256"):
        raise CommandDeskError("the support bundle does not match its digest")
    return archive


# -- the CLI -------------------------------------------------------------------------------------


def _arg_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text  # a bare word: a string


def parse_args_list(items: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CommandDeskError(f"--arg wants KEY=VALUE, got {item!r}")
        out[key] = _arg_value(value)
    return out


# The desk (provider/desk.py, which imports this module) says where its broker and PKI are:
# homecare-provider (provider/service.py) passes this in, so no import cycle.
BrokerFor = Callable[[Path, str | None, int | None], BrokerSettings]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="homecare-provider command",
        description="Sign and send commands to routers; read their outcomes (sealed records).",
        epilog="example: homecare-provider command send --desk .desk --gateway gw-0421 "
        "health.report",
    )
    sub = p.add_subparsers(dest="action", required=True)
    for name, help_text in (
        ("keygen", "create the command key (once) and print its public half"),
        ("sign", "sign a command with the router's next counter and print the envelope"),
        ("send", "sign a command and publish it to the router's command topic"),
        ("outcomes", "list the outcomes routers reported (from verified records)"),
        ("support-bundle", "write out a router's support bundle received with its records"),
    ):
        s = sub.add_parser(name, help=help_text, description=help_text)
        s.add_argument("--desk", type=Path, default=Path(".desk"), help="the desk's folder")
        if name in ("sign", "send"):
            s.add_argument("--gateway", required=True, help="the router's id")
            s.add_argument("command", help="e.g. health.report, config.set, device.bind")
            s.add_argument("--arg", action="append", default=[], help="KEY=VALUE (JSON value)")
            s.add_argument("--ttl-minutes", type=float, default=60.0, help="expiry (max 1440)")
        if name == "send":
            s.add_argument("--host", help="broker host (default: the desk's)")
            s.add_argument("--port", type=int, help="broker port (default: the desk's)")
        if name in ("outcomes", "support-bundle"):
            s.add_argument("--gateway", help="only this router")
            s.add_argument("--json", action="store_true")
        if name == "support-bundle":
            s.add_argument("--out", type=Path, required=True, help="where to copy the newest")
    return p


def main(argv: Sequence[str] | None = None, broker_for: BrokerFor | None = None) -> int:
    args = build_parser().parse_args(argv)
    centre = CommandCentre(args.desk.resolve())
    try:
        return _run(args, centre, broker_for)
    except GatewayError as exc:
        print(f"homecare-provider command: {exc.one_line()}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace, centre: CommandCentre, broker_for: BrokerFor | None) -> int:
    if args.action == "keygen":
        centre.root.mkdir(parents=True, exist_ok=True)
        print(public_key_text(keygen(centre.key_path)))
        return 0
    if args.action in ("sign", "send"):
        ttl = timedelta(minutes=args.ttl_minutes)
        command, signed = centre.sign(args.gateway, args.command, parse_args_list(args.arg), ttl)
        if args.action == "sign":
            sys.stdout.write(signed.decode() + "\n")
            return 0
        if broker_for is None:
            raise CommandDeskError("no broker to send to (run it as homecare-provider command)")
        centre.send(broker_for(centre.root, args.host, args.port), command, signed)
        print(f"sent {command.name} #{command.counter} ({command.command_id}) to {args.gateway}")
        return 0
    if args.action == "outcomes":
        rows = centre.outcomes(args.gateway)
        if args.json:
            print(json.dumps(rows, indent=2, sort_keys=True))
            return 0
        for o in rows:
            print(
                f"{o.get('time', '')[:19]}  {o.get('gateway_id')}  #{o.get('counter')}  "
                f"{o.get('command')}  {o.get('outcome')}"
                + (f"  {o['reason']}" if o.get("reason") else "")
                + (f"  ({o['detail']})" if o.get("detail") else "")
            )
        return 0
    folder = centre.root / SUPPORT_DIR
    found = sorted(
        (p for p in folder.glob(f"{_safe(args.gateway) if args.gateway else ''}*.tar.gz")),
        key=lambda p: p.stat().st_mtime,
    ) if folder.is_dir() else []  # fmt: skip
    if not found:
        raise CommandDeskError("no support bundle received yet (is receive --desk running?)")
    atomic_write(args.out, found[-1].read_bytes(), 0o600)
    print(f"support bundle {found[-1].name} -> {args.out}")
    return 0
