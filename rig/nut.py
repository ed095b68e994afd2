"""A scripted UPS for the simulated home: NUT's real upsd with the dummy-ups driver.

Both run as our own processes (no system service) with a private configuration and state
directory (NUT_CONFPATH, NUT_STATEPATH) and upsd on a loopback port. dummy-ups plays the state
in ``ups.dev``; :meth:`NutRig.set_state` rewrites it (atomically: a rename, so the driver never
reads half a file) and dummy-ups picks it up at its next poll (``-i 1``: within a second or
two). :meth:`NutRig.wait_for` polls upsd until it reports the new state - never a fixed sleep.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from gateway.errors import GatewayError

DRIVER_DIRS = (Path("/lib/nut"), Path("/usr/lib/nut"))
START_TIMEOUT_S = 20.0


class NutRigError(GatewayError):
    hint = "install NUT (apt-get install nut-server nut-client: scripts/install-sysdeps.sh)"


def find_nut() -> tuple[str, str]:
    """(upsd, dummy-ups): the real binaries, not Debian's /usr/sbin/upsd wrapper (it needs
    MODE= in /etc/nut/nut.conf)."""
    for d in DRIVER_DIRS:
        upsd, dummy = d / "upsd", d / "dummy-ups"
        if upsd.exists() and dummy.exists():
            return str(upsd), str(dummy)
    upsd_path, dummy_path = shutil.which("upsd"), shutil.which("dummy-ups")
    if upsd_path and dummy_path:
        return upsd_path, dummy_path
    raise NutRigError("NUT's upsd and dummy-ups are not installed")


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def query(host: str, port: int, ups: str, timeout_s: float = 2.0) -> dict[str, str]:
    """upsd's ``LIST VAR`` as a dict (blocking; the test side, like ``upsc``)."""
    with socket.create_connection((host, port), timeout=timeout_s) as s:
        s.sendall(f"LIST VAR {ups}\n".encode())
        data = b""
        end = f"END LIST VAR {ups}\n".encode()
        while end not in data and not data.startswith(b"ERR"):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    out = {}
    for line in data.decode().splitlines():
        parts = line.split(" ", 3)
        if len(parts) == 4 and parts[0] == "VAR":
            out[parts[2]] = parts[3].strip('"')
    return out


class NutRig:
    def __init__(self, base: Path, ups: str = "ups", host: str = "127.0.0.1") -> None:
        self.base = base
        self.ups = ups
        self.host = host
        self.port = 0
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[IO[bytes]] = []
        self.state: dict[str, str] = {}
        self._mtime = 0.0

    @property
    def name(self) -> str:
        return f"{self.ups}@{self.host}:{self.port}"

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            NUT_CONFPATH=str(self.base),
            NUT_STATEPATH=str(self.base / "state"),
            NUT_ALTPIDPATH=str(self.base / "state"),
        )
        return env

    def set_state(
        self,
        status: str = "OL",
        *,
        charge_pct: float = 100,
        runtime_s: float = 1800,
        test_result: str = "Done and passed",
        extra: Mapping[str, str] | None = None,
    ) -> None:
        """What the UPS reports from now on (``status``: NUT flags such as "OB DISCHRG LB")."""
        self.state = {
            "ups.status": status,
            "battery.charge": f"{charge_pct:g}",
            "battery.runtime": f"{runtime_s:g}",
            "ups.test.result": test_result,
            **(extra or {}),
        }
        tmp = self.base / ".ups.dev.tmp"
        tmp.write_text("".join(f"{k}: {v}\n" for k, v in self.state.items()))
        # dummy-ups re-reads the file when its modification time changes, in whole seconds:
        # two changes within one second would look like one, so each gets a later second.
        self._mtime = max(float(int(time.time())), self._mtime + 1.0)
        os.utime(tmp, (self._mtime, self._mtime))
        tmp.replace(self.base / "ups.dev")

    def start(self) -> None:
        upsd, dummy = find_nut()
        (self.base / "state").mkdir(parents=True, exist_ok=True)
        (self.base / "state").chmod(0o700)
        if not self.state:
            self.set_state()
        self.port = self.port or _free_port(self.host)
        files = {
            "ups.conf": f'[{self.ups}]\n  driver = dummy-ups\n  port = ups.dev\n  desc = "rig"\n',
            "upsd.conf": f"LISTEN {self.host} {self.port}\n",
            "upsd.users": "",
        }
        for name, text in files.items():
            (self.base / name).write_text(text)
            (self.base / name).chmod(0o600)
        user = ["-u", pwd.getpwuid(os.geteuid()).pw_name]
        self._spawn("dummy-ups", [dummy, "-a", self.ups, "-F", "-i", "1", *user])
        self.start_upsd(upsd)

    def start_upsd(self, upsd: str | None = None) -> None:
        upsd = upsd or find_nut()[0]
        user = ["-u", pwd.getpwuid(os.geteuid()).pw_name]
        self._spawn("upsd", [upsd, "-F", *user])
        self.wait_for(lambda v: v.get("ups.status") == self.state["ups.status"], START_TIMEOUT_S)

    def stop_upsd(self) -> None:
        """upsd goes away (the UPS is "unreachable"); the driver keeps running."""
        self._stop("upsd")

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = (self.base / f"{name}.log").open("ab")
        self._logs.append(log)
        self._procs[name] = subprocess.Popen(  # noqa: S603 - our own binaries and arguments
            argv, env=self._env(), stdout=log, stderr=subprocess.STDOUT, cwd=self.base
        )

    def wait_for(
        self, predicate: Callable[[dict[str, str]], bool], timeout_s: float = 15.0
    ) -> dict[str, str]:
        """Poll upsd until ``predicate(variables)`` holds; the variables then."""
        deadline = time.monotonic() + timeout_s
        last: dict[str, str] | Exception = {}
        while time.monotonic() < deadline:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    raise NutRigError(f"{name} exited ({proc.returncode}): {self._tail(name)}")
            try:
                last = query(self.host, self.port, self.ups)
                if predicate(last):
                    return last
            except OSError as exc:
                last = exc
            time.sleep(0.1)
        raise NutRigError(f"upsd did not report the expected state in {timeout_s} s: {last}")

    def wait_state(self, timeout_s: float = 15.0) -> dict[str, str]:
        """Wait until upsd reports every variable last set with :meth:`set_state`."""
        want = dict(self.state)
        return self.wait_for(lambda v: all(v.get(k) == x for k, x in want.items()), timeout_s)

    def _tail(self, name: str) -> str:
        path = self.base / f"{name}.log"
        return path.read_text(errors="replace")[-1500:] if path.exists() else ""

    def _stop(self, name: str) -> None:
        proc = self._procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def stop(self) -> None:
        for name in ("upsd", "dummy-ups"):
            self._stop(name)
        for log in self._logs:
            log.close()
        self._logs.clear()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
