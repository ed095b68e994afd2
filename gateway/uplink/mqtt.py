"""MQTT 5 uplink over mutual TLS: one batch per message, QoS 1, "done" only on PUBACK.

paho-mqtt does the protocol; this module adapts it to asyncio without blocking the loop. Each
connection gets a fresh paho client whose own network thread (``loop_start``) does every socket
read and write - publishing from the event loop only queues a packet and wakes that thread. (A
second thread writing to the same TLS socket corrupts records: the broker sees "bad record mac".)
paho's auto-reconnect is off, so its thread ends with the connection, nothing is retransmitted
behind our back, and every reconnect decision is made (with backoff) by
:mod:`gateway.uplink.upload`.
Keepalive pings detect a half-open connection: no PINGRESP within 1.5 x keepalive closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gateway.errors import UploadError
from gateway.uplink.link import check_route

if TYPE_CHECKING:
    from gateway.config.settings import Config

log = structlog.get_logger("gateway.uplink")

# The largest packet we let the broker send us (MQTT 5 Maximum Packet Size, CONNECT): what comes
# down is the provider's signed commands, each a few hundred bytes; the broker drops anything
# larger rather than making us hold it. The command layer checks its own, smaller, cap too.
MAX_INBOUND_PACKET_BYTES = 64 * 1024


class ConnectRefusedError(UploadError):
    """The broker answered CONNACK with an error (bad certificate identity, not authorised...)."""

    def __init__(self, reason: str, code: int) -> None:
        super().__init__(f"broker refused the connection: {reason}", code=code)
        self.code = code


class PublishRefusedError(UploadError):
    """The broker answered PUBACK with an error code (ACL denies the topic, quota exceeded)."""

    hint = "the broker refused the batch; check the gateway's ACL / quota on the provider side"

    def __init__(self, reason: str, code: int) -> None:
        super().__init__(f"broker refused a batch: {reason} ({code:#04x})", code=code)
        self.code = code


class ConnectionLostError(UploadError):
    """The connection ended before the broker acknowledged."""


@dataclass(frozen=True, slots=True)
class UplinkSettings:
    host: str
    port: int
    ca_file: Path
    cert_file: Path
    key_file: Path
    client_id: str
    keepalive_s: int = 30
    connect_timeout_s: float = 10.0
    max_inflight: int = 8
    session_expiry_s: int = 3600
    vpn_interface: str | None = None  # when set, connect only if the route goes through it

    @classmethod
    def from_config(cls, cfg: Config) -> UplinkSettings:
        """The daemon's connection as configured (uplink-test varies a few fields of it)."""
        return cls(
            host=cfg.broker_host,
            port=cfg.broker_port,
            ca_file=cfg.ca_file,
            cert_file=cfg.cert_file,
            key_file=cfg.key_file,
            client_id=cfg.gateway_id,
            keepalive_s=cfg.keepalive_s,
            session_expiry_s=cfg.session_expiry_s,
            vpn_interface=cfg.vpn_interface,
        )


class MqttUplink:
    """One live connection at a time; ``connect`` again after it is lost."""

    def __init__(self, settings: UplinkSettings) -> None:
        self.settings = settings
        self._client: mqtt.Client | None = None
        self._lock = threading.Lock()
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._early: dict[int, ReasonCode] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected: asyncio.Future[None] | None = None
        self.lost = asyncio.Event()
        self._socket_error: str | None = None  # paho's last socket error on this connection
        # topic -> called on the event loop with each message's payload (the command topic)
        self._subscriptions: dict[str, Callable[[bytes], None]] = {}

    def subscribe(self, topic: str, deliver: Callable[[bytes], None]) -> None:
        """Receive ``topic`` (QoS 1) on every connection from now on; ``deliver`` runs on the
        event loop and must not block (the command runner only queues it)."""
        self._subscriptions[topic] = deliver

    @property
    def is_connected(self) -> bool:
        return self._client is not None and self._client.is_connected() and not self.lost.is_set()

    # -- connection ---------------------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        s = self.settings
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            protocol=mqtt.MQTTv5,
            reconnect_on_failure=False,
        )
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(s.ca_file))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(certfile=str(s.cert_file), keyfile=str(s.key_file))
        client.tls_set_context(ctx)
        client.connect_timeout = s.connect_timeout_s
        client.max_inflight_messages_set(s.max_inflight)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_log = self._on_log
        self._socket_error = None
        return client

    async def connect(self) -> None:
        """Open TLS, send CONNECT, wait for CONNACK. Raises UploadError on any failure."""
        await self.close()
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.lost = asyncio.Event()
        self._connected = loop.create_future()
        try:
            client = self._make_client()
        except (OSError, ssl.SSLError) as exc:
            raise UploadError(f"cannot load TLS files: {exc}") from exc
        await asyncio.to_thread(
            check_route, self.settings.host, self.settings.port, self.settings.vpn_interface
        )
        self._client = client
        try:
            await asyncio.to_thread(self._blocking_connect, client)
        except (OSError, ssl.SSLError) as exc:
            self._client = None
            raise UploadError(
                f"cannot reach broker {self.settings.host}:{self.settings.port}: {exc}"
            ) from exc
        client.loop_start()
        connected = self._connected
        try:
            await asyncio.wait_for(
                asyncio.shield(connected), timeout=self.settings.connect_timeout_s
            )
        except TimeoutError:
            await self.close()
            raise UploadError("broker did not answer CONNECT in time") from None
        except UploadError:
            await self.close()
            raise
        finally:
            # The CONNACK future has served its purpose; a late failure must not be left behind
            # as an exception nobody retrieves.
            self._connected = None
            if connected.done() and not connected.cancelled():
                connected.exception()
            else:
                connected.cancel()

    def _blocking_connect(self, client: mqtt.Client) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        # A persistent session (MQTT 5 session expiry): the broker keeps our session state across
        # short link drops. Delivery does not depend on it - the outbox re-sends anything that was
        # not acknowledged - but a broker can tell a returning gateway from a new one.
        props.SessionExpiryInterval = self.settings.session_expiry_s
        if self._subscriptions:
            props.MaximumPacketSize = MAX_INBOUND_PACKET_BYTES
        client.connect(
            self.settings.host,
            self.settings.port,
            keepalive=self.settings.keepalive_s,
            clean_start=self.settings.session_expiry_s == 0,
            properties=props,
        )

    def alive(self) -> bool:
        """Connected, and paho's network thread still running (it ends with the connection)."""
        client = self._client
        if client is None or self.lost.is_set() or not client.is_connected():
            return False
        # paho clears its thread handle when the thread ends, whatever ended it.
        return getattr(client, "_thread", None) is not None

    async def close(self) -> None:
        """Disconnect (politely if possible) and stop the network thread."""
        client = self._client
        self._client = None
        if client is None:
            return
        with contextlib.suppress(Exception):  # the socket may already be dead; nothing to save
            client.disconnect()
        await asyncio.to_thread(client.loop_stop)
        self._signal_lost("closed")

    # -- publishing ---------------------------------------------------------------------------

    async def publish(self, topic: str, payload: bytes) -> None:
        """Publish with QoS 1 and return once the broker acknowledged it (PUBACK, success)."""
        client = self._client
        if client is None or self.lost.is_set():
            raise ConnectionLostError("not connected")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Never call into paho while holding self._lock: paho's network thread holds its own
        # message mutex while it runs _on_publish, which takes self._lock (lock-order inversion:
        # a PUBACK arriving during a publish deadlocked both threads). The PUBACK may come before
        # the mid is registered below; _on_publish then leaves it in _early.
        info = client.publish(topic, payload, qos=1)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise ConnectionLostError(
                f"publish not accepted by the client: {mqtt.error_string(info.rc)}"
            )
        with self._lock:
            early = self._early.pop(info.mid, None)
            if early is None:
                self._pending[info.mid] = fut
        if early is not None:
            self._resolve(fut, early)
        elif self.lost.is_set():  # lost between the publish and the registration
            with self._lock:
                self._pending.pop(info.mid, None)
            raise ConnectionLostError("connection lost during publish")
        await fut

    @staticmethod
    def _resolve(fut: asyncio.Future[None], rc: ReasonCode) -> None:
        if fut.done():
            return
        if rc.is_failure:
            fut.set_exception(PublishRefusedError(str(rc), int(rc.value)))
        else:
            fut.set_result(None)

    # -- paho callbacks (network thread) ------------------------------------------------------

    def _call(self, fn: Any, *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop closed during shutdown
                loop.call_soon_threadsafe(fn, *args)

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any
    ) -> None:
        fut = self._connected

        def done() -> None:
            if fut is None or fut.done():
                return
            if rc.is_failure:
                fut.set_exception(ConnectRefusedError(str(rc), int(rc.value)))
            else:
                fut.set_result(None)

        if not rc.is_failure:
            # Here, on paho's thread, before anything else is read: a persistent session may
            # deliver queued commands right after CONNACK, and the subscription is then known.
            for topic in self._subscriptions:
                client.subscribe(topic, qos=1)
        self._call(done)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, rcs: list[ReasonCode], props: Any
    ) -> None:
        refused = [str(rc) for rc in rcs if rc.is_failure]
        if refused:  # the broker's ACL does not let us read our own command topic
            log.error("uplink.subscribe_refused", reasons=refused)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        deliver = self._subscriptions.get(msg.topic)
        if deliver is not None:
            self._call(deliver, bytes(msg.payload))

    def _on_log(self, client: mqtt.Client, userdata: Any, level: int, buf: str) -> None:
        # paho reports why the socket failed only here: under TLS 1.3 the broker's refusal of
        # our certificate (an alert such as "certificate revoked") arrives on the first read
        # after the handshake, and the disconnect callback says just "Unspecified error".
        if level == mqtt.MQTT_LOG_ERR and "socket" in buf:
            self._socket_error = buf

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any
    ) -> None:
        why = f"disconnected: {rc}"
        if self._socket_error:
            why += f"; {self._socket_error}"
        self._signal_lost(why)

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, rc: ReasonCode, props: Any
    ) -> None:
        with self._lock:
            fut = self._pending.pop(mid, None)
            if fut is None:
                self._early[mid] = rc
                return
        self._call(self._resolve, fut, rc)

    def _signal_lost(self, why: str) -> None:
        with self._lock:
            pending = list(self._pending.values())
            self._pending.clear()
            self._early.clear()
        lost, connected = self.lost, self._connected

        def fail_all() -> None:
            for fut in pending:
                if not fut.done():
                    fut.set_exception(ConnectionLostError(f"connection lost before PUBACK ({why})"))
            if connected is not None and not connected.done():
                connected.set_exception(ConnectionLostError(f"connection failed ({why})"))
            lost.set()

        self._call(fail_all)
