"""One open serial port for asyncio: pyserial in threads, never on the event loop (DESIGN inv. 6).

A reader thread blocks in ``Serial.read`` and hands chunks to the loop through a bounded inbox:
when the driver falls behind, the thread waits for room, the kernel's tty buffer fills and, past
that, the device's bytes are dropped by the line - never by an unbounded list in our memory.
Writes run in a worker thread with a write timeout. Whatever goes wrong becomes a
:class:`~drivers.serial.port_errors.SerialPortError` (see :func:`port_errors.classify`); bytes
read before a failure are still delivered before the error is raised.

Ports are opened by a stable path (``/dev/serial/by-id/...`` or a udev name such as
``/dev/homecare/crp``): ``/dev/ttyUSB0`` names whichever adapter enumerated first and can move to
another device after a replug. The lock is pyserial's ``exclusive=True`` (``flock``), so a second
gatewayd or a technician's terminal cannot interleave bytes with ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import re
import threading
from collections import deque
from dataclasses import dataclass, field

import serial  # type: ignore[import-untyped, unused-ignore]  # stubs: types-pyserial
import structlog

from drivers.serial.port_errors import PortUnpluggedError, SerialPortError, classify
from gateway.errors import ConfigError

log = structlog.get_logger("drivers.serial.port")

_UNSTABLE = re.compile(r"^/dev/tty(USB|ACM|S)\d+$")
_LINE = re.compile(r"^\s*(\d+)\s+([5-8])([NEOMS])(1|1\.5|2)\s*$", re.IGNORECASE)
_BAUDS = frozenset(
    {300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600}
)


class Parity(enum.StrEnum):
    NONE = "N"
    EVEN = "E"
    ODD = "O"
    MARK = "M"
    SPACE = "S"


class FlowControl(enum.StrEnum):
    NONE = "none"
    RTSCTS = "rtscts"  # hardware handshake
    XONXOFF = "xonxoff"  # never for binary protocols: 0x11 / 0x13 would vanish from the data
    DSRDTR = "dsrdtr"


@dataclass(frozen=True, slots=True)
class LineSettings:
    """Per-device line settings; ``LineSettings.parse("19200 8O1")`` reads the usual notation."""

    baud: int = 9600
    bytesize: int = 8
    parity: Parity = Parity.NONE
    stopbits: float = 1
    flow: FlowControl = FlowControl.NONE

    def __post_init__(self) -> None:
        if self.baud not in _BAUDS:
            raise ConfigError("baud", f"{self.baud} is not a standard baud rate")
        if self.bytesize not in (5, 6, 7, 8):
            raise ConfigError("bytesize", "must be 5, 6, 7 or 8")
        if self.stopbits not in (1, 1.5, 2):
            raise ConfigError("stopbits", "must be 1, 1.5 or 2")
        object.__setattr__(self, "parity", Parity(self.parity))
        object.__setattr__(self, "flow", FlowControl(self.flow))

    @classmethod
    def parse(cls, text: str, flow: FlowControl = FlowControl.NONE) -> LineSettings:
        match = _LINE.match(text)
        if match is None:
            raise ConfigError("line", f"{text!r} is not like '9600 8N1'")
        baud, size, parity, stop = match.groups()
        return cls(int(baud), int(size), Parity(parity.upper()), float(stop), flow)

    def __str__(self) -> str:
        stop = f"{self.stopbits:g}"
        flow = "" if self.flow is FlowControl.NONE else f" {self.flow}"
        return f"{self.baud} {self.bytesize}{self.parity}{stop}{flow}"


@dataclass(frozen=True, slots=True)
class PortSpec:
    """Where a device is and how to talk to it; buffers are bounded by ``chunk * chunks``."""

    path: str
    line: LineSettings = field(default_factory=LineSettings)
    exclusive: bool = True
    chunk_bytes: int = 4096
    buffer_chunks: int = 64
    write_timeout_s: float = 2.0
    poll_s: float = 0.1  # how often the reader thread looks up to notice a close

    def __post_init__(self) -> None:
        if not os.path.isabs(self.path):
            raise ConfigError("path", f"{self.path!r} is not an absolute device path")
        if self.chunk_bytes < 1 or self.buffer_chunks < 1 or self.write_timeout_s <= 0:
            raise ConfigError("buffer", "buffer sizes and the write timeout must be positive")

    @property
    def stable(self) -> bool:
        """False for kernel names (ttyUSB0, ttyACM0) that move between devices on a replug."""
        return _UNSTABLE.match(self.path) is None


class _Inbox:
    """Chunks from the reader thread to the loop; ``put`` blocks the thread when full."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_chunks: int) -> None:
        self._loop = loop
        self._items: deque[bytes] = deque()
        self._slots = threading.Semaphore(max_chunks)
        self._ready = asyncio.Event()
        self._woken = False
        self.error: SerialPortError | None = None

    # reader-thread side
    def put(self, chunk: bytes, stop: threading.Event) -> bool:
        while not self._slots.acquire(timeout=0.1):
            if stop.is_set():
                return False
        self._items.append(chunk)
        self._notify()
        return True

    def fail(self, error: SerialPortError) -> None:
        self.error = error
        self._notify()

    def _notify(self) -> None:
        with contextlib.suppress(RuntimeError):  # loop already closed: nobody reads any more
            self._loop.call_soon_threadsafe(self._ready.set)

    # event-loop side
    @property
    def chunks(self) -> int:
        return len(self._items)

    def wake(self) -> None:
        self._woken = True
        self._ready.set()

    def _take(self) -> bytes:
        parts: list[bytes] = []
        while self._items:
            parts.append(self._items.popleft())
            self._slots.release()
        return b"".join(parts)

    async def get(self, timeout_s: float) -> bytes:
        """Bytes as soon as there are any; b"" after ``timeout_s`` or a wake(); else the error."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            data = self._take()
            if data or self._woken:
                self._woken = False
                return data
            if self.error is not None:
                raise self.error
            remaining = deadline - loop.time()
            if remaining <= 0:
                return b""
            self._ready.clear()
            if self._items or self.error is not None:
                continue  # arrived between the look above and the clear: no wait needed
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._ready.wait()


def _open_blocking(spec: PortSpec) -> serial.Serial:
    line = spec.line
    ser = serial.Serial()
    ser.port = spec.path
    ser.baudrate = line.baud
    ser.bytesize = line.bytesize
    ser.parity = line.parity.value
    ser.stopbits = line.stopbits
    ser.rtscts = line.flow is FlowControl.RTSCTS
    ser.xonxoff = line.flow is FlowControl.XONXOFF
    ser.dsrdtr = line.flow is FlowControl.DSRDTR
    ser.timeout = spec.poll_s
    ser.write_timeout = spec.write_timeout_s
    ser.exclusive = spec.exclusive
    try:
        ser.open()
    except (OSError, ValueError) as exc:  # SerialException is an OSError
        raise classify(exc, path=spec.path, during="open") from exc
    return ser


def _close_if_opened(opening: asyncio.Future[serial.Serial]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        with contextlib.suppress(OSError):
            opening.result().close()


class SerialPort:
    """An open port. Use :meth:`open`; always :meth:`close` (also on cancellation)."""

    def __init__(self, ser: serial.Serial, spec: PortSpec, loop: asyncio.AbstractEventLoop) -> None:
        self.spec = spec
        self.device = os.path.realpath(spec.path)  # the tty behind the stable name, for logs
        self._ser = ser
        self._inbox = _Inbox(loop, spec.buffer_chunks)
        self._stop = threading.Event()
        self._write_lock = asyncio.Lock()
        self._closed = False
        self._thread = threading.Thread(
            target=self._reader, name=f"serial-read:{spec.path}", daemon=True
        )

    @classmethod
    async def open(cls, spec: PortSpec) -> SerialPort:
        opening = asyncio.ensure_future(asyncio.to_thread(_open_blocking, spec))
        try:
            ser = await asyncio.shield(opening)
        except asyncio.CancelledError:
            # The thread may still succeed: close that port, or its flock blocks the next open.
            opening.add_done_callback(_close_if_opened)
            raise
        port = cls(ser, spec, asyncio.get_running_loop())
        port._thread.start()
        return port

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def buffered_chunks(self) -> int:
        """Chunks read but not yet taken by the driver (at most ``spec.buffer_chunks``)."""
        return self._inbox.chunks

    def _reader(self) -> None:
        ser, chunk = self._ser, self.spec.chunk_bytes
        try:
            while not self._stop.is_set():
                first = ser.read(1)  # returns b"" after poll_s, so the stop flag is seen
                if not first:
                    continue
                waiting = min(ser.in_waiting, chunk - 1)
                data = first + ser.read(waiting) if waiting else first
                if not self._inbox.put(data, self._stop):
                    return
        except (OSError, ValueError, TypeError) as exc:  # TypeError: fd gone under a close
            if not self._stop.is_set():
                self._inbox.fail(classify(exc, path=self.spec.path, during="read"))

    async def read(self, timeout_s: float) -> bytes:
        """What arrived (possibly several chunks joined); b"" after ``timeout_s`` or a wake()."""
        if self._closed:
            raise PortUnpluggedError("serial port is closed", path=self.spec.path)
        return await self._inbox.get(timeout_s)

    def wake(self) -> None:
        """Make a pending :meth:`read` return now (the driver has something else to do)."""
        self._inbox.wake()

    async def write(self, data: bytes) -> None:
        if self._closed:
            raise PortUnpluggedError("serial port is closed", path=self.spec.path)
        async with self._write_lock:  # writes leave in the order they were asked for
            try:
                await asyncio.to_thread(self._ser.write, data)
            except (OSError, ValueError, TypeError) as exc:
                error = classify(exc, path=self.spec.path, during="write")
                self._inbox.fail(error)
                raise error from exc

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        with contextlib.suppress(OSError, TypeError):
            self._ser.cancel_read()
        await asyncio.to_thread(self._shutdown)
        log.debug("serial.port.closed", path=self.spec.path)

    def _shutdown(self) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)
        with contextlib.suppress(OSError, TypeError):
            self._ser.close()

    async def __aenter__(self) -> SerialPort:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
