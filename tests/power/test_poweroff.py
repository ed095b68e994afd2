"""The power-off request: systemd-logind's PowerOff(false) on the system bus, here a private
dbus-daemon with a stand-in logind (what the daemon sends is pinned, and so is a refusal becoming
a PowerOffError with the polkit hint). And the seam: ``[power] power_off`` picks the action."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import pytest
from dbus_fast import BusType, DBusError
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusBool, DBusSignature
from dbus_fast.service import ServiceInterface, dbus_method

from gateway.config.settings import load
from gateway.daemon.wiring import power_off_for
from gateway.errors import ConfigError
from gateway.power.poweroff import LOGIND, LOGIND_PATH, LogindPowerOff, PowerOffError
from rig.ble.bus import PrivateBus
from rig.power import RecordPowerOff, requests
from tests.factories import VALID_CONFIG, write_config

NoReply = Annotated[None, DBusSignature("")]


class FakeLogind(ServiceInterface):
    def __init__(self, refuse: bool) -> None:
        super().__init__("org.freedesktop.login1.Manager")
        self.calls: list[bool] = []
        self.refuse = refuse

    @dbus_method()
    def PowerOff(self, interactive: DBusBool) -> NoReply:  # noqa: N802 - the D-Bus name
        self.calls.append(interactive)
        if self.refuse:
            raise DBusError("org.freedesktop.DBus.Error.InteractiveAuthorizationRequired", "no")


@pytest.fixture
def system_bus(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    bus = PrivateBus()
    address = bus.start()
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", address)
    try:
        yield address
    finally:
        bus.stop()


async def _ask(refuse: bool) -> FakeLogind:
    logind = FakeLogind(refuse)
    service = await MessageBus(bus_type=BusType.SYSTEM).connect()
    try:
        service.export(LOGIND_PATH, logind)
        await service.request_name(LOGIND)
        await LogindPowerOff().request()
    finally:
        service.disconnect()
    return logind


def test_logind_is_asked_to_power_off_without_interaction(system_bus: str) -> None:
    logind = asyncio.run(_ask(refuse=False))
    assert logind.calls == [False]


def test_a_refusal_is_a_power_off_error_with_the_polkit_hint(system_bus: str) -> None:
    with pytest.raises(PowerOffError) as err:
        asyncio.run(_ask(refuse=True))
    assert "InteractiveAuthorizationRequired" in err.value.message
    assert "polkit" in err.value.hint


def test_no_logind_on_the_bus_is_a_power_off_error(system_bus: str) -> None:
    with pytest.raises(PowerOffError, match=r"refused|reach"):
        asyncio.run(LogindPowerOff().request())


def test_the_configured_action_is_used(files: Path) -> None:
    assert isinstance(power_off_for(load(write_config(files, VALID_CONFIG))), LogindPowerOff)
    rig_cfg = load(
        write_config(files, VALID_CONFIG + '[power]\nups = "ups"\npower_off = "rig-record"\n')
    )
    rig_cfg.state_dir.mkdir()
    chosen = power_off_for(rig_cfg)
    assert isinstance(chosen, RecordPowerOff)
    asyncio.run(chosen.request())
    assert len(requests(rig_cfg.state_dir)) == 1


def test_an_unknown_action_is_a_config_error(files: Path) -> None:
    cfg = load(write_config(files, VALID_CONFIG + '[power]\nups = "ups"\npower_off = "nope"\n'))
    with pytest.raises(ConfigError) as err:
        power_off_for(cfg)
    assert err.value.key == "power.power_off"
