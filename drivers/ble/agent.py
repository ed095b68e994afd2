"""The gateway's own ``org.bluez.Agent1``: answers BlueZ's pairing questions on a headless router.

bleak's ``pair=True`` calls ``Device1.Pair`` but registers no agent, so a device that bonds with
a passkey (it shows six digits, the collector types them) would wait for an answer nobody gives
(reference: bluez-dbus.md, "Pairing on a headless router"). ``PairingAgent`` exports an Agent1
object on its own system-bus connection, registers it with ``AgentManager1.RegisterAgent``
(capability KeyboardDisplay: it can "type" the passkey from the episode binding) and makes it the
default agent, so bleak's Pair calls from the drivers' connections are answered by it.

Only devices of the episode binding get an answer; anything else is ``Rejected`` - a neighbour's
device cannot pair with the gateway. A passkey is never logged.

bluetoothd forgets its agents when it restarts. The agent watches the owner of ``org.bluez``
(NameOwnerChanged) and registers again whenever a new owner appears; the same watch tells the
drivers that BlueZ went away (``on_bluez_lost``), because bleak itself does not notice
(``is_connected`` stays true). If the system bus itself is gone, the agent reconnects with a
capped backoff; none of this ever stops the daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated

import structlog
from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusObjectPath, DBusSignature, DBusStr, DBusUInt16, DBusUInt32
from dbus_fast.errors import DBusError
from dbus_fast.service import ServiceInterface, dbus_method

from drivers.ble.errors import AgentError

log = structlog.get_logger("drivers.ble.agent")

AGENT_PATH = "/org/homecare/gateway/agent"
CAPABILITY = "KeyboardDisplay"
BLUEZ = "org.bluez"
# With postponed annotations dbus-fast evaluates "None" to None and rejects it: an empty D-Bus
# signature has to be spelled out.
NoReply = Annotated[None, DBusSignature("")]


def address_of(device_path: str) -> str | None:
    """``/org/bluez/hci0/dev_AA_BB_CC_DD_EE_FF`` -> ``AA:BB:CC:DD:EE:FF``."""
    last = device_path.rsplit("/", 1)[-1]
    if not last.startswith("dev_") or len(last) != 21:
        return None
    return last[4:].replace("_", ":").upper()


def _rejected(why: str) -> DBusError:
    return DBusError("org.bluez.Error.Rejected", why)


class Agent1(ServiceInterface):
    """The D-Bus object BlueZ calls during pairing; answers only for bound devices."""

    def __init__(self, passkeys: Mapping[str, int | None]) -> None:
        super().__init__("org.bluez.Agent1")
        self.passkeys = {a.upper(): p for a, p in passkeys.items()}  # the allow-list
        self.asked: list[tuple[str, str]] = []  # (method, address): what BlueZ asked, in order

    def _bound(self, method: str, device: str) -> str:
        address = address_of(device) or device
        self.asked.append((method, address))
        if address not in self.passkeys:
            log.warning("ble.agent_refused", method=method, device=address,
                        reason="not bound to this episode")
            raise _rejected("device not bound to this gateway")
        log.info("ble.agent_asked", method=method, device=address)
        return address

    @dbus_method()
    def RequestPasskey(self, device: DBusObjectPath) -> DBusUInt32:  # noqa: N802 D-Bus name
        passkey = self.passkeys[self._bound("RequestPasskey", device)]
        if passkey is None:
            log.warning("ble.agent_no_passkey", device=address_of(device))
            raise _rejected("no passkey in the binding for this device")
        return passkey

    @dbus_method()
    def RequestConfirmation(self, device: DBusObjectPath,  # noqa: N802 D-Bus name
                            passkey: DBusUInt32) -> NoReply:
        # Numeric comparison: the device shows a number; we have no screen, so confirm only a
        # number that matches the binding's passkey (or any, for a device bound without one,
        # which is what Just Works would give anyway).
        expected = self.passkeys[self._bound("RequestConfirmation", device)]
        if expected is not None and expected != passkey:
            raise _rejected("the number does not match the binding's passkey")

    @dbus_method()
    def RequestAuthorization(self, device: DBusObjectPath) -> NoReply:  # noqa: N802 D-Bus name
        self._bound("RequestAuthorization", device)

    @dbus_method()
    def AuthorizeService(self, device: DBusObjectPath, uuid: DBusStr) -> NoReply:  # noqa: N802
        self._bound("AuthorizeService", device)

    @dbus_method()
    def RequestPinCode(self, device: DBusObjectPath) -> DBusStr:  # noqa: N802 D-Bus name
        self._bound("RequestPinCode", device)
        raise _rejected("legacy PIN pairing is not used by health devices")

    @dbus_method()
    def DisplayPasskey(self, device: DBusObjectPath, passkey: DBusUInt32,  # noqa: N802
                       entered: DBusUInt16) -> NoReply:
        pass  # nobody to show it to

    @dbus_method()
    def DisplayPinCode(self, device: DBusObjectPath, pincode: DBusStr) -> NoReply:  # noqa: N802
        pass

    @dbus_method()
    def Cancel(self) -> NoReply:  # noqa: N802 D-Bus name
        log.info("ble.agent_cancelled")

    @dbus_method()
    def Release(self) -> NoReply:  # noqa: N802 D-Bus name
        log.info("ble.agent_released")


class PairingAgent:
    """Keeps an ``Agent1`` registered as BlueZ's default agent; watches ``org.bluez``."""

    def __init__(self, passkeys: Mapping[str, int | None], *, path: str = AGENT_PATH,
                 retry_max_s: float = 30.0) -> None:
        self.agent = Agent1(passkeys)
        self.path = path
        self.retry_max_s = retry_max_s
        self.registered = asyncio.Event()
        self.registrations = 0  # successful RegisterAgent calls (1 + one per BlueZ restart)
        self.bluez_lost = 0  # times the org.bluez owner went away while we watched
        self.last_error: AgentError | None = None
        self._on_lost: list[Callable[[], None]] = []

    def on_bluez_lost(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` (on the loop) whenever bluetoothd goes away."""
        self._on_lost.append(callback)

    async def run(self) -> None:
        """Forever: connect to the system bus, register, re-register after BlueZ restarts."""
        delay = 0.5
        while True:
            bus = MessageBus(bus_type=BusType.SYSTEM)
            try:
                await bus.connect()
            except (OSError, EOFError, DBusError, ValueError) as exc:
                self._failed(AgentError(f"cannot reach the system bus: {type(exc).__name__}"))
                await asyncio.sleep(delay)
                delay = min(self.retry_max_s, delay * 2)
                continue
            delay = 0.5
            try:
                await self._serve(bus)
            except (TimeoutError, DBusError, OSError, EOFError) as exc:
                self._failed(AgentError(f"agent registration failed: {type(exc).__name__}"))
            finally:
                self.registered.clear()
                bus.disconnect()
            log.warning("ble.agent_bus_lost")
            await asyncio.sleep(delay)

    def _failed(self, error: AgentError) -> None:
        self.last_error = error
        log.error("ble.agent_unavailable", error=error.message, hint=error.hint)

    async def _serve(self, bus: MessageBus) -> None:
        changed = asyncio.Event()
        owner: list[str] = [""]

        def on_message(msg: Message) -> None:
            if (msg.message_type is MessageType.SIGNAL and msg.member == "NameOwnerChanged"
                    and msg.body and msg.body[0] == BLUEZ):
                old, new = msg.body[1], msg.body[2]
                if old:
                    self._lost()
                owner[0] = new
                changed.set()

        bus.export(self.path, self.agent)
        bus.add_message_handler(on_message)
        await self._call(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                         "org.freedesktop.DBus", member="AddMatch", signature="s",
                         body=[f"type='signal',interface='org.freedesktop.DBus',"
                          f"member='NameOwnerChanged',arg0='{BLUEZ}'"])
        reply = await self._call(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                 "org.freedesktop.DBus", member="GetNameOwner", signature="s",
                                 body=[BLUEZ])
        owner[0] = reply.body[0] if reply.message_type is MessageType.METHOD_RETURN else ""
        disconnected = asyncio.ensure_future(bus.wait_for_disconnect())  # type: ignore[no-untyped-call]  # dbus-fast leaves it unannotated
        try:
            while True:
                changed.clear()
                if owner[0]:
                    await self._register(bus)
                else:
                    self.registered.clear()
                    log.warning("ble.bluez_absent")
                waiter = asyncio.ensure_future(changed.wait())
                await asyncio.wait({waiter, disconnected}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if disconnected.done():
                    return
        finally:
            disconnected.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await disconnected

    def _lost(self) -> None:
        self.bluez_lost += 1
        self.registered.clear()
        log.warning("ble.bluez_lost")
        for callback in self._on_lost:
            callback()

    async def _register(self, bus: MessageBus) -> None:
        for member, signature, body in (("RegisterAgent", "os", [self.path, CAPABILITY]),
                                        ("RequestDefaultAgent", "o", [self.path])):
            reply = await self._call(bus, BLUEZ, "/org/bluez", "org.bluez.AgentManager1",
                                     member=member, signature=signature, body=body)
            if reply.message_type is MessageType.ERROR and (
                    reply.error_name != "org.bluez.Error.AlreadyExists"):
                self._failed(AgentError(f"{member} refused: {reply.error_name}"))
                return
        self.registrations += 1
        self.last_error = None
        self.registered.set()
        log.info("ble.agent_registered", capability=CAPABILITY)

    @staticmethod
    async def _call(bus: MessageBus, destination: str, path: str, interface: str, *,
                    member: str, signature: str, body: Sequence[object]) -> Message:
        async with asyncio.timeout(10):
            reply = await bus.call(Message(destination=destination, path=path,
                                           interface=interface, member=member,
                                           signature=signature, body=list(body)))
        assert reply is not None  # a method call always gets a reply
        return reply
