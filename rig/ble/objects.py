"""A D-Bus object tree served through one low-level message handler (no ``ServiceInterface``).

Owning the handler gives full control of what bluetoothd's clients observe: the order of
signals (``Connected`` -> ``InterfacesAdded`` -> ``ServicesResolved`` -> method reply) and late
replies (a ``Connect`` answered seconds later, a ``Pair`` waiting for the agent). Method handlers
are coroutines; each call runs in its own task, started in arrival order. A handler returns the
reply's (signature, body) or raises ``dbus_fast.errors.DBusError`` for an error reply.

Standard interfaces served for every object: Properties (Get, GetAll, Set where a setter is
registered), Introspectable (a bare node list, enough for ``busctl tree``) and Peer.Ping;
ObjectManager.GetManagedObjects on ``/``, whose InterfacesAdded / InterfacesRemoved signals
are emitted from ``/`` as bluetoothd does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.errors import DBusError

log = logging.getLogger(__name__)

OBJECT_MANAGER = "org.freedesktop.DBus.ObjectManager"
PROPERTIES = "org.freedesktop.DBus.Properties"
INTROSPECTABLE = "org.freedesktop.DBus.Introspectable"
PEER = "org.freedesktop.DBus.Peer"
UNKNOWN_OBJECT = "org.freedesktop.DBus.Error.UnknownObject"
UNKNOWN_METHOD = "org.freedesktop.DBus.Error.UnknownMethod"
INVALID_ARGS = "org.freedesktop.DBus.Error.InvalidArgs"

Props: TypeAlias = dict[str, Variant]
Reply: TypeAlias = tuple[str, list[Any]]
Handler: TypeAlias = Callable[[Message], Awaitable[Reply]]
Setter: TypeAlias = Callable[[Variant, str], Awaitable[None]]  # (value, sender)

NO_REPLY: Reply = ("", [])


def bluez_error(kind: str, text: str) -> DBusError:
    """An ``org.bluez.Error.<kind>`` reply, e.g. ``bluez_error("Failed", "Not connected")``."""
    return DBusError(f"org.bluez.Error.{kind}", text)


@dataclass(slots=True)
class DBusObject:
    """One exported path: its interfaces with their properties, methods and writable properties."""

    path: str
    interfaces: dict[str, Props]
    methods: dict[tuple[str, str], Handler] = field(default_factory=dict)
    setters: dict[tuple[str, str], Setter] = field(default_factory=dict)

    def managed(self) -> dict[str, Props]:
        """Interfaces as GetManagedObjects and InterfacesAdded list them (bluetoothd includes the
        two standard interfaces with no properties)."""
        return {INTROSPECTABLE: {}, PROPERTIES: {}, **self.interfaces}


class ObjectTree:
    """The exported objects of one bus connection, and the signals that keep clients in sync."""

    def __init__(self) -> None:
        self.objects: dict[str, DBusObject] = {}
        self.bus: MessageBus | None = None
        self.on_client_gone: Callable[[str], None] = lambda _name: None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- life cycle ---------------------------------------------------------------------------

    async def attach(self, bus: MessageBus) -> None:
        """Serve on ``bus`` and watch clients leave (NameOwnerChanged of unique names)."""
        self.bus = bus
        bus.add_message_handler(self._on_message)
        rule = ("type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',"
                "member='NameOwnerChanged'")
        reply = await bus.call(Message(
            destination="org.freedesktop.DBus", path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus", member="AddMatch", signature="s", body=[rule]))
        if reply.message_type is MessageType.ERROR:
            raise DBusError(reply.error_name or UNKNOWN_METHOD, str(reply.body))

    def detach(self) -> None:
        """Stop serving: cancel running handlers, forget the bus (the caller closes it)."""
        for task in list(self._tasks):
            task.cancel()
        if self.bus is not None:
            self.bus.remove_message_handler(self._on_message)
        self.bus = None

    # -- objects and signals ------------------------------------------------------------------

    def add(self, obj: DBusObject) -> None:
        self.objects[obj.path] = obj
        self.signal("/", OBJECT_MANAGER, "InterfacesAdded", "oa{sa{sv}}",
                    [obj.path, obj.managed()])

    def remove(self, path: str) -> None:
        obj = self.objects.pop(path, None)
        if obj is not None:
            self.signal("/", OBJECT_MANAGER, "InterfacesRemoved", "oas",
                        [path, list(obj.managed())])

    def remove_tree(self, root: str) -> None:
        """Remove ``root`` and everything below it, deepest first."""
        below = sorted((p for p in self.objects if p == root or p.startswith(root + "/")),
                       key=len, reverse=True)
        for path in below:
            self.remove(path)

    def props(self, path: str, interface: str) -> Props:
        return self.objects[path].interfaces[interface]

    def value(self, path: str, interface: str, name: str) -> Any:
        return self.objects[path].interfaces[interface][name].value

    def update(self, path: str, interface: str, changed: Props,
               invalidated: tuple[str, ...] = ()) -> None:
        """Change properties and emit one PropertiesChanged (also when a value is unchanged:
        bluetoothd re-emits ``Value`` for every notification, equal or not)."""
        obj = self.objects.get(path)
        if obj is None:
            return
        props = obj.interfaces[interface]
        props.update(changed)
        for name in invalidated:
            props.pop(name, None)
        self.signal(path, PROPERTIES, "PropertiesChanged", "sa{sv}as",
                    [interface, changed, list(invalidated)])

    def signal(self, path: str, interface: str, member: str, signature: str,
               body: list[Any]) -> None:
        if self.bus is None or not self.bus.connected:
            return
        self._send(Message.new_signal(path, interface, member, signature, body))

    def _send(self, msg: Message) -> None:
        assert self.bus is not None
        sent = self.bus.send(msg)
        sent.add_done_callback(_ignore_send_result)

    async def call(self, msg: Message, timeout_s: float) -> Message:
        """Call a client (an agent): the reply, or TimeoutError after ``timeout_s``."""
        if self.bus is None:
            raise bluez_error("Failed", "bluetoothd is stopping")
        async with asyncio.timeout(timeout_s):
            return await self.bus.call(msg)

    # -- dispatch -----------------------------------------------------------------------------

    def _on_message(self, msg: Message) -> bool:
        if msg.message_type is MessageType.SIGNAL:
            if msg.member == "NameOwnerChanged" and msg.sender == "org.freedesktop.DBus":
                name, _old, new = msg.body
                if name.startswith(":") and not new:
                    self.on_client_gone(name)
            return False
        if msg.message_type is not MessageType.METHOD_CALL:
            return False  # replies to our own calls: dbus-fast routes them
        task = asyncio.get_running_loop().create_task(self._dispatch(msg),
                                                      name=f"bluez-sim.{msg.member}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _dispatch(self, msg: Message) -> None:
        try:
            signature, body = await self._route(msg)
            reply = Message.new_method_return(msg, signature, body)
        except DBusError as error:
            reply = Message.new_error(msg, error.type, error.text)
        except asyncio.CancelledError:
            reply = Message.new_error(msg, "org.bluez.Error.Failed", "bluetoothd is stopping")
            if self.bus is not None and self.bus.connected:
                self._send(reply)
            raise
        except Exception:
            log.exception("bluez-sim handler failed for %s.%s", msg.interface, msg.member)
            reply = Message.new_error(msg, "org.bluez.Error.Failed", "internal error")
        if self.bus is not None and self.bus.connected:
            self._send(reply)

    async def _route(self, msg: Message) -> Reply:
        path, interface, member = msg.path or "", msg.interface or "", msg.member or ""
        if interface == OBJECT_MANAGER and member == "GetManagedObjects" and path == "/":
            return "a{oa{sa{sv}}}", [{p: o.managed() for p, o in self.objects.items()}]
        if interface == INTROSPECTABLE and member == "Introspect":
            return "s", [self._introspect(path)]
        if interface == PEER and member == "Ping":
            return NO_REPLY
        obj = self.objects.get(path)
        if obj is None:
            raise DBusError(UNKNOWN_OBJECT, f"Method \"{member}\" with signature "
                            f"\"{msg.signature}\" on interface \"{interface}\" doesn't exist")
        if interface == PROPERTIES:
            return await self._properties(obj, member, msg)
        handler = obj.methods.get((interface, member))
        if handler is None:
            raise DBusError(UNKNOWN_METHOD, f"Method \"{member}\" with signature "
                            f"\"{msg.signature}\" on interface \"{interface}\" doesn't exist")
        return await handler(msg)

    async def _properties(self, obj: DBusObject, member: str, msg: Message) -> Reply:
        interface = msg.body[0] if msg.body else ""
        props = obj.interfaces.get(interface)
        if props is None:
            raise DBusError(INVALID_ARGS, f"No such interface '{interface}'")
        if member == "GetAll":
            return "a{sv}", [props]
        name = msg.body[1]
        if member == "Get":
            if name not in props:
                raise DBusError(INVALID_ARGS, f"No such property '{name}'")
            return "v", [props[name]]
        if member == "Set":
            setter = obj.setters.get((interface, name))
            if setter is None:
                raise DBusError(INVALID_ARGS, f"Property '{name}' is not writable")
            await setter(msg.body[2], msg.sender or "")
            return NO_REPLY
        raise DBusError(UNKNOWN_METHOD, f"Unknown method {member}")

    def _introspect(self, path: str) -> str:
        prefix = "" if path == "/" else path
        children = sorted({p[len(prefix) + 1:].split("/")[0] for p in self.objects
                           if p.startswith(prefix + "/") and p != path})
        obj = self.objects.get(path)
        interfaces = "".join(f'<interface name="{name}"/>' for name in
                             (obj.managed() if obj else {}))
        nodes = "".join(f'<node name="{child}"/>' for child in children)
        return f"<node>{interfaces}{nodes}</node>"


def _ignore_send_result(sent: asyncio.Future[Any]) -> None:
    # A client that left, or our own bus closing during a restart: nothing to do.
    with contextlib.suppress(Exception, asyncio.CancelledError):
        sent.result()
