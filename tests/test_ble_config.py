"""``[[ble_devices]]``: validated with one-line errors naming the key; drivers and lanes built
from it; an episode binding record converts into the same dataclass."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from drivers.ble.session import BleDeviceDriver
from gateway.config.ble import BleDeviceConfig
from gateway.config.settings import load
from gateway.daemon.wiring import build_agent, build_drivers
from gateway.errors import ConfigError
from gateway.pipeline.ingest import Lane
from tests.factories import VALID_CONFIG as VALID
from tests.factories import make_measurement
from tests.factories import write_config as write


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ('profile = "thermometer"\n', "ble_devices[0].address: missing"),
        ('address = "A4:C1:38:10:00:01"\n', "ble_devices[0].profile: missing"),
        ('address = "A4:C1:38:10:00"\nprofile = "thermometer"\n',
         "ble_devices[0].address: not a Bluetooth address"),
        ('address = "A4:C1:38:10:00:01"\nprofile = "toaster"\n',
         "ble_devices[0].profile: must be one of thermometer, blood-pressure"),
        ('address = "A4:C1:38:10:00:01"\nprofile = "glucose"\npasskey = 1234567\n',
         "ble_devices[0].passkey: must be the device's six-digit passkey"),
        ('address = "A4:C1:38:10:00:01"\nprofile = "glucose"\npasskey = "12a456"\n',
         "ble_devices[0].passkey: must be the device's six-digit passkey"),
        ('address = "A4:C1:38:10:00:01"\nprofile = "glucose"\nexpected_interval_s = 0\n',
         "ble_devices[0].expected_interval_s: must be between"),
        ('address = "A4:C1:38:10:00:01"\nprofile = "glucose"\nexpected_interval_s = "1h"\n',
         "ble_devices[0].expected_interval_s: must be a number"),
        ('address = "A4:C1:38:10:00:01"\nprofile = "glucose"\nadapter = "usb0"\n',
         "ble_devices[0].adapter: must be a BlueZ adapter name"),
        ('address = "A4:C1:38:10:00:01"\nprofile = "glucose"\npin = 1\n',
         "ble_devices[0].pin: unknown key"),
    ],
)
def test_ble_device_mistakes_are_named_on_one_line(files: Path, block: str, expected: str
                                                   ) -> None:
    with pytest.raises(ConfigError, match=re.escape(expected)) as failed:
        load(write(files, VALID + "\n[[ble_devices]]\n" + block))
    assert "\n" not in failed.value.one_line()


def test_the_same_address_twice_is_refused(files: Path) -> None:
    twice = '\n[[ble_devices]]\naddress = "A4:C1:38:10:00:01"\nprofile = "thermometer"\n'
    with pytest.raises(ConfigError, match="address 'A4:C1:38:10:00:01' is used twice"):
        load(write(files, VALID + twice + twice.replace("thermometer", "weight-scale")))


def test_ble_devices_are_parsed_and_built_into_drivers_with_their_lanes(files: Path) -> None:
    cfg = load(write(files, VALID + (
        '\n[[ble_devices]]\naddress = "a4-c1-38-10-00-02"\nprofile = "blood-pressure"\n'
        'passkey = "012345"\nexpected_interval_s = 43200\nadapter = "hci1"\n'
        '\n[[ble_devices]]\naddress = "A4:C1:38:10:00:03"\nprofile = "glucose"\nname = "glu"\n'
        '\n[[ble_devices]]\naddress = "A4:C1:38:10:00:06"\nprofile = "heart-rate"\n'
        '\n[[ble_devices]]\naddress = "A4:C1:38:10:00:07"\nprofile = "pulse-oximeter-continuous"\n'
    )))
    bp, glu, _hr, _plx = cfg.ble_devices
    assert bp == BleDeviceConfig("A4:C1:38:10:00:02", "blood-pressure", "blood-pressure-0002",
                                 12345, 43200.0, "hci1")
    assert (glu.name, glu.passkey, glu.adapter) == ("glu", None, None)
    assert [c.lane for c in cfg.ble_devices] == [Lane.SPOT, Lane.SPOT, Lane.STREAM, Lane.STREAM]
    built = [(d, lane) for d, lane in build_drivers(cfg) if isinstance(d, BleDeviceDriver)]
    assert [(d.name, d.address, d.bond, d.adapter) for d, _ in built] == [
        ("ble.blood-pressure-0002", "A4:C1:38:10:00:02", True, "hci1"),
        ("ble.glu", "A4:C1:38:10:00:03", False, None),
        ("ble.heart-rate-0006", "A4:C1:38:10:00:06", False, None),
        ("ble.pulse-oximeter-continuous-0007", "A4:C1:38:10:00:07", False, None)]
    assert built[1][0].racp
    assert (cfg.state_dir / "ble").is_dir()  # the RACP cursor's home
    # Lanes per reading: a continuous oximeter's 0x2A5F values stream, its spot-checks do not.
    lane_of = built[3][1]
    assert callable(lane_of)
    continuous = make_measurement(source="ble.pulse_oximeter.continuous")
    spot = make_measurement(source="ble.pulse_oximeter")
    assert (lane_of(continuous), lane_of(spot)) == (Lane.STREAM, Lane.SPOT)
    hr_lane = built[2][1]
    assert callable(hr_lane)
    assert hr_lane(make_measurement(source="ble.heart_rate")) == Lane.STREAM
    agent = build_agent(cfg.ble_devices, [d for d, _ in built])
    assert agent is not None
    assert agent.agent.passkeys == {"A4:C1:38:10:00:02": 12345, "A4:C1:38:10:00:03": None,
                                    "A4:C1:38:10:00:06": None, "A4:C1:38:10:00:07": None}


def test_no_ble_devices_no_agent(files: Path) -> None:
    assert build_agent(load(write(files, VALID)).ble_devices, []) is None


@dataclass(frozen=True)
class BoundDevice:  # the shape of provisioning's episode binding record
    transport: str
    address: str
    profile: str
    passkey: int | str | None
    expected_interval_s: float | None


def test_an_episode_binding_record_converts_with_the_same_checks() -> None:
    c = BleDeviceConfig.from_binding(BoundDevice("ble", "a4:c1:38:10:00:05", "weight-scale",
                                                 None, 86400.0))
    assert (c.address, c.profile, c.name, c.expected_interval_s) == (
        "A4:C1:38:10:00:05", "weight-scale", "weight-scale-0005", 86400.0)
    with pytest.raises(ConfigError, match="transport: not a BLE device"):
        BleDeviceConfig.from_binding(BoundDevice("serial", "x", "astm", None, None))
    with pytest.raises(ConfigError, match="passkey"):
        BleDeviceConfig.from_binding(BoundDevice("ble", "A4:C1:38:10:00:05", "glucose",
                                                 1_000_000, None))
    with pytest.raises(ConfigError, match="six-digit passkey"):
        BleDeviceConfig.from_binding(BoundDevice("ble", "A4:C1:38:10:00:05", "glucose",
                                                 "12a456", None))


def test_an_enrolled_router_reads_the_bound_ble_devices_not_the_configured_ones(
    files: Path,
) -> None:
    from gateway.daemon.wiring import ble_for  # noqa: PLC0415 - next to the test that needs it
    from provisioning.bundle import BoundDevice  # noqa: PLC0415
    from provisioning.runtime import BoundDevices  # noqa: PLC0415

    cfg = load(write(files, VALID + (
        '\n[[ble_devices]]\naddress = "A4:C1:38:10:00:02"\nprofile = "blood-pressure"\n'
        'adapter = "hci1"\n'
        '\n[[ble_devices]]\naddress = "A4:C1:38:10:00:07"\nprofile = "glucose"\n')))
    bound = BoundDevices(
        intake=True,
        devices=(
            BoundDevice("ble", "A4:C1:38:10:00:02", "blood-pressure", 3600.0, "012345"),
            BoundDevice("ble", "A4:C1:38:99:00:09", "thermometer", 3600.0, None),
            BoundDevice("serial", "crp", "astm", 3600.0, None),
        ),
    )
    read = ble_for(cfg, bound)
    assert [(c.address, c.profile, c.passkey, c.adapter) for c in read] == [
        ("A4:C1:38:10:00:02", "blood-pressure", 12345, "hci1"),  # adapter from [[ble_devices]]
        ("A4:C1:38:99:00:09", "thermometer", None, None),
    ]
    assert ble_for(cfg, BoundDevices(intake=False, devices=bound.devices)) == []  # returning
    assert ble_for(cfg, BoundDevices(intake=True, devices=None)) == list(cfg.ble_devices)


def test_the_passkey_never_shows_in_a_repr() -> None:
    """The support bundle lists the configuration with repr(): the bonding secret stays out."""
    device = BleDeviceConfig("A4:C1:38:00:00:01", "blood-pressure", passkey=731946)
    assert device.passkey == 731946
    assert "731946" not in repr(device)
    assert "A4:C1:38:00:00:01" in repr(device)
