"""sd_notify without a dependency: one datagram to $NOTIFY_SOCKET (systemd's protocol)."""

from __future__ import annotations

import contextlib
import os
import socket


class SystemdNotifier:
    """Sends READY=1, STATUS=..., WATCHDOG=1, STOPPING=1 when run under systemd; else no-op."""

    def __init__(self, address: str | None = None) -> None:
        addr = address if address is not None else os.environ.get("NOTIFY_SOCKET")
        self._address: str | None = None
        self._sock: socket.socket | None = None
        if addr:
            # An abstract-namespace socket is written "@name" in the variable.
            self._address = "\0" + addr[1:] if addr.startswith("@") else addr
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, *states: str) -> None:
        if self._sock is None or self._address is None or not states:
            return
        # systemd gone or socket full: the service manager will notice by itself.
        with contextlib.suppress(OSError):
            self._sock.sendto("\n".join(states).encode("utf-8"), self._address)

    def watchdog_interval_s(self) -> float | None:
        """Half the WatchdogSec systemd gave us (its recommendation), if it is for this process."""
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or (pid and pid != str(os.getpid())):
            return None
        try:
            return int(usec) / 2_000_000
        except ValueError:
            return None

