"""Bonding: bleak's pair=True plus an org.bluez.Agent1 the test registers (bleak registers none;
a headless gateway must)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import pytest
from bleak import BleakClient
from bleak.exc import BleakDBusError
from dbus_fast.annotations import DBusObjectPath, DBusSignature, DBusUInt32
from dbus_fast.errors import DBusError
from dbus_fast.service import ServiceInterface, dbus_method

from drivers.ble.blood_pressure import BP_MEASUREMENT_UUID, BloodPressureMeasurement
from rig.ble.peripheral import Pairing, PairingMethod
from rig.ble.profiles import BloodPressureMonitor
from rig.ble.timing import Timing
from tests.ble_sim.conftest import StartRig
from tests.ble_sim.helpers import BOUND, Inbox, RawClient, device_path, find, uuid

AGENT_PATH = "/org/homecare/agent"
# With postponed annotations dbus-fast evaluates "None" to None and rejects it: an empty D-Bus
# signature has to be spelled out.
NoReply = Annotated[None, DBusSignature("")]
BP = uuid(BP_MEASUREMENT_UUID)


class Agent(ServiceInterface):
    """What a gateway registers: answers with the passkey of the episode binding."""

    def __init__(self, passkey: int, *, confirm: bool = True) -> None:
        super().__init__("org.bluez.Agent1")
        self.passkey = passkey
        self.confirm = confirm
        self.asked: list[str] = []

    @dbus_method()
    def RequestPasskey(self, device: DBusObjectPath) -> DBusUInt32:  # noqa: N802 D-Bus name
        self.asked.append("RequestPasskey")
        return self.passkey

    @dbus_method()
    def RequestConfirmation(self, device: DBusObjectPath,  # noqa: N802 D-Bus name
                            passkey: DBusUInt32) -> NoReply:
        self.asked.append(f"RequestConfirmation {passkey:06d}")
        if not self.confirm:
            raise DBusError("org.bluez.Error.Rejected", "passkey does not match")

    @dbus_method()
    def RequestAuthorization(self, device: DBusObjectPath) -> NoReply:  # noqa: N802 D-Bus name
        self.asked.append("RequestAuthorization")

    @dbus_method()
    def Release(self) -> NoReply:  # noqa: N802 D-Bus name
        self.asked.append("Release")


@asynccontextmanager
async def registered(agent: Agent, capability: str = "KeyboardDisplay"
                     ) -> AsyncIterator[RawClient]:
    async with RawClient() as raw:
        raw.bus.export(AGENT_PATH, agent)
        for member, signature, body in (("RegisterAgent", "os", [AGENT_PATH, capability]),
                                        ("RequestDefaultAgent", "o", [AGENT_PATH])):
            reply = await raw.bluez("/org/bluez", "org.bluez.AgentManager1", member,
                                    signature, body)
            assert reply.error_name is None, reply.body
        yield raw


def monitor(method: PairingMethod = PairingMethod.PASSKEY_ENTRY) -> BloodPressureMonitor:
    return BloodPressureMonitor(BOUND, pairing=Pairing(method, passkey=123456))


async def test_pairing_with_the_right_passkey_bonds_and_unlocks_measurements(
        sim: StartRig) -> None:
    bp = monitor()
    rig = sim(bp)
    agent = Agent(123456)
    async with registered(agent) as raw:
        inbox = Inbox()
        async with BleakClient(await find(BOUND), pair=True, timeout=5) as client:
            assert await raw.prop(device_path(BOUND), "org.bluez.Device1", "Paired") is True
            assert await raw.prop(device_path(BOUND), "org.bluez.Device1", "Trusted") is True
            await client.start_notify(BP, inbox)
            sent = await rig.acall(lambda: bp.measure(128, 82, 64))
            [(_, data)] = await inbox.take(1)
    assert agent.asked == ["RequestPasskey"]
    assert BloodPressureMeasurement.decode(data) == sent


async def test_wrong_passkey_fails_authentication_and_leaves_no_bond(sim: StartRig) -> None:
    sim(monitor())
    agent = Agent(111111)
    async with registered(agent) as raw:
        with pytest.raises(BleakDBusError) as failed:
            await BleakClient(await find(BOUND), pair=True, timeout=5).connect()
        assert failed.value.dbus_error == "org.bluez.Error.AuthenticationFailed"
        assert await raw.prop(device_path(BOUND), "org.bluez.Device1", "Paired") is False
    assert agent.asked == ["RequestPasskey"]


async def test_unbonded_subscription_to_a_protected_measurement_is_refused(
        sim: StartRig) -> None:
    sim(monitor())
    async with BleakClient(await find(BOUND), timeout=5) as client:
        with pytest.raises(BleakDBusError) as refused:
            await client.start_notify(BP, Inbox())
    assert refused.value.dbus_error == "org.bluez.Error.NotPermitted"
    assert "Not paired" in str(refused.value)


async def test_agent_capability_and_association_model(sim: StartRig) -> None:
    """Numeric comparison asks RequestConfirmation (a refusal is AuthenticationRejected);
    just works asks RequestAuthorization; passkey entry with an agent that cannot type fails
    without asking it."""
    confirm_dev, works_dev = monitor(PairingMethod.NUMERIC_COMPARISON), \
        monitor(PairingMethod.JUST_WORKS)
    cases = [(confirm_dev, Agent(0, confirm=False), "KeyboardDisplay",
              "org.bluez.Error.AuthenticationRejected", ["RequestConfirmation 123456"]),
             (works_dev, Agent(0), "NoInputNoOutput", None, ["RequestAuthorization"]),
             (monitor(), Agent(123456), "NoInputNoOutput",
              "org.bluez.Error.AuthenticationFailed", [])]
    for device, agent, capability, error, asked in cases:
        rig = sim(device, timing=Timing(agent_timeout_s=2))
        async with registered(agent, capability) as raw:
            client = BleakClient(await find(BOUND), pair=True, timeout=5)
            try:
                await client.connect()
                outcome = None
            except BleakDBusError as failed:
                outcome = failed.dbus_error
            paired = await raw.prop(device_path(BOUND), "org.bluez.Device1", "Paired")
            await client.disconnect()
        assert (outcome, agent.asked, paired) == (error, asked, error is None)
        await asyncio.to_thread(rig.stop)
