"""The virtual peripheral base: radio presence, pairing needs, a stored backlog, misbehaviour.

A peripheral lives on the simulator's event loop; call its methods there (``SimulatedBluez.call``
does that from a test). The BlueZ side hands it a ``Link`` while connected; everything the
peripheral sends goes through ``Link.send``, which paces the values like ATT does (an indication
waits for its confirmation) and raises ``LinkLostError`` once the connection is gone.

Readings of characteristics that indicate (thermometer, blood pressure, scale, spot-check) are
stored until a collector has subscribed and then sent oldest first - the "backlog burst" of
devices without RACP. A stored reading leaves the device only after it was delivered, so a link
lost in the middle of a burst loses nothing: the rest goes out after the next subscription.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from rig.ble.clock import DeviceClock
from rig.ble.errors import LinkLostError, SimError
from rig.ble.gatt import Service
from rig.ble.standard import DeviceInfo, standard_services


class PairingMethod(enum.Enum):
    """How a device that requires bonding authenticates the collector (SMP association model)."""

    JUST_WORKS = "just-works"  # bluetoothd asks the agent RequestAuthorization
    NUMERIC_COMPARISON = "numeric-comparison"  # agent RequestConfirmation(device, passkey)
    PASSKEY_ENTRY = "passkey"  # the device displays a passkey; agent RequestPasskey


@dataclass(frozen=True, slots=True)
class Pairing:
    method: PairingMethod = PairingMethod.PASSKEY_ENTRY
    passkey: int = 0  # six digits, shown on the device's display

    def __post_init__(self) -> None:
        if not 0 <= self.passkey <= 999_999:
            raise SimError("a passkey has at most six digits")


class Link(Protocol):
    """What the BlueZ side offers a connected peripheral."""

    @property
    def up(self) -> bool: ...

    def subscribed(self, uuid16: int) -> bool: ...

    async def send(self, uuid16: int, value: bytes) -> bool:
        """Notify / indicate; False when the collector has not subscribed. LinkLostError if down."""
        ...

    def drop(self) -> None:
        """The peripheral ends the connection (or the radio lost it)."""
        ...


@dataclass(slots=True)
class Script:
    """Misbehaviour to play, set by a test or a scenario."""

    disconnect_after_records: int | None = None  # drop the link after N more records sent
    malformed_next: int = 0  # the next N readings go out one byte short


class Peripheral:
    """Base of every virtual device; subclasses add ``profile_services`` and measurements."""

    kind: ClassVar[str] = "peripheral"
    default_name: ClassVar[str] = "SIM"

    def __init__(
        self,
        address: str,
        *,
        name: str | None = None,
        rssi: int = -60,
        tx_power: int | None = None,
        manufacturer_data: dict[int, bytes] | None = None,
        pairing: Pairing | None = None,
        clock: DeviceClock | None = None,
        battery_percent: int = 90,
        info: DeviceInfo | None = None,
        clock_settable: bool = True,
        backlog_capacity: int = 100,
        replay_backlog: bool = False,
    ) -> None:
        """``replay_backlog``: the device keeps its memory after delivering it and sends all of
        it again after every subscription (many monitors without RACP do; the collector must
        de-duplicate)."""
        self.address = address.upper()
        if len(self.address) != 17 or self.address.count(":") != 5:
            raise SimError(f"not a Bluetooth address: {address!r}")
        self.name = name or self.default_name
        self.rssi = rssi
        self.tx_power = tx_power
        self.manufacturer_data = dict(manufacturer_data or {})
        self.pairing = pairing
        self.clock = clock or DeviceClock()
        self.battery_percent = battery_percent
        self.info = info or DeviceInfo()
        self.clock_settable = clock_settable
        self.script = Script()
        self.in_range = True
        self.link: Link | None = None
        self.stored: dict[int, deque[bytes]] = {}
        self.backlog_capacity = backlog_capacity
        self.replay_backlog = replay_backlog
        # the last values delivered, for assertions and the technician's view of a demo
        self.sent: deque[tuple[int, bytes]] = deque(maxlen=10_000)
        self._radio_listeners: list[Callable[[Peripheral], None]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._link_tasks: set[asyncio.Task[None]] = set()
        self._pumps: dict[int, asyncio.Task[None]] = {}
        self._streams: dict[int, tuple[float, Callable[[], bytes | None]]] = {}
        self._stream_tasks: dict[int, asyncio.Task[None]] = {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.address} {self.name!r}>"

    # -- GATT table ---------------------------------------------------------------------------

    def profile_services(self) -> tuple[Service, ...]:
        return ()

    def services(self) -> tuple[Service, ...]:
        return (*self.profile_services(), *standard_services(self))

    def advertised_uuids(self) -> tuple[int, ...]:
        """Service UUIDs in the advertisement: the health profile's primary service(s)."""
        return tuple(s.uuid16 for s in self.profile_services())

    @property
    def requires_bond(self) -> bool:
        return self.pairing is not None

    # -- radio --------------------------------------------------------------------------------

    def on_radio_change(self, listener: Callable[[Peripheral], None]) -> None:
        self._radio_listeners.append(listener)

    def go_out_of_range(self) -> None:
        """Stop advertising; an open connection is lost (after the supervision timeout)."""
        self.in_range = False
        self._radio_changed()

    def come_back(self) -> None:
        """Back in range: advertising again, a pending connection attempt completes."""
        self.in_range = True
        self._radio_changed()

    def _radio_changed(self) -> None:
        for listener in list(self._radio_listeners):
            listener(self)

    # -- connection hooks (called by the BlueZ side) ------------------------------------------

    def on_connect(self, link: Link) -> None:
        self.link = link

    def on_disconnect(self) -> None:
        self.link = None
        for task in list(self._link_tasks):
            task.cancel()

    def on_subscribe(self, uuid16: int, enabled: bool) -> None:
        """The collector wrote the CCCD of ``uuid16``: a stored backlog starts flowing, a
        continuous stream starts (or stops)."""
        if enabled:
            self._start_pump(uuid16)
        if uuid16 in self._streams:
            running = self._stream_tasks.pop(uuid16, None)
            if running is not None:
                running.cancel()
            if enabled:
                self._stream_tasks[uuid16] = self.spawn(self._stream(uuid16), link_scoped=True,
                                                        name=f"stream-{uuid16:04x}")

    def add_stream(self, uuid16: int, period_s: float, make: Callable[[], bytes | None]) -> None:
        """While ``uuid16`` is subscribed, notify ``make()`` every ``period_s`` (None: skip)."""
        self._streams[uuid16] = (period_s, make)

    async def _stream(self, uuid16: int) -> None:
        with contextlib.suppress(LinkLostError):
            while self.connected:
                period_s, make = self._streams[uuid16]
                await asyncio.sleep(period_s)
                payload = make()
                if payload is not None:
                    await self.send_record(uuid16, self._maybe_malformed(payload), counts=False)

    def _start_pump(self, uuid16: int) -> None:
        running = self._pumps.get(uuid16)
        if running is not None and not running.done():
            return
        if self.stored.get(uuid16) and self.link is not None and self.link.subscribed(uuid16):
            self._pumps[uuid16] = self.spawn(self._pump(uuid16), link_scoped=True,
                                             name=f"backlog-{uuid16:04x}")

    # -- sending ------------------------------------------------------------------------------

    def emit(self, uuid16: int, payload: bytes, *, store: bool) -> None:
        """Send a reading now if possible. ``store``: keep it until delivered (indications);
        otherwise a reading nobody subscribed to is gone, as notifications are."""
        payload = self._maybe_malformed(payload)
        if not store:
            if self.link is not None and self.link.up and self.link.subscribed(uuid16):
                self.spawn(self._send_once(uuid16, payload), link_scoped=True, name="notify")
            return
        queue = self.stored.setdefault(uuid16, deque(maxlen=self.backlog_capacity))
        queue.append(payload)
        if self.replay_backlog:  # kept in memory; sent now only to a subscribed collector
            if self.link is not None and self.link.up and self.link.subscribed(uuid16):
                self.spawn(self._send_once(uuid16, payload), link_scoped=True, name="live")
            return
        self._start_pump(uuid16)

    def send_raw(self, uuid16: int, payload: bytes) -> None:
        """Send bytes as they are (a malformed or foreign payload), if subscribed."""
        if self.link is not None and self.link.subscribed(uuid16):
            self.spawn(self._send_once(uuid16, payload), link_scoped=True, name="raw")

    def _maybe_malformed(self, payload: bytes) -> bytes:
        if self.script.malformed_next > 0:
            self.script.malformed_next -= 1
            return payload[:-1]
        return payload

    async def _pump(self, uuid16: int) -> None:
        queue = self.stored[uuid16]
        if self.replay_backlog:  # the whole memory, oldest first, every subscription
            with contextlib.suppress(LinkLostError):
                for payload in list(queue):
                    if not self.connected or not await self.send_record(uuid16, payload):
                        return
            return
        with contextlib.suppress(LinkLostError):
            while queue and self.connected and self.link and self.link.subscribed(uuid16):
                head = queue[0]
                if not await self.send_record(uuid16, head):
                    return  # unsubscribed meanwhile: keep it for the next subscription
                if queue and queue[0] is head:  # not pushed out by an overflow meanwhile
                    queue.popleft()

    async def _send_once(self, uuid16: int, payload: bytes) -> None:
        with contextlib.suppress(LinkLostError):
            await self.send_record(uuid16, payload, counts=False)

    async def send_record(self, uuid16: int, payload: bytes, *, counts: bool = True) -> bool:
        """Send one value; True once delivered. A record counts towards
        ``script.disconnect_after_records``: when that runs out the link drops right after this
        record was delivered (``Link.up`` is False from then on)."""
        link = self.link
        if link is None or not link.up:
            raise LinkLostError("not connected")
        delivered = await link.send(uuid16, payload)
        if delivered:
            self.sent.append((uuid16, payload))
        left = self.script.disconnect_after_records
        if delivered and counts and left is not None:
            self.script.disconnect_after_records = left - 1 if left > 1 else None
            if left <= 1:
                link.drop()
        return delivered

    @property
    def connected(self) -> bool:
        return self.link is not None and self.link.up

    # -- behaviour over time ------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, None], *, link_scoped: bool = False,
              name: str = "behaviour") -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.address}:{name}")
        group = self._link_tasks if link_scoped else self._tasks
        group.add(task)
        task.add_done_callback(group.discard)
        return task

    def at(self, delay_s: float, action: Callable[[], object]) -> asyncio.Task[None]:
        """Run ``action`` once, ``delay_s`` from now (a reading taken at a given time)."""
        async def later() -> None:
            await asyncio.sleep(delay_s)
            action()

        return self.spawn(later(), name="at")

    def every(self, period_s: float, action: Callable[[], object],
              count: int | None = None) -> asyncio.Task[None]:
        """Run ``action`` every ``period_s`` (``count`` times, or until stopped)."""
        async def repeat() -> None:
            done = 0
            while count is None or done < count:
                await asyncio.sleep(period_s)
                action()
                done += 1

        return self.spawn(repeat(), name="every")

    def stop(self) -> None:
        """Cancel every behaviour (the simulator is shutting down)."""
        for task in [*self._tasks, *self._link_tasks]:
            task.cancel()
