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
    ) -> None:
        self.settings = settings
        self.verifier = verifier
        self._on_batch = on_batch
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
            result = self.verifier.accept_batch(bytes(msg.payload), msg.topic)
            self.batches += 1
            if self._on_batch is not None:
                self._on_batch(result)


def _reading_text(m: Measurement) -> str:
    info = codes.info(m.mdc_code)
    name = info.display if info else f"MDC {m.mdc_code}"
    if m.components:
        value = "/".join("-" if c.value is None else str(c.value) for c in m.components)
    elif m.samples:
        value = f"{len(m.samples)} samples every {m.sample_period_ms} ms, last {m.samples[-1]}"
    elif m.text is not None:
        value = repr(m.text[:60])  # device text: quoted and escaped for the terminal
    elif m.value_code is not None:
        value = f"code {m.value_code}"
    else:
        value = str(m.value) if m.value is not None else f"no value ({m.absent_reason})"
    when = f"device time {m.device_time.isoformat()}" if m.device_time else "no device time"
    return f"{m.device.value}  {name}: {value} {m.unit}  ({when})"


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
            f"{len(devices)} devices ({silent} silent), alarms {body.get('alarms') or 'none'}"
        )
    return f"{rec.header.kind.name.lower()} record"


def _print_batch(result: BatchResult, out: TextIO, as_json: bool) -> None:
    """One line per verified reading (the provider may see values: it is the hospital side)."""
    for rec in result.records:
        if rec.duplicate:
            continue
        hdr = rec.header
        for m in rec.measurements:
            line = (
                _reading_json(hdr.seq, hdr.gateway_id, m)
                if as_json
                else (f"verified  {hdr.gateway_id} #{hdr.seq}  {_reading_text(m)}")
            )
            out.write(line + "\n")
        if not rec.measurements and not as_json:
            out.write(f"verified  {hdr.gateway_id} #{hdr.seq}  {_record_text(rec)}\n")
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


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="homecare-provider",
        description="Provider-side receiver: verifies and prints what gateways deliver.",
        epilog="example: homecare-provider --host 127.0.0.1 --port 8883 --ca ca.crt "
        "--cert provider.crt --key provider.key --hpke-key hpke.key --gateway gw-1=gw-1.pub",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8883)
    p.add_argument("--ca", type=Path, required=True)
    p.add_argument("--cert", type=Path, required=True)
    p.add_argument("--key", type=Path, required=True)
    p.add_argument("--hpke-key", type=Path, required=True, help="provider X25519 private key (PEM)")
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
    args = p.parse_args(argv)
    try:
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
    sub = ProviderSubscriber(
        SubscriberSettings(args.host, args.port, args.ca, args.cert, args.key),
        verifier,
        on_batch=lambda r: _print_batch(r, sys.stdout, args.json),
    )
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    sub.start()
    deadline = time.monotonic() + args.seconds if args.seconds > 0 else None
    while not done.is_set():
        if deadline is not None and time.monotonic() >= deadline:
            break
        done.wait(0.2)
    sub.stop()
    print(summary_line(verifier), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
