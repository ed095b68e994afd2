"""Serial port layer on real ptys: line settings, exclusive access, error classes, reconnects."""

from __future__ import annotations

import asyncio
import errno
import os
import termios
import time
from pathlib import Path

import pytest
import serial  # type: ignore[import-untyped, unused-ignore]

from drivers.serial.connection import PortConnection
from drivers.serial.port import FlowControl, LineSettings, Parity, PortSpec, SerialPort
from drivers.serial.port_errors import (
    PortBusyError,
    PortIOError,
    PortPermissionError,
    PortSettingsError,
    PortUnpluggedError,
    PortWriteTimeoutError,
    classify,
)
from gateway.errors import ConfigError
from rig.serial.pty_device import PtyDevice
from tests.serial_io.helpers import FAST_BACKOFF, by_id, eventually


class Echo(PtyDevice):
    """A device that sends back what it gets (and whatever the test writes with send())."""

    def on_data(self, data: bytes, now: float) -> None:
        self.send(data)


def test_line_settings_read_the_usual_notation_and_refuse_nonsense() -> None:
    assert LineSettings.parse("19200 8O1") == LineSettings(19200, 8, Parity.ODD, 1)
    assert LineSettings.parse("9600 7e2", FlowControl.RTSCTS) == LineSettings(
        9600, 7, Parity.EVEN, 2, FlowControl.RTSCTS
    )
    assert str(LineSettings(19200, parity=Parity.ODD)) == "19200 8O1"
    for bad in ("9600", "9601 8N1", "9600 9N1", "9600 8X1"):
        with pytest.raises(ConfigError):
            LineSettings.parse(bad)


def test_kernel_names_are_flagged_as_unstable_and_stable_names_are_not() -> None:
    assert not PortSpec("/dev/ttyUSB0").stable
    assert PortSpec("/dev/serial/by-id/usb-FTDI_FT232R_A10K1ABC-if00-port0").stable
    assert PortSpec("/dev/homecare/crp").stable
    with pytest.raises(ConfigError):
        PortSpec("ttyUSB0")


async def test_the_port_opens_by_its_link_with_the_device_line_settings(tmp_path: Path) -> None:
    link = by_id(tmp_path, "CMS50")
    with Echo(link, name="echo") as device:
        spec = PortSpec(str(link), line=LineSettings.parse("19200 8O1"))
        async with await SerialPort.open(spec) as port:
            assert port.device == device.slave_path  # the tty behind the stable name
            assert device._slave is not None
            attrs = termios.tcgetattr(device._slave)
            cflag, ispeed = attrs[2], attrs[4]
            assert ispeed == termios.B19200
            assert cflag & termios.CSIZE == termios.CS8
            # A pty keeps no parity bits in its termios (no UART): ask pyserial what it set.
            assert (port._ser.parity, port._ser.exclusive) == ("O", True)
            await port.write(b"\x05hello\x06")
            received = b""
            deadline = time.monotonic() + 3
            while len(received) < 7 and time.monotonic() < deadline:
                received += await port.read(0.5)
            assert received == b"\x05hello\x06"


async def test_a_second_opener_is_refused_as_busy_while_the_port_is_held(tmp_path: Path) -> None:
    link = by_id(tmp_path, "CRP")
    with Echo(link, name="echo"):
        async with await SerialPort.open(PortSpec(str(link))):
            with pytest.raises(PortBusyError) as caught:
                await SerialPort.open(PortSpec(str(link)))
            assert caught.value.min_wait_s >= 5
            assert "another program" in caught.value.hint
            assert caught.value.fields["errno"] in ("EAGAIN", "EWOULDBLOCK", "EBUSY")


async def test_unplug_while_reading_is_reported_as_unplugged_and_the_path_as_missing(
    tmp_path: Path,
) -> None:
    link = by_id(tmp_path, "CRP")
    with Echo(link, name="echo") as device:
        port = await SerialPort.open(PortSpec(str(link)))
        device.call(lambda: device.send(b"last words"))
        await eventually(lambda: port.buffered_chunks > 0, what="the port to read the bytes")
        await asyncio.sleep(0.1)  # (the kernel drops what the port had not read at the hang-up)
        device.unplug()
        received = await port.read(1.0)
        while len(received) < 10:
            received += await port.read(1.0)
        assert received == b"last words"  # bytes the port took before the hang-up are kept
        with pytest.raises(PortUnpluggedError) as caught:
            await port.read(1.0)
        assert caught.value.fields["during"] == "read"
        await port.close()
        with pytest.raises(PortUnpluggedError) as missing:
            await SerialPort.open(PortSpec(str(link)))
        assert missing.value.fields["errno"] == "ENOENT"


async def test_a_file_that_is_not_a_tty_is_a_settings_error(tmp_path: Path) -> None:
    not_a_tty = tmp_path / "plain-file"
    not_a_tty.write_bytes(b"")
    with pytest.raises(PortSettingsError) as caught:
        await SerialPort.open(PortSpec(str(not_a_tty)))
    assert "line settings" in caught.value.hint


def test_the_classifier_reads_errno_from_pyserial_and_from_the_os_error_behind_it() -> None:
    master, slave = os.openpty()
    port = serial.Serial(os.ttyname(slave), timeout=0.1)
    os.close(slave)
    os.close(master)
    with pytest.raises(serial.SerialException) as write_failed:
        port.write(b"x")  # pyserial: "write failed: [Errno 5]", errno only in __context__
    port.close()
    lost = classify(write_failed.value, path="/dev/homecare/crp", during="write")
    assert isinstance(lost, PortUnpluggedError)
    assert lost.fields["errno"] == "EIO"
    denied = serial.SerialException(errno.EACCES, "could not open port: Permission denied")
    assert isinstance(classify(denied, path="/p", during="open"), PortPermissionError)
    timeout = serial.SerialTimeoutException("Write timeout")
    assert isinstance(classify(timeout, path="/p", during="write"), PortWriteTimeoutError)
    other = serial.SerialException("read failed: something new")
    assert type(classify(other, path="/p", during="read")) is PortIOError


async def test_a_slow_reader_is_bounded_and_loses_nothing_the_port_took(tmp_path: Path) -> None:
    link = by_id(tmp_path, "Nonin")
    with Echo(link, name="echo") as device:
        spec = PortSpec(str(link), chunk_bytes=16, buffer_chunks=2)
        async with await SerialPort.open(spec) as port:
            payload = bytes(range(256)) * 4  # 1 KiB: more than the inbox, less than the tty
            device.send(payload)
            await asyncio.sleep(0.3)  # the driver is busy elsewhere
            assert port.buffered_chunks <= 2
            received = b""
            while len(received) < len(payload):
                received += await port.read(1.0)
            assert received == payload


async def test_wake_ends_a_pending_read_at_once(tmp_path: Path) -> None:
    link = by_id(tmp_path, "CRP")
    with Echo(link, name="echo"):
        async with await SerialPort.open(PortSpec(str(link))) as port:
            asyncio.get_running_loop().call_later(0.05, port.wake)
            started = time.monotonic()
            assert await port.read(5.0) == b""
            assert time.monotonic() - started < 1.0


async def test_the_connection_waits_for_a_device_that_is_plugged_in_later(tmp_path: Path) -> None:
    link = by_id(tmp_path, "CRP")
    connection = PortConnection(PortSpec(str(link)), name="test", backoff=FAST_BACKOFF)
    opening = asyncio.create_task(connection.open())
    await eventually(lambda: connection.state == "unplugged", what="the unplugged state")
    assert isinstance(connection.last_error, PortUnpluggedError)
    with Echo(link, name="echo"):
        port = await asyncio.wait_for(opening, 3.0)
        assert connection.state == "connected"
        assert connection.connects == 1
        await port.close()
