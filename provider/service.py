"""homecare-provider: the provider-side receiver for the demo, the rig and integration tests.

Subscribes (MQTT 5, mutual TLS, QoS 1, persistent session so nothing is dropped while it is away)
to every gateway's records topic, verifies each batch with :class:`Verifier` and prints each
reading as it was opened and verified. A hospital's integration team writes its own receiver
from docs/wire-format.md; this one is the reference and the rig's checker.
"""

from __future__ import annotations

import argparse
import json
import signal
import ssl
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway.errors import GatewayError
from gateway.fhir import codes
from gateway.model import Measurement
from gateway.seal import keys, wire
from gateway.seal.sealing import provider_private_key
from provider import commands as provider_commands
from provider import desk as desk_main
from provider import release_offer, release_tool
from provider.desk import MAX_ROUTERS, Desk
from provider.verifier import BatchResult, VerifiedRecord, Verifier

SESSION_EXPIRY_S = 7 * 24 * 3600  # the broker keeps our queue for a week of provider downtime


@dataclass(frozen=True, slots=True)
class SubscriberSettings:
    host: str
    port: int
    ca_file: Path
    cert_file: Path
    key_file: Path
    client_id: str = "provider-verifier"
    topics: tuple[str, ...] = ("homecare/v1/gw/+/records", "homecare/v1/gw/+/health")


class ProviderSubscriber:
    """Receives batches on paho's network thread and hands them to the verifier (serialised)."""

    def __init__(
        self,
        settings: SubscriberSettings,
        verifier: Verifier,
        on_batch: Callable[[BatchResult], None] | None = None,
        before_batch: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.verifier = verifier
        self._on_batch = on_batch
        self._before_batch = before_batch
        self._lock = threading.Lock()
        self.subscribed = threading.Event()
        self.batches = 0
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            protocol=mqtt.MQTTv5,
        )
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(settings.ca_file))
        ctx.load_cert_chain(str(settings.cert_file), str(settings.key_file))
        client.tls_set_context(ctx)
        client.reconnect_delay_set(1, 2)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        self._client = client

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        self._client.connect_async(
            self.settings.host,
            self.settings.port,
            keepalive=15,
            clean_start=False,
            properties=props,
        )
        self._client.loop_start()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def wait_subscribed(self, timeout_s: float = 10.0) -> bool:
        return self.subscribed.wait(timeout_s)

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        if rc.is_failure:
            print(f"provider: broker refused connection: {rc}", file=sys.stderr)
            return
        client.subscribe([(t, 1) for t in self.settings.topics])

    def _on_subscribe(
        self, _c: mqtt.Client, _u: Any, _mid: int, codes: list[ReasonCode], _p: Any
    ) -> None:
        # Only the SUBACK makes the subscription real: messages published before it are not ours.
        if all(not rc.is_failure for rc in codes):
            self.subscribed.set()
        else:
            print(f"provider: subscription refused: {codes}", file=sys.stderr)

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, _rc: ReasonCode, _p: Any) -> None:
        self.subscribed.clear()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            if self._before_batch is not None:
                self._before_batch()
            result = self.verifier.accept_batch(bytes(msg.payload), msg.topic)
            self.batches += 1
            if self._on_batch is not None:
                self._on_batch(result)


# UCUM codes as people write them (the value itself is printed exactly as transmitted).
UNIT_WORDS = {"Cel": "°C", "[degF]": "°F", "mm[Hg]": "mmHg", "[lb_av]": "lb", "[in_i]": "in",
              "{INR}": "INR", "1": ""}
# Types the code table (gateway/fhir/codes.py) has no entry for, named for the demo's reader.
_NAMES = {188420: "Rectal temperature", 188424: "Oral temperature"}
MAX_READING_LINES = 6  # a record with more readings (a stream chunk) is summarised per type


def unit_text(unit: str) -> str:
    return UNIT_WORDS.get(unit, unit)


def reading_name(mdc_code: int) -> str:
    info = codes.info(mdc_code)
    return info.display if info else _NAMES.get(mdc_code, f"MDC code {mdc_code}")


def _value_text(m: Measurement) -> str:
    if m.components:
        value = "/".join("-" if c.value is None else str(c.value) for c in m.components)
    elif m.samples:
        value = f"{len(m.samples)} samples every {m.sample_period_ms} ms, last {m.samples[-1]}"
    elif m.text is not None:
        # Device text: quoted, escaped and cut for the terminal (JSON quoting, not Python's).
        return json.dumps(m.text[:60])
    elif m.value_code is not None:
        return f"code {m.value_code}"
    elif m.value is not None:
        value = str(m.value)
    else:
        return f"no value ({m.absent_reason})"
    unit = unit_text(m.unit)
    return f"{value} {unit}" if unit else value


def _reading_text(m: Measurement) -> str:
    return f"{m.device.value}  {reading_name(m.mdc_code)}: {_value_text(m)}"


def _summary_lines(measurements: Sequence[Measurement]) -> list[str]:
    """Many readings of one record (a continuous stream): one line per device and type."""
    groups: dict[tuple[str, int, str], list[Measurement]] = {}
    for m in measurements:
        groups.setdefault((m.device.value, m.mdc_code, m.unit), []).append(m)
    lines = []
    for (device, code, unit), ms in groups.items():
        if len(ms) == 1:
            lines.append(_reading_text(ms[0]))
            continue
        values = [m.value for m in ms if m.value is not None and not m.components]
        low, high = (min(values), max(values)) if values else (None, None)
        span = (
            ""
            if low is None
            else f", all {low}" if low == high else f", {low} to {high}"
        )
        span += f" {unit_text(unit)}".rstrip() if span else ""
        lines.append(f"{device}  {reading_name(code)}: {len(ms)} readings{span}")
    return lines


def record_lines(rec: VerifiedRecord) -> list[str]:
    """The human form of one verified record: a head line, then its readings indented."""
    hdr = rec.header
    head = f"verified  {hdr.gateway_id} #{hdr.seq}"
    ms = rec.measurements
    if not ms:
        return [f"{head}  {_record_text(rec)}"]
    times = {m.device_time for m in ms}
    when = next(iter(times)) if len(times) == 1 else None
    head += f"  {len(ms)} reading{'s' if len(ms) != 1 else ''}" + (
        f", device time {when.isoformat()}" if when else ""
    )
    body = (
        [_reading_text(m) for m in ms]
        if len(ms) <= MAX_READING_LINES
        else _summary_lines(ms)
    )
    return [head, *("  " + line for line in body)]


def _reading_json(seq: int, gateway_id: str, m: Measurement) -> str:
    return json.dumps(
        {
            "gateway": gateway_id,
            "seq": seq,
            "device": str(m.device),
            "mdc_code": m.mdc_code,
            "value": None if m.value is None else str(m.value),
            "unit": m.unit,
            "components": [[c.mdc_code, str(c.value), c.unit] for c in m.components],
            "samples": [str(v) for v in m.samples],
            "sample_period_ms": None if m.sample_period_ms is None else str(m.sample_period_ms),
            "text": m.text,
            "value_code": m.value_code,
            "device_time": m.device_time.isoformat() if m.device_time else None,
            "device_record_id": m.device_record_id,
        }
    )


def _record_text(rec: VerifiedRecord) -> str:
    body = rec.body
    if rec.header.kind is wire.RecordKind.HEALTH and isinstance(body, dict):
        outbox, uplink = body.get("outbox", {}), body.get("uplink", {})
        devices = body.get("devices", [])
        silent = sum(1 for d in devices if d.get("silent"))
        return (
            f"health: outbox {outbox.get('depth')} waiting, uplink {uplink.get('state')}, "
            f"{len(devices)} devices ({silent} silent), "
            f"alarms {', '.join(str(a) for a in body.get('alarms') or []) or 'none'}"
        )
    if isinstance(body, dict) and isinstance(body.get("event"), str):
        return f"event {body['event'][:60]}"
    return f"{rec.header.kind.name.lower()} record"


def _print_batch(result: BatchResult, out: TextIO, as_json: bool) -> None:
    """One line per verified reading (the provider may see values: it is the hospital side)."""
    for rec in result.records:
        if rec.duplicate:
            continue
        hdr = rec.header
        if as_json:
            for m in rec.measurements:
                out.write(_reading_json(hdr.seq, hdr.gateway_id, m) + "\n")
        else:
            out.write("".join(line + "\n" for line in record_lines(rec)))
    for err in result.failures:
        out.write(f"REJECTED  {err.reason}: {err.message}\n")
    out.flush()


def summary_line(verifier: Verifier) -> str:
    s = verifier.summary()
    return (
        f"summary: delivered={s['readings']} readings in {s['records']} records, "
        f"missing={s['missing']}, signature_failures={s['signature_failures']}, "
        f"chain_breaks={s['chain_breaks']}, duplicates={s['duplicates']}, "
        f"other_failures={sum(s['failures'].values()) - s['signature_failures']}, "
        f"test_readings={s['test_readings']}"
    )


class RouterBook:
    """What ``receive --desk`` saw of each router (last record, gaps, last health), kept in the
    desk's routers.json for ``homecare-provider routers``; and the routers' record-signing keys,
    taken from the certificates the desk issued (reread when issued.json changes)."""

    def __init__(self, desk: Desk, verifier: Verifier) -> None:
        self.desk = desk
        self.verifier = verifier
        self._keys_mtime: float | None = None
        self.seen: dict[str, dict[str, Any]] = desk.read(desk.routers, {})
        self.commands = provider_commands.CommandCentre(desk.root)

    def trust_enrolled(self) -> None:
        try:
            mtime = self.desk.issued.stat().st_mtime
        except FileNotFoundError:
            return
        if mtime != self._keys_mtime:
            for gw, key in self.desk.signing_keys().items():
                self.verifier.trust(gw, key)
            self._keys_mtime = mtime

    def note(self, result: BatchResult) -> None:
        missing = self.verifier.summary()["missing_seqs"]
        now = datetime.now(UTC).isoformat()
        for rec in result.records:
            gw = rec.header.gateway_id
            if gw not in self.seen and len(self.seen) >= MAX_ROUTERS:
                continue
            entry = self.seen.setdefault(gw, {"records": 0, "rejected": 0})
            if not rec.duplicate:
                entry["records"] = int(entry.get("records", 0)) + 1
            entry.update(last_seq=rec.header.seq, last_at=now,
                         last_kind=rec.header.kind.name.lower())
            entry["missing"] = sum(
                len(v) for k, v in missing.items() if k.rsplit("/", 1)[0] == gw
            )
            if rec.header.kind is wire.RecordKind.HEALTH and isinstance(rec.body, dict):
                entry["health"] = _health_facts(rec.body)
            if (
                not rec.duplicate
                and rec.header.kind is wire.RecordKind.EVENT
                and isinstance(rec.body, dict)
            ):
                try:
                    self.commands.note_event(rec.body)  # outcomes, support bundles (issue 20)
                except GatewayError as exc:
                    print(f"receive: {exc.one_line()}", file=sys.stderr)
        for err in result.failures:
            gw = str(err.fields.get("gateway_id") or "unknown")
            if gw in self.seen:
                self.seen[gw]["rejected"] = int(self.seen[gw].get("rejected", 0)) + 1
        with self.desk.locked():
            self.desk.write(self.desk.routers, self.seen)


def _health_facts(body: dict[str, Any]) -> dict[str, Any]:
    devices = body.get("devices", [])
    return {
        "uplink": body.get("uplink", {}).get("state"),
        "outbox": body.get("outbox", {}).get("depth"),
        "devices": len(devices),
        "silent": sum(1 for d in devices if d.get("silent")),
        "alarms": [str(a) for a in body.get("alarms") or []][:20],
    }


def receive_parser(prog: str = "homecare-provider receive") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Provider-side receiver: verifies and prints what gateways deliver. With "
        "--desk, the broker, certificates and routers' keys come from the desk's folder.",
        epilog="examples: homecare-provider receive --desk .desk; "
        "homecare-provider receive --host 127.0.0.1 --port 8883 --ca ca.crt "
        "--cert provider.crt --key provider.key --hpke-key hpke.key --gateway gw-1=gw-1.pub",
    )
    p.add_argument("--desk", type=Path, help="a desk folder (homecare-provider serve-est)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--ca", type=Path)
    p.add_argument("--cert", type=Path)
    p.add_argument("--key", type=Path)
    p.add_argument("--hpke-key", type=Path, help="provider X25519 private key (PEM)")
    p.add_argument("--mlkem-key", type=Path, help="provider ML-KEM-768 private key (hybrid suite)")
    p.add_argument(
        "--gateway",
        action="append",
        default=[],
        metavar="ID=PUBKEY",
        help="a gateway id and its Ed25519 public key file (repeatable)",
    )
    p.add_argument("--seconds", type=float, default=0, help="stop after this many seconds")
    p.add_argument("--json", action="store_true", help="one JSON object per reading")
    return p


def _desk_defaults(args: argparse.Namespace) -> Desk | None:
    if args.desk is None:
        return None
    desk = Desk(args.desk.resolve())
    pki = desk.existing_pki()
    info = desk.listening()
    args.host = args.host or info["broker_host"]
    args.port = args.port or int(info["broker_port"])
    args.ca = args.ca or pki.ca_cert
    args.cert = args.cert or pki.provider_cert
    args.key = args.key or pki.provider_key
    args.hpke_key = args.hpke_key or pki.hpke_key
    return desk


def receive(argv: Sequence[str] | None = None) -> int:
    p = receive_parser()
    args = p.parse_args(argv)
    try:
        desk = _desk_defaults(args)
        args.host = args.host or "127.0.0.1"
        args.port = args.port or 8883
        for name in ("ca", "cert", "key", "hpke_key"):
            if getattr(args, name) is None:
                p.error(f"--{name.replace('_', '-')} is needed (or --desk)")
        gw_keys = {}
        for item in args.gateway:
            gid, _, path = item.partition("=")
            if not gid or not path:
                p.error(f"--gateway wants ID=PUBKEY, got {item!r}")
            gw_keys[gid] = keys.load_gateway_public_key(Path(path))
        pkey = provider_private_key(
            keys.load_provider_x25519_private(args.hpke_key),
            keys.load_provider_mlkem_private(args.mlkem_key) if args.mlkem_key else None,
        )
    except GatewayError as exc:
        print(f"homecare-provider: {exc.one_line()}", file=sys.stderr)
        return 2
    verifier = Verifier(pkey, gw_keys)
    book = RouterBook(desk, verifier) if desk is not None else None

    def on_batch(result: BatchResult) -> None:
        _print_batch(result, sys.stdout, args.json)
        if book is not None:
            book.note(result)

    sub = ProviderSubscriber(
        SubscriberSettings(args.host, args.port, args.ca, args.cert, args.key),
        verifier,
        on_batch=on_batch,
        before_batch=book.trust_enrolled if book is not None else None,
    )
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    sub.start()
    if desk is not None:
        subscribed = sub.wait_subscribed(30.0)
        print(
            f"receive: verifying what routers send to {args.host}:{args.port}; stop with Ctrl-C"
            if subscribed
            else f"receive: not subscribed yet at {args.host}:{args.port} (is serve-est "
            "running?); retrying",
            file=sys.stderr,
            flush=True,
        )
    deadline = time.monotonic() + args.seconds if args.seconds > 0 else None
    while not done.is_set():
        if deadline is not None and time.monotonic() >= deadline:
            break
        done.wait(0.2)
    sub.stop()
    print(summary_line(verifier), flush=True)
    return 0


def desk_broker(root: Path, host: str | None, port: int | None) -> provider_commands.BrokerSettings:
    """Where ``command send`` publishes: the desk's broker, with the provider's certificate."""
    desk = Desk(root)
    pki = desk.existing_pki()
    info = desk.listening()
    return provider_commands.BrokerSettings(
        host=host or str(info["broker_host"]),
        port=port or int(info["broker_port"]),
        ca=pki.ca_cert,
        cert=pki.provider_cert,
        key=pki.provider_key,
    )


def main(argv: Sequence[str] | None = None) -> int:  # noqa: PLR0911 - one per subcommand
    """``homecare-provider COMMAND``: the desk's commands (provider/desk.py) and ``receive``.
    Without a command the options are the receiver's, as before the desk existed."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        desk_main.build_parser().print_help()
        return 0 if args else 2
    if args[0] == "receive":
        return receive(args[1:])
    if args[0] == "command":
        return provider_commands.main(args[1:], desk_broker)
    if args[:2] == ["release", "offer"]:  # needs the desk's broker: release_tool has none
        return release_offer.main(args[2:], desk_broker)
    if args[0] == "release":
        return release_tool.main(args[1:])
    if args[0] in desk_main.COMMANDS:
        return desk_main.main(args)
    return receive(args)


if __name__ == "__main__":
    raise SystemExit(main())
