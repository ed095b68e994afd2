"""A virtual serial device on a pseudo-terminal pair, driven by one thread.

The gateway opens the *slave* end with the real pyserial, through ``link``: a symlink we create
(in a temporary folder in tests) that stands in for ``/dev/serial/by-id/usb-...``. The device
reads and writes the *master* end. The device keeps its own handle on the slave so the pty lives
while the gateway reconnects, and puts it in raw mode at once (a fresh pty echoes and edits lines,
which no serial device does).

- ``unplug()`` closes both ends and removes the link: an open port hangs up (pyserial: "device
  reports readiness to read but returned no data"), opening the link fails with ENOENT;
  ``replug()`` makes a new pty behind the same link. Killing a device process does the same.
- Bytes written while nobody has the port open pile up in the tty (about 4 KiB) and are then
  dropped, as on a real line; the gateway flushes stale input when it opens the port.

Everything a device does happens in its thread; tests call the public methods from any thread
(they run as commands in the device thread) and read state under ``lock`` via :meth:`wait_until`.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import threading
import time
import tty
from collections.abc import Callable
from pathlib import Path
from typing import Self


class PtyDevice:
    tick_s = 0.005

    def __init__(self, link: Path, *, name: str) -> None:
        self.link = Path(link)
        self.name = name
        self.lock = threading.Condition()
        self.dropped_bytes = 0
        self.received = bytearray()  # every byte the gateway sent, for assertions
        self.errors: list[str] = []  # commands that failed in the device thread
        self._master: int | None = None
        self._slave: int | None = None
        self._commands: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- life cycle (any thread) ---------------------------------------------------------------

    def start(self) -> Self:
        self._plug()
        self._thread = threading.Thread(target=self._run, name=f"sim:{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._unplug()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def unplug(self) -> None:
        self.call(self._unplug_and_notify)

    def replug(self) -> None:
        self.call(self._replug_and_notify)

    @property
    def plugged(self) -> bool:
        return self._master is not None

    @property
    def slave_path(self) -> str | None:
        return None if self._slave is None else os.ttyname(self._slave)

    def call(self, command: Callable[[], None]) -> None:
        """Run ``command`` in the device thread (state changes never race the device)."""
        self._commands.put(command)

    def wait_until(self, predicate: Callable[[], bool], timeout_s: float = 5.0) -> bool:
        with self.lock:
            return self.lock.wait_for(predicate, timeout_s)

    # --- for subclasses (device thread) -------------------------------------------------------

    def on_data(self, data: bytes, now: float) -> None:
        """Bytes from the gateway."""

    def on_tick(self, now: float) -> None:
        """Called every ``tick_s``: send what is due."""

    def on_plug(self, plugged: bool, now: float) -> None:
        """The cable was plugged in (True) or pulled (False)."""

    def send(self, data: bytes) -> None:
        """Write to the line; what does not fit (nobody reading) is lost, as on a real line."""
        if self._master is None:
            self.dropped_bytes += len(data)
            return
        try:
            written = os.write(self._master, data)
        except BlockingIOError:
            written = 0
        except OSError:  # the slave side hung up for good: same as nobody listening
            written = 0
        self.dropped_bytes += len(data) - written

    # --- internals ----------------------------------------------------------------------------

    def _plug(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self.link.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.link.with_name(f".{self.link.name}.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(os.ttyname(slave))
        tmp.replace(self.link)  # atomic: the link never points nowhere while we plug in

    def _unplug(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.link.unlink()
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None

    def _unplug_and_notify(self) -> None:
        if self._master is not None:
            self._unplug()
            self.on_plug(False, time.monotonic())

    def _replug_and_notify(self) -> None:
        if self._master is None:
            self._plug()
            self.on_plug(True, time.monotonic())

    def _run(self) -> None:
        while not self._stop.is_set():
            data = self._read()
            with self.lock:
                now = time.monotonic()
                while True:
                    try:
                        command = self._commands.get_nowait()
                    except queue.Empty:
                        break
                    try:
                        command()
                    except (TypeError, ValueError) as exc:  # a bad test command: keep running
                        self.errors.append(f"{type(exc).__name__}: {exc}")
                if data:
                    self.received += data
                    self.on_data(data, now)
                self.on_tick(now)
                self.lock.notify_all()

    def _read(self) -> bytes:
        master = self._master
        if master is None:
            time.sleep(self.tick_s)
            return b""
        ready, _, _ = select.select([master], [], [], self.tick_s)
        if not ready:
            return b""
        try:
            return os.read(master, 4096)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError:  # EIO: nobody has the slave open (cannot happen while we hold it)
            time.sleep(self.tick_s)
            return b""
