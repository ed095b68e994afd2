"""The rig the benchmarks share: a throwaway PKI, local mosquitto brokers, gatewayd as a process.

Loopback only. Each benchmark gets a broker of its own (a persistent provider session left on one
broker by one benchmark must not make the broker queue messages during the next one).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.common import EPISODE_ID, GATEWAY_ID, BenchError
from gateway.seal import keys
from gateway.uplink.mqtt import UplinkSettings
from provider.broker import MosquittoBroker
from provider.service import SubscriberSettings
from provider.verifier import Verifier
from rig.pki import RigPki, create_rig_pki

CLK_TCK = os.sysconf("SC_CLK_TCK")
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0


@dataclass(frozen=True, slots=True)
class SimDevice:
    kind: str
    address: str
    interval_s: float
    stream: bool = False  # a continuous stream: lane STREAM, sealed in chunks


class BenchRig:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.pki: RigPki = create_rig_pki(base / "pki", gateway_ids=[GATEWAY_ID])
        self._brokers: list[MosquittoBroker] = []

    def start_broker(self, name: str) -> MosquittoBroker:
        broker = MosquittoBroker(self.pki, self.base / f"broker-{name}")
        broker.start()
        self._brokers.append(broker)
        return broker

    def uplink_settings(self, broker: MosquittoBroker) -> UplinkSettings:
        gw = self.pki.gateway(GATEWAY_ID)
        return UplinkSettings(
            host=broker.host,
            port=broker.port,
            ca_file=self.pki.ca_cert,
            cert_file=gw.client_cert,
            key_file=gw.client_key,
            client_id=GATEWAY_ID,
        )

    def provider_side(
        self, broker: MosquittoBroker, client_id: str
    ) -> tuple[SubscriberSettings, Verifier]:
        """What the provider's subscriber needs for ``broker``: its settings under ``client_id``
        (a fresh id per run: no queue left over from another) and a verifier for our gateway."""
        verifier = Verifier(
            keys.load_provider_x25519_private(self.pki.hpke_key),
            {GATEWAY_ID: keys.load_gateway_public_key(self.pki.gateway(GATEWAY_ID).identity_pub)},
        )
        settings = SubscriberSettings(
            broker.host,
            broker.port,
            self.pki.ca_cert,
            self.pki.provider_cert,
            self.pki.provider_key,
            client_id=client_id,
        )
        return settings, verifier

    def write_config(
        self, broker: MosquittoBroker, state_dir: Path, devices: Sequence[SimDevice]
    ) -> Path:
        """A gateway.toml with the daemon's defaults apart from identity, broker and devices."""
        gw = self.pki.gateway(GATEWAY_ID)
        sims = "".join(
            f'\n[[sim_devices]]\nkind = "{d.kind}"\naddress = "{d.address}"\n'
            f"interval_s = {d.interval_s}\n" + ("stream = true\n" if d.stream else "")
            for d in devices
        )
        path = state_dir.with_suffix(".toml")
        path.write_text(
            f'[gateway]\nid = "{GATEWAY_ID}"\nepisode = "{EPISODE_ID}"\n'
            f'state_dir = "{state_dir}"\nlog_level = "info"\n\n'
            f'[identity]\nsigning_key = "{gw.identity_key}"\n\n'
            f'[provider]\nhpke_public_key = "{self.pki.hpke_pub}"\n\n'
            # A socket of its own: never the system daemon's default path.
            f'[control]\nsocket = "{state_dir}.sock"\n\n'
            f'[uplink]\nhost = "{broker.host}"\nport = {broker.port}\n'
            f'ca_file = "{self.pki.ca_cert}"\ncert_file = "{gw.client_cert}"\n'
            f'key_file = "{gw.client_key}"\n{sims}'
        )
        return path

    def close(self) -> None:
        for broker in self._brokers:
            broker.stop()
        self._brokers.clear()


@dataclass(frozen=True, slots=True)
class ProcSample:
    rss_kb: int
    hwm_kb: int
    cpu_s: float  # user + system time of all threads (and of waited-for children)


def proc_sample(pid: int) -> ProcSample:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = {k: v for k, _, v in (line.partition(":") for line in status.splitlines())}
    # /proc/<pid>/stat: the command may hold spaces, so count fields after its closing ")".
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(x) for x in stat[11:15])
    return ProcSample(
        rss_kb=int(fields["VmRSS"].split()[0]),
        hwm_kb=int(fields["VmHWM"].split()[0]),
        cpu_s=(utime + stime + cutime + cstime) / CLK_TCK,
    )


def _stat_cpu_s(path: Path) -> float:
    stat = path.read_text().rsplit(")", 1)[1].split()
    return (int(stat[11]) + int(stat[12])) / CLK_TCK


def thread_cpu_s(pid: int) -> dict[int, float]:
    """utime + stime per thread (thread id -> seconds); the main thread's id is the pid."""
    out: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out[int(task.name)] = _stat_cpu_s(task / "stat")
        except (OSError, IndexError, ValueError):
            continue  # the thread ended between listing and reading
    return out


class Daemon:
    """``python -m gateway.daemon.main --config ...`` as a child, READY=1 seen on our notify
    socket."""

    def __init__(self, config: Path, workdir: Path, name: str) -> None:
        self.config = config
        self.log_path = workdir / f"gatewayd-{name}.log"
        self._sock_path = workdir / f"notify-{name}.sock"
        self.proc: subprocess.Popen[bytes] | None = None
        self.startup_s: float | None = None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise BenchError("gatewayd is not running")
        return self.proc.pid

    def start(self) -> float:
        """Spawn and wait for READY=1; returns seconds from spawn to READY."""
        env = dict(os.environ, NOTIFY_SOCKET=str(self._sock_path))
        env.pop("WATCHDOG_USEC", None)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(str(self._sock_path))
            with self.log_path.open("ab") as log:
                t0 = time.monotonic()
                self.proc = subprocess.Popen(  # noqa: S603 - our interpreter, arguments we built
                    [sys.executable, "-m", "gateway.daemon.main", "--config", str(self.config)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    env=env,
                )
            self.startup_s = self._wait_ready(sock, t0)
        self._sock_path.unlink(missing_ok=True)
        return self.startup_s

    def _wait_ready(self, sock: socket.socket, t0: float) -> float:
        assert self.proc is not None
        deadline = t0 + READY_TIMEOUT_S
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.proc.poll() is not None:
                self.kill()
                raise BenchError(f"gatewayd did not report READY=1; see {self.log_path}")
            sock.settimeout(min(remaining, 0.5))
            try:
                message = sock.recv(4096).decode(errors="replace")
            except TimeoutError:
                continue
            if "READY=1" in message.splitlines():
                return time.monotonic() - t0

    def sample(self) -> ProcSample:
        return proc_sample(self.pid)

    def stop(self) -> int:
        """SIGTERM and wait for a clean exit (the daemon flushes and closes the outbox)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            raise BenchError(f"gatewayd did not stop within {STOP_TIMEOUT_S} s") from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT_S)
