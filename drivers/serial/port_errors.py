"""Serial transport errors and the pure classifier that turns pyserial / OS failures into them.

pyserial reports nearly everything as ``SerialException`` (an ``OSError`` subclass): on open with
the errno of the failing ``open()`` / ``flock()``; on read and write *without* an errno but with
the original ``OSError`` as ``__context__``; a vanished device as "device reports readiness to read
but returned no data" (select says readable, read returns nothing - a hung-up tty). The classifier
looks at all of that and answers with one of our types, which carries what the technician should
do (``hint``), the port state to report in health (``state``) and the least time to wait before
opening again (``min_wait_s``): trying a port another process holds every 50 ms helps nobody.

Blame is in the type (CONVENTIONS 4): unplugged / I/O errors are the device's or the cable's,
busy and permission errors are the installation's, settings errors are the configuration's.
"""

from __future__ import annotations

import errno
from typing import Any, ClassVar

import serial  # type: ignore[import-untyped, unused-ignore]  # stubs: types-pyserial

from gateway.errors import GatewayError

_EOF_TEXT = "returned no data"  # pyserial's message for a hung-up device (select ready, read 0)


class SerialPortError(GatewayError):
    """Root of the serial transport errors (the port, not the bytes on it)."""

    hint = "check the device, its cable and the port path in the configuration"
    state: ClassVar[str] = "port-error"
    min_wait_s: ClassVar[float] = 0.0

    def __init__(self, message: str, *, path: str, **fields: Any) -> None:
        super().__init__(message, path=path, **fields)
        self.path = path


class PortUnpluggedError(SerialPortError):
    """The port path is gone, or the device hung up while open (USB unplug, power cycle)."""

    hint = (
        "the device is unplugged or switched off: check the USB cable and the power of the"
        " device; the gateway reconnects by itself as soon as it is back"
    )
    state = "unplugged"


class PortBusyError(SerialPortError):
    """Another process holds the port (exclusive lock or TIOCEXCL)."""

    hint = (
        "another program holds the port (ModemManager, a terminal program, a second gatewayd):"
        " stop it, or exclude the device from ModemManager in the udev rules"
    )
    state = "busy"
    min_wait_s = 5.0


class PortPermissionError(SerialPortError):
    """The service user may not open the device node."""

    hint = (
        "the gateway's service user may not open the port: check that the udev rule gives the"
        " device node to the homecare group (see systemd/README)"
    )
    state = "no-permission"
    min_wait_s = 30.0


class PortSettingsError(SerialPortError):
    """The path is not a serial port, or the port refused the configured line settings."""

    hint = (
        "the port refused the configured line settings or is not a serial port: check the path,"
        " baud rate, parity, data bits, stop bits and flow control in the configuration"
    )
    state = "bad-settings"
    min_wait_s = 60.0


class PortIOError(SerialPortError):
    """Reading or writing failed for another reason (the link layer is reset, then reopened)."""

    hint = "the port failed; if this repeats, replace the USB-serial adapter or the cable"
    state = "io-error"
    min_wait_s = 1.0


class PortWriteTimeoutError(PortIOError):
    """The device did not take our bytes in time (flow control held, device hung)."""

    hint = (
        "the device does not accept data: check the flow-control setting and the cable wiring"
        " (RTS/CTS), and switch the device off and on"
    )


_UNPLUGGED = frozenset({errno.ENOENT, errno.ENODEV, errno.ENXIO, errno.EIO, errno.ESHUTDOWN})
_BUSY = frozenset({errno.EBUSY, errno.EAGAIN, errno.EWOULDBLOCK})
_PERMISSION = frozenset({errno.EACCES, errno.EPERM})
_SETTINGS = frozenset({errno.ENOTTY, errno.EINVAL})


def _errno_of(exc: BaseException) -> int | None:
    """The errno of ``exc`` or of the OS error pyserial raised it from (``__context__``)."""
    seen: BaseException | None = exc
    for _ in range(4):  # a short chain; never loop on a cycle
        if seen is None:
            return None
        number = getattr(seen, "errno", None)
        if isinstance(number, int):
            return number
        args = getattr(seen, "args", ())
        if args and isinstance(args[0], int):  # termios.error carries (errno, text) in args
            return args[0]
        seen = seen.__cause__ or seen.__context__
    return None


def classify(exc: BaseException, *, path: str, during: str) -> SerialPortError:
    """Our typed error for a failure of ``during`` ("open", "read", "write") on ``path``."""
    if isinstance(exc, SerialPortError):
        return exc
    text = str(exc)
    fields: dict[str, Any] = {"during": during, "reason": text[:160]}
    number = _errno_of(exc)
    if number is not None:
        fields["errno"] = errno.errorcode.get(number, str(number))
    kind: type[SerialPortError]
    if isinstance(exc, serial.SerialTimeoutException):
        kind, message = PortWriteTimeoutError, "serial write timed out"
    elif _EOF_TEXT in text or number in _UNPLUGGED:
        kind, message = PortUnpluggedError, f"serial port unplugged ({during})"
    elif number in _BUSY and during == "open":
        kind, message = PortBusyError, "serial port is held by another process"
    elif number in _PERMISSION:
        kind, message = PortPermissionError, "no permission to open the serial port"
    elif (
        isinstance(exc, ValueError)
        or "configure port" in text
        or (number in _SETTINGS and during == "open")
    ):
        kind, message = PortSettingsError, "serial port refused the line settings"
    else:
        kind, message = PortIOError, f"serial port failed ({during})"
    return kind(message, path=path, **fields)
