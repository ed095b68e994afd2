"""``SimulatedBluez``: a private bus plus the simulated bluetoothd on a background thread.

    with SimulatedBluez([thermometer, neighbour]) as rig:
        ...  # bleak in this process now talks to the rig
        rig.call(lambda: thermometer.measure("37.2"))

The service runs on its own event loop in a daemon thread, as bluetoothd is its own process: a
test or a gateway that blocks its loop does not stall the "radio". Peripherals belong to that
loop; touch them only through ``call`` / ``acall`` (plain functions) or ``run`` / ``arun``
(coroutine functions).

Environment: ``start()`` sets ``DBUS_SYSTEM_BUS_ADDRESS`` and prepends the ``bluetoothctl``
stub to ``PATH`` in this process (restored by ``stop()``); ``env()`` gives the same for a
subprocess. What bleak 3.1 caches: dbus-fast reads the address each time a connection is made.
bleak keeps one manager connection per event loop (``get_global_bluez_manager``: scanning,
property cache) and makes a new one only once that connection has died; each
``BleakClient.connect()`` opens its own. So a fresh event loop per test (tests/conftest.py) picks
up that test's rig; within one loop, change the address only after the old bus is gone. The
``bluetoothctl --version`` answer is cached per process, on a class.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import TypeVar

from rig.ble.bluez import BluezService
from rig.ble.bus import PrivateBus
from rig.ble.errors import SimError
from rig.ble.peripheral import Peripheral
from rig.ble.stub import rig_environment, stub_dir
from rig.ble.timing import Timing

T = TypeVar("T")
_ENV_KEYS = ("DBUS_SYSTEM_BUS_ADDRESS", "PATH")


class SimulatedBluez:
    def __init__(self, peripherals: Iterable[Peripheral] = (), *, timing: Timing | None = None,
                 bonded: Iterable[str] = (), set_env: bool = True,
                 call_timeout_s: float = 10.0) -> None:
        self.timing = timing or Timing()
        self.service = BluezService(list(peripherals), self.timing)
        for address in bonded:
            if address.upper() not in self.service.peripherals:
                raise SimError(f"bonded device {address} is not among the peripherals")
            self.service.bonds.add(address.upper())
        self.bus = PrivateBus()
        self._set_env = set_env
        self._saved_env: dict[str, str | None] = {}
        self._call_timeout_s = call_timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle ---------------------------------------------------------------------------

    @property
    def address(self) -> str:
        return self.bus.address

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for a process that should use this rig (``subprocess.run(env=...)``)."""
        return rig_environment(self.address, stub_dir(self.bus.directory / "bin"), base)

    def start(self) -> SimulatedBluez:
        address = self.bus.start()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="bluez-sim", daemon=True)
        self._thread.start()
        try:
            self.run(lambda: self.service.start(address))
        except BaseException:
            self.stop()
            raise
        if self._set_env:
            wanted = self.env()
            for key in _ENV_KEYS:
                self._saved_env[key] = os.environ.get(key)
                os.environ[key] = wanted[key]
        return self

    def stop(self) -> None:
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env.clear()
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            try:
                self.run(self._shutdown)
            finally:
                loop.call_soon_threadsafe(loop.stop)
                thread.join(5.0)
        self._loop = self._thread = None
        self.bus.stop()

    async def _shutdown(self) -> None:
        await self.service.stop()
        for peripheral in self.service.peripherals.values():
            peripheral.stop()

    def _run_loop(self) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def __enter__(self) -> SimulatedBluez:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    async def __aenter__(self) -> SimulatedBluez:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        tb: TracebackType | None) -> None:
        await asyncio.to_thread(self.stop)

    # -- running things on the simulator's loop -----------------------------------------------

    def _submit(self, make: Callable[[], Awaitable[T]]) -> concurrent.futures.Future[T]:
        if self._loop is None:
            raise SimError("the simulated BlueZ is not running")

        async def run() -> T:
            return await make()

        return asyncio.run_coroutine_threadsafe(run(), self._loop)

    def run(self, make: Callable[[], Awaitable[T]]) -> T:
        """Await ``make()`` on the simulator's loop; blocks this thread (bounded)."""
        return self._submit(make).result(self._call_timeout_s)

    async def arun(self, make: Callable[[], Awaitable[T]], timeout_s: float | None = None) -> T:
        """``run`` for a coroutine: waits without blocking the caller's loop."""
        async with asyncio.timeout(timeout_s or self._call_timeout_s):
            return await asyncio.wrap_future(self._submit(make))

    def call(self, fn: Callable[[], T]) -> T:
        """Call ``fn()`` on the simulator's loop (e.g. ``lambda: meter.measure("0.00120")``)."""
        return self.run(lambda: _now(fn))

    async def acall(self, fn: Callable[[], T]) -> T:
        return await self.arun(lambda: _now(fn))

    # -- conveniences -------------------------------------------------------------------------

    def add(self, peripheral: Peripheral, *, bonded: bool = False) -> None:
        """Bring another device into the air (a neighbour's thermometer walks in)."""
        self.call(lambda: self.service.add_peripheral(peripheral, bonded=bonded))

    async def out_of_range(self, peripheral: Peripheral) -> None:
        await self.acall(peripheral.go_out_of_range)

    async def back_in_range(self, peripheral: Peripheral) -> None:
        await self.acall(peripheral.come_back)

    async def restart_bluetoothd(self, down_s: float = 0.2) -> None:
        """bluetoothd dies (``org.bluez`` loses its owner, no signals, links drop) and comes
        back ``down_s`` later with the bonds it had on disk."""
        address = self.address

        async def restart() -> None:
            await self.service.stop(crash=True)
            await asyncio.sleep(down_s)
            await self.service.start(address)

        await self.arun(restart, timeout_s=down_s + self._call_timeout_s)


async def _now(fn: Callable[[], T]) -> T:
    return fn()
