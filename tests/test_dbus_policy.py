"""The shipped BlueZ D-Bus policy on a real dbus-daemon (issue 16: Debian's stock policy lets any
local user remove bonds, register an agent or read GATT values).

The bus gets the part of Debian's bluetooth.conf that matters (everyone and the bluetooth group
may send anything to org.bluez), then our file, as on the router (/etc after /usr/share). A
stand-in org.bluez answers every call; ``dbus-send`` runs as root, as the service user and as
another local user.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

REPO = Path(__file__).resolve().parents[1]
POLICY = REPO / "systemd" / "homecare-gateway-bluez.conf"
SERVICE_USER = "nobody"  # stands for homecare-gateway (the test substitutes the name)
STRANGER = "daemon"  # any other local user (dbus-daemon needs it in the user database)

DEBIAN_LIKE = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_destination="org.freedesktop.DBus"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <!-- Debian's bluetooth.conf -->
    <allow send_destination="org.bluez"/>
  </policy>
  <policy user="root">
    <allow own="org.bluez"/>
    <allow send_destination="org.bluez"/>
  </policy>
  <policy group="bluetooth">
    <allow send_destination="org.bluez"/>
  </policy>
  <include>{policy}</include>
</busconfig>
"""

CALLS = {
    "remove-bond": ("/org/bluez/hci0", "org.bluez.Adapter1.RemoveDevice",
                    "objpath:/org/bluez/hci0/dev_AA_BB_CC_00_00_01"),
    "agent": ("/org/bluez", "org.bluez.AgentManager1.RegisterAgent", "objpath:/x",
              "string:KeyboardDisplay"),
    "pair": ("/org/bluez/hci0/dev_AA_BB_CC_00_00_01", "org.bluez.Device1.Pair"),
    "gatt-read": ("/org/bluez/hci0/dev_AA_BB_CC_00_00_01/service000c/char000d",
                  "org.bluez.GattCharacteristic1.ReadValue", "dict:string:string:"),
    "list": ("/", "org.freedesktop.DBus.ObjectManager.GetManagedObjects"),
}  # fmt: skip
GUARDED = ("remove-bond", "agent", "pair", "gatt-read")

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="runs clients as other users"),
    pytest.mark.skipif(shutil.which("dbus-daemon") is None, reason="needs dbus-daemon"),
]


@pytest.fixture
def bus_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="bluez-policy-", dir="/tmp"))
    d.chmod(0o755)
    policy = d / "homecare-gateway-bluez.conf"
    policy.write_text(POLICY.read_text().replace('"homecare-gateway"', f'"{SERVICE_USER}"'))
    (d / "bus.conf").write_text(
        DEBIAN_LIKE.format(socket=d / "bus.sock", policy=policy)
    )
    yield d
    shutil.rmtree(d)


async def _call(address: str, name: str, user: str | None) -> str:
    path, member, *args = CALLS[name]
    argv = ["dbus-send", f"--bus={address}", "--print-reply", "--dest=org.bluez", path,
            member, *args]  # fmt: skip
    as_user: dict[str, object] = {} if user is None else {"user": user, "extra_groups": []}
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **as_user  # type: ignore[arg-type]
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    text = (out + err).decode()
    if "AccessDenied" in text:
        return "denied"
    return "answered" if proc.returncode == 0 else f"failed: {text.strip()}"


async def test_only_root_and_the_service_may_touch_the_patients_devices(bus_dir: Path) -> None:
    daemon = await asyncio.create_subprocess_exec(
        "dbus-daemon", f"--config-file={bus_dir / 'bus.conf'}", "--nofork", "--nopidfile",
        "--print-address=1", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert daemon.stdout is not None
        address = (await asyncio.wait_for(daemon.stdout.readline(), 20)).decode().strip()
        assert address, "dbus-daemon did not start"
        bluez = await MessageBus(bus_address=address).connect()
        await bluez.request_name("org.bluez")

        def answer(msg: Message) -> Message | None:
            if msg.message_type is MessageType.METHOD_CALL and msg.destination == "org.bluez":
                return Message.new_method_return(msg)
            return None

        bluez.add_message_handler(answer)
        try:
            results = {
                (who, name): await _call(address, name, user)
                for who, user in (("root", None), ("service", SERVICE_USER), ("other", STRANGER))
                for name in CALLS
            }
        finally:
            bluez.disconnect()
    finally:
        daemon.terminate()
        await asyncio.wait_for(daemon.wait(), 20)
    for name in GUARDED:
        assert results[("root", name)] == "answered", name
        assert results[("service", name)] == "answered", name
        assert results[("other", name)] == "denied", name
    assert results[("other", "list")] == "answered"  # listing stays open to technicians


def test_the_deb_installs_it_where_it_is_read_after_bluez() -> None:
    script = (REPO / "packaging" / "build-deb.sh").read_text()
    assert "/etc/dbus-1/system.d/homecare-gateway-bluez.conf" in script
