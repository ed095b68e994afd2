"""The simulated provider rig for integration tests: PKI, mosquitto, verifier, gatewayd process."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.model import Measurement
from gateway.seal import keys, wire
from gateway.seal.sealing import provider_private_key
from provider.broker import MosquittoBroker
from provider.service import ProviderSubscriber, SubscriberSettings
from provider.verifier import BatchResult, Verifier
from rig.pki import RigPki, create_rig_pki
from tests.integration.netns import PROVIDER_TUNNEL_IP, VpnRig, in_netns


@dataclass
class Received:
    readings: list[tuple[int, Measurement]] = field(default_factory=list)  # (record seq, reading)
    health: int = 0  # health reports received
    gaps: list[dict[str, object]] = field(default_factory=list)  # GAP record bodies
    events: list[dict[str, object]] = field(default_factory=list)  # EVENT record bodies
    health_reports: list[dict[str, Any]] = field(default_factory=list)  # HEALTH record bodies
    lanes: dict[int, int] = field(default_factory=dict)  # record seq -> its upload lane
    kinds: dict[int, wire.RecordKind] = field(default_factory=dict)  # record seq -> its kind

    def on_batch(self, result: BatchResult) -> None:
        for rec in result.records:
            if not rec.duplicate:
                self.readings.extend((rec.header.seq, m) for m in rec.measurements)
                self.lanes[rec.header.seq] = rec.header.lane
                self.kinds[rec.header.seq] = rec.header.kind
                self.health += rec.header.kind is wire.RecordKind.HEALTH
                if rec.header.kind is wire.RecordKind.HEALTH:
                    self.health_reports.append(rec.body)
                if rec.header.kind is wire.RecordKind.GAP:
                    self.gaps.append(rec.body)
                if rec.header.kind is wire.RecordKind.EVENT:
                    self.events.append(rec.body)


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


class Rig:
    def __init__(
        self,
        base: Path,
        gateway_id: str = "gw-it-0001",
        *,
        pq: bool = False,
        vpn: VpnRig | None = None,
    ) -> None:
        self.base = base
        self.gateway_id = gateway_id
        self.pq = pq
        self.vpn = vpn
        hosts = ("localhost", "127.0.0.1") + ((PROVIDER_TUNNEL_IP,) if vpn else ())
        self.pki: RigPki = create_rig_pki(
            base / "pki", gateway_ids=[gateway_id], pq=pq, broker_hosts=hosts
        )
        self.broker = MosquittoBroker(
            self.pki, base / "broker", host=PROVIDER_TUNNEL_IP if vpn else "127.0.0.1"
        )
        gw = self.pki.gateway(gateway_id)
        mlkem_key = (
            keys.load_provider_mlkem_private(self.pki.hpke_mlkem768_key)
            if pq and self.pki.hpke_mlkem768_key
            else None
        )
        self.verifier = Verifier(
            provider_private_key(keys.load_provider_x25519_private(self.pki.hpke_key), mlkem_key),
            {gateway_id: keys.load_gateway_public_key(gw.identity_pub)},
        )
        self.received = Received()
        self.subscriber: ProviderSubscriber | None = None
        self.daemon: subprocess.Popen[bytes] | None = None
        self.state_dir = base / "state"
        self.log_path = base / "gatewayd.log"
        self.control_socket = base / "run" / "control.sock"

    def provider_side(self) -> contextlib.AbstractContextManager[None]:
        """Where the broker and the provider live: the provider namespace behind the VPN."""
        return in_netns(self.vpn.provider) if self.vpn else contextlib.nullcontext()

    def start_broker(self) -> None:
        with self.provider_side():
            self.broker.start()

    def start_provider(self) -> None:
        with self.provider_side():
            self._start_provider()

    def _start_provider(self) -> None:
        self.broker.start()
        self.subscriber = ProviderSubscriber(
            SubscriberSettings(
                self.broker.host,
                self.broker.port,
                self.pki.ca_cert,
                self.pki.provider_cert,
                self.pki.provider_key,
            ),
            self.verifier,
            on_batch=self.received.on_batch,
        )
        self.subscriber.start()
        assert self.subscriber.wait_subscribed(15), "provider could not subscribe"

    def write_config(self, devices: list[tuple[str, str, float, int]], **uplink: object) -> Path:
        gw = self.pki.gateway(self.gateway_id)
        extra = "".join(f"{k} = {v}\n" for k, v in uplink.items())
        sims = "".join(
            f'\n[[sim_devices]]\nkind = "{k}"\naddress = "{a}"\ninterval_s = {i}\ncount = {c}\n'
            for k, a, i, c in devices
        )
        path = self.base / "gateway.toml"
        path.write_text(
            f'[gateway]\nid = "{self.gateway_id}"\nepisode = "ep-it"\ntest_episode = true\n'
            f'state_dir = "{self.state_dir}"\n'
            f'log_level = "debug"\n\n[identity]\nsigning_key = "{gw.identity_key}"\n\n'
            f'[provider]\nhpke_public_key = "{self.pki.hpke_pub}"\n{self._pq_lines()}\n'
            f'[control]\nsocket = "{self.control_socket}"\n\n'
            f'[uplink]\nhost = "{self.broker.host}"\nport = {self.broker.port}\n'
            f'ca_file = "{self.pki.ca_cert}"\ncert_file = "{gw.client_cert}"\n'
            f'key_file = "{gw.client_key}"\nkeepalive_s = 5\n{extra}{sims}'
        )
        return path

    def _pq_lines(self) -> str:
        if not self.pq:
            return ""
        return f'suite = "mlkem768-x25519"\nmlkem_public_key = "{self.pki.hpke_mlkem768_pub}"\n'

    def start_daemon(self, config: Path, env_extra: dict[str, str] | None = None) -> None:
        env = dict(os.environ)
        env.pop("NOTIFY_SOCKET", None)
        env["PYTHONFAULTHANDLER"] = "1"  # as under systemd: SIGABRT prints every thread's stack
        env.update(env_extra or {})
        with self.log_path.open("ab") as log:
            prefix = self.vpn.exec_prefix(self.vpn.home) if self.vpn else []
            self.daemon = subprocess.Popen(
                [*prefix, sys.executable, "-m", "gateway.daemon.main", "--config", str(config)],
                stdout=log,
                stderr=log,
                env=env,
            )

    def stop_daemon(self, sig: int = signal.SIGTERM, timeout_s: float = 20) -> int:
        assert self.daemon is not None
        if self.daemon.poll() is None:
            self.daemon.send_signal(sig)
        try:
            return self.daemon.wait(timeout_s)
        except subprocess.TimeoutExpired:
            # What systemd's watchdog / stop timeout would do: abort, leaving the stacks behind.
            self.daemon.send_signal(signal.SIGABRT)
            self.daemon.wait(10)
            raise AssertionError(
                f"gatewayd did not stop within {timeout_s} s; its stacks:\n"
                f"{self.log_text()[-6000:]}"
            ) from None

    def status(self, config: Path) -> dict[str, Any]:
        """What ``gatewayctl status --json`` says about the running daemon."""
        proc = subprocess.run(
            [sys.executable, "-m", "gateway.cli.main", "status", "--json", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        result: dict[str, Any] = json.loads(proc.stdout)
        return result

    def outbox_bytes(self) -> int:
        try:
            conn = sqlite3.connect(f"file:{self.state_dir / 'outbox.db'}?mode=ro", uri=True)
            try:
                return int(conn.execute("SELECT coalesce(sum(size), 0) FROM records").fetchone()[0])
            finally:
                conn.close()
        except sqlite3.Error:
            return -1

    def outbox_depth(self) -> int:
        try:
            conn = sqlite3.connect(
                f"file:{self.state_dir / 'outbox.db'}?mode=ro", uri=True, timeout=5
            )
            try:
                return int(conn.execute("SELECT count(*) FROM records").fetchone()[0])
            finally:
                conn.close()
        except sqlite3.Error:
            return -1

    def rss_kib(self) -> int | None:
        """The daemon's resident set (VmRSS, KiB) now; None once it has exited."""
        if self.daemon is None:
            return None
        try:
            for line in Path(f"/proc/{self.daemon.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            return None
        return None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def close(self) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.kill()
            self.daemon.wait(10)
        if self.subscriber is not None:
            self.subscriber.stop()
        if self.broker.is_running if self.broker._proc else False:
            self.broker.stop()


def rig_fixture(tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(tmp_path)
    try:
        yield rig
    finally:
        rig.close()
