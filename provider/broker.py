"""A real mosquitto broker for the simulated rig, the demo and the integration tests.

The broker runs with the rig PKI (:mod:`rig.pki`): TLS only, a client certificate is
required and its CN becomes the MQTT username, so the ACL can confine each gateway to its own topic
tree. This is test infrastructure, not a production broker deployment.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from gateway.errors import GatewayError
from rig.pki import PROVIDER_CN, RigPki

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
_POLL_INTERVAL_S = 0.05
# Where Debian/Ubuntu and source installs put the binary; /usr/sbin is often not on a user's PATH.
_FALLBACK_LOCATIONS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
_INSTALL_HINT = "install it with: apt-get install mosquitto"
# An auto-picked port can be taken between our probe and mosquitto's bind; try a fresh one.
_AUTO_PORT_ATTEMPTS = 3


class BrokerError(GatewayError):
    """The rig's mosquitto broker could not be found, started or stopped."""

    hint = "read the broker log named in the message; is mosquitto installed and the port free?"


def find_mosquitto() -> str:
    """The mosquitto binary: first on PATH, then the usual sbin locations."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in _FALLBACK_LOCATIONS:
        if os.access(candidate, os.X_OK):
            return candidate
    raise BrokerError(
        f"mosquitto not found on PATH or in {', '.join(_FALLBACK_LOCATIONS)}; {_INSTALL_HINT}",
        hint=_INSTALL_HINT,
    )


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _free_port(host: str) -> int:
    # mosquitto cannot listen on port 0 and report what it got, so we ask the kernel for a free
    # port, release it and hand the number to mosquitto (a small race, covered by retrying).
    with socket.socket(_family(host)) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _port_in_use(host: str, port: int) -> bool:
    # Checked before spawning because the readiness probe below only sees "something accepts TCP":
    # another listener on the port would pass it while mosquitto itself fails to bind.
    # SO_REUSEADDR as mosquitto sets it, so TIME_WAIT leftovers of a restart do not count.
    with socket.socket(_family(host)) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"({path.name}: nothing written)"
    return "\n".join(text.splitlines()[-lines:]) or f"({path.name}: empty)"


class MosquittoBroker:
    """One mosquitto process; ``start``/``stop``/``restart`` keep the same port across restarts."""

    def __init__(
        self,
        pki: RigPki,
        workdir: Path,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        acl: bool = True,
        crl_file: Path | None = None,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port {port} out of range")
        self._pki = pki
        self._workdir = workdir
        self._host = host
        self._acl = acl
        # A CRL (PEM) of the rig CA: mosquitto then refuses revoked client certificates. It is
        # read when the listener starts, so a new CRL takes effect with restart().
        self.crl_file = crl_file
        self._port: int | None = port or None
        self._auto_port = port == 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._output: IO[bytes] | None = None
        self.conf_path = workdir / "mosquitto.conf"
        self.acl_path = workdir / "mosquitto.acl"
        self.log_path = workdir / "mosquitto.log"
        # stdout/stderr: mosquitto reports configuration errors there, before its log file opens.
        self.output_path = workdir / "mosquitto.out"

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        if self._port is None:
            raise BrokerError("the broker has not been started yet, so it has no port")
        return self._port

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def poll(self) -> int | None:
        """None while mosquitto runs; its exit status once it exited (on its own or by stop())."""
        if self._proc is None:
            raise BrokerError("the broker has never been started")
        return self._proc.poll()

    def start(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            raise BrokerError(f"the broker is already running on {self._host}:{self._port}")
        binary = find_mosquitto()
        self._workdir.mkdir(parents=True, exist_ok=True)
        # Only a port we picked ourselves may be swapped for another one.
        attempts = _AUTO_PORT_ATTEMPTS if self._auto_port and self._port is None else 1
        for attempt in range(1, attempts + 1):
            port = self._port or _free_port(self._host)
            if _port_in_use(self._host, port):
                if attempt < attempts:
                    continue
                raise BrokerError(f"{self._host}:{port} is already in use by another process")
            self._write_config(port)
            proc = self._spawn(binary)
            try:
                self._wait_listening(proc, port)
            except BrokerError:
                if attempt < attempts and "Address already in use" in self._log_tails():
                    continue  # lost the race for the picked port: pick another
                raise
            self._port = port  # fixed from now on: restart() must come back on the same port
            return

    def stop(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # mosquitto closes its listeners and exits cleanly
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT_S)
        self._close_output()

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- internals ---------------------------------------------------------------------------

    def _write_config(self, port: int) -> None:
        pki = self._pki
        paths = [pki.ca_cert, pki.broker_cert, pki.broker_key, self.log_path, self.acl_path]
        paths += [self.crl_file] if self.crl_file is not None else []
        if any("\n" in str(p) for p in paths):
            raise BrokerError("a broker file path contains a newline; mosquitto.conf can't hold it")
        lines = [
            "# Written by provider.broker for the simulated rig; rewritten on every start.",
            # When started as root mosquitto drops to user 'mosquitto', which could not read our
            # 0600 keys; naming the current user keeps it as is (and is ignored when not root).
            f"user {pwd.getpwuid(os.geteuid()).pw_name}",
            "per_listener_settings false",
            "allow_anonymous false",
            # Persistent: the provider's session (its subscription and the QoS 1 messages queued
            # for it) survives a broker restart, as a production broker's must. Otherwise a
            # gateway that reconnects first would get PUBACKs for batches nobody will receive.
            "persistence true",
            f"persistence_location {self._workdir}/",
            "autosave_interval 1",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        ]
        if self._acl:
            lines.append(f"acl_file {self.acl_path}")
            self._write_acl()
        lines += [
            f"listener {port} {self._host}",
            f"cafile {pki.ca_cert}",
            f"certfile {pki.broker_cert}",
            f"keyfile {pki.broker_key}",
            "require_certificate true",
            *([f"crlfile {self.crl_file}"] if self.crl_file is not None else []),
            # The certificate CN (gateway id / provider-verifier) is the username the ACL matches.
            "use_identity_as_username true",
            # Since mosquitto 2.0 this is the minimum version: TLS 1.2 and 1.3 are accepted.
            "tls_version tlsv1.2",
        ]
        self.conf_path.write_text("\n".join(lines) + "\n")

    def _write_acl(self) -> None:
        self.acl_path.write_text(
            "# %u is the client certificate CN (use_identity_as_username): a gateway may publish\n"
            "# only below its own id, so one router cannot forge another's records or health.\n"
            "pattern write homecare/v1/gw/%u/#\n"
            "# Signed commands (issue 20): a gateway reads only its own command topic; only the\n"
            "# provider writes there. (The signature is the real guard; this keeps a compromised\n"
            "# router from even offering forged or replayed commands to another one.)\n"
            "pattern read homecare/v1/cmd/%u\n"
            "\n"
            f"user {PROVIDER_CN}\n"
            "topic read homecare/v1/gw/#\n"
            "topic write homecare/v1/cmd/#\n"
        )

    def _spawn(self, binary: str) -> subprocess.Popen[bytes]:
        self._close_output()
        self._output = self.output_path.open("ab")
        self._proc = subprocess.Popen(  # noqa: S603 - fixed binary, arguments we built
            [binary, "-c", str(self.conf_path)],
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT,
        )
        return self._proc

    def _wait_listening(self, proc: subprocess.Popen[bytes], port: int) -> None:
        """Bounded wait until the listener accepts TCP; on failure the log tail says why."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            status = proc.poll()
            if status is not None:
                self._close_output()
                raise BrokerError(
                    f"mosquitto exited with status {status} before listening on "
                    f"{self._host}:{port}\n{self._log_tails()}"
                )
            # mosquitto opens its listen socket before it loads the TLS key and certificates,
            # and exits if they are bad: a connection alone can reach a broker about to die.
            # Ready is its "running" line (logged once every listener is set up) and a listener
            # that accepts TCP.
            if self._logged_running():
                try:
                    # Connect and hang up without a handshake: mosquitto logs one harmless
                    # "unexpected eof" line per start for this probe.
                    with socket.create_connection((self._host, port), timeout=0.5):
                        return
                except OSError:
                    pass
            if time.monotonic() >= deadline:
                self.stop()
                raise BrokerError(
                    f"mosquitto did not listen on {self._host}:{port} within "
                    f"{START_TIMEOUT_S:.0f} s\n{self._log_tails()}"
                )
            time.sleep(_POLL_INTERVAL_S)

    def _logged_running(self) -> bool:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return False
        # This start's lines only: a restart appends to the same log.
        last_start = text.rfind(" starting")
        return last_start >= 0 and text.find(" running", last_start) >= 0

    def _log_tails(self) -> str:
        return (
            f"--- {self.log_path} ---\n{_tail(self.log_path)}\n"
            f"--- {self.output_path} ---\n{_tail(self.output_path)}"
        )

    def _close_output(self) -> None:
        if self._output is not None:
            self._output.close()
            self._output = None
