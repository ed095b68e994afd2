"""A private ``dbus-daemon`` standing in for the system bus.

bleak (through dbus-fast) honours ``DBUS_SYSTEM_BUS_ADDRESS``, so pointing it at this bus is all
the redirection needed. The configuration is written to a temporary directory: a "system"-type
bus listening on a unix socket there, EXTERNAL authentication, and a policy that lets any
connection own any name (``org.bluez``, agents) and call anything - the real system bus policy
would need per-service files in /etc. No ``<user>`` line, so the daemon keeps the caller's user
(as root it would otherwise try to switch to ``messagebus``).
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from rig.ble.errors import SimError

DBUS_DAEMON = "/usr/bin/dbus-daemon"

_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
"""


class PrivateBus:
    """One ``dbus-daemon`` process and its temporary directory. ``start()`` returns the address
    (for ``DBUS_SYSTEM_BUS_ADDRESS``); ``stop()`` terminates it and removes the directory."""

    def __init__(self, *, daemon: str = DBUS_DAEMON, start_timeout_s: float = 5.0) -> None:
        self._daemon = daemon
        self._start_timeout_s = start_timeout_s
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self.address = ""

    @property
    def directory(self) -> Path:
        if self._dir is None:
            raise SimError("the private bus is not started")
        return self._dir

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> str:
        if self._proc is not None:
            raise SimError("the private bus is already started")
        if shutil.which(self._daemon) is None:
            raise SimError(f"{self._daemon} not found", daemon=self._daemon)
        self._dir = Path(tempfile.mkdtemp(prefix="bluez-sim-"))
        config = self._dir / "bus.conf"
        config.write_text(_CONFIG.format(socket=self._dir / "system_bus_socket"))
        read_end, write_end = os.pipe()
        log = (self._dir / "dbus-daemon.log").open("wb")
        try:
            self._proc = subprocess.Popen(  # noqa: S603 fixed executable, our own config file
                [self._daemon, f"--config-file={config}", "--nofork", "--nopidfile",
                 f"--print-address={write_end}"],
                pass_fds=(write_end,), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )
        finally:
            os.close(write_end)
            log.close()
        try:
            self.address = self._read_address(read_end)
        except BaseException:
            self.stop()
            raise
        finally:
            os.close(read_end)
        return self.address

    def _read_address(self, fd: int) -> str:
        """The daemon prints its address once it listens; wait for it, bounded."""
        deadline = time.monotonic() + self._start_timeout_s
        data = b""
        while not data.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                raise SimError("dbus-daemon did not report its address in time",
                               timeout_s=self._start_timeout_s)
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    raise SimError("dbus-daemon exited during start-up",
                                   log=str(self.directory / "dbus-daemon.log"))
                data += chunk
        return data.decode().strip()

    def stop(self, timeout_s: float = 3.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout_s)
        if self._dir is not None:
            with contextlib.suppress(OSError):
                shutil.rmtree(self._dir)
            self._dir = None
        self.address = ""
