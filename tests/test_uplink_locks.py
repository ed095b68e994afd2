"""MqttUplink and paho's network thread: a PUBACK arriving during a publish must not deadlock.

paho holds its message mutex while it runs ``on_publish`` on its network thread; our callback
takes the uplink's own lock. If ``publish`` called into paho while holding that lock, the two
threads would wait for each other forever (seen once in the HIL power-cut scenario). The fake
client below makes the interleaving happen every time.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from gateway.uplink.mqtt import MqttUplink, UplinkSettings


class RacingClient:
    """publish() waits until a "network thread" holds the message mutex and acknowledges."""

    def __init__(self, uplink: MqttUplink) -> None:
        self.uplink = uplink
        self.mutex = threading.Lock()  # stands for paho's _out_message_mutex

    def publish(self, topic: str, payload: bytes, qos: int) -> Any:
        holding = threading.Event()

        def network_thread() -> None:
            with self.mutex:
                holding.set()
                # The PUBACK for mid 1, delivered under the mutex, as paho does.
                success = ReasonCode(PacketTypes.PUBACK, "Success")
                self.uplink._on_publish(self, None, 1, success, None)  # type: ignore[arg-type]

        threading.Thread(target=network_thread, daemon=True).start()
        holding.wait(5)
        with self.mutex:  # paho's publish takes the same mutex
            return SimpleNamespace(rc=MQTTErrorCode.MQTT_ERR_SUCCESS, mid=1)


def test_a_puback_during_publish_resolves_instead_of_deadlocking() -> None:
    outcome: list[str] = []

    def scenario() -> None:
        async def go() -> None:
            uplink = MqttUplink(
                UplinkSettings("127.0.0.1", 1, Path("ca"), Path("c"), Path("k"), "gw")
            )
            uplink._client = RacingClient(uplink)  # type: ignore[assignment]
            uplink._loop = asyncio.get_running_loop()
            await asyncio.wait_for(uplink.publish("t", b"x"), 5)
            outcome.append("acknowledged")

        asyncio.run(go())

    worker = threading.Thread(target=scenario, daemon=True)  # a deadlock must not hang the suite
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "publish and the PUBACK callback deadlocked"
    assert outcome == ["acknowledged"]
