"""Scenario files: which devices are in the air and what happens when (``make demo``, HIL).

A scenario is JSON::

    {"timing": "realistic",                      # or "fast", or {"connect_delay_s": 0.5, ...}
     "devices": [
       {"kind": "thermometer", "address": "A4:C1:38:00:00:01", "name": "TH-1",
        "bonded": false, "rssi": -58,
        "pairing": {"method": "passkey", "passkey": 123456},
        "clock": {"zone_min": 60, "offset_s": -90, "drift_ppm": 50, "unset": false},
        "options": {"fahrenheit": false},          # constructor keywords of the class
        "stored": 20}],                            # glucose meter, spirometer: fill(20)
     "events": [
       {"at_s": 2, "device": "A4:C1:38:00:00:01", "action": "measure",
        "args": {"temperature": "37.2"}, "every_s": 60, "count": 10},
       {"at_s": 30, "device": "A4:C1:38:00:00:01", "action": "out_of_range"},
       {"at_s": 45, "device": "A4:C1:38:00:00:01", "action": "back_in_range"},
       {"at_s": 60, "action": "restart_bluetoothd", "down_s": 2}]}

Actions: measure (``args`` are ``measure()`` keywords), out_of_range, back_in_range,
malformed_next (``n``), disconnect_after_records (``n``), restart_bluetoothd (``down_s``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from rig.ble.clock import DeviceClock
from rig.ble.errors import SimError
from rig.ble.ghs import Spirometer
from rig.ble.peripheral import Pairing, PairingMethod, Peripheral
from rig.ble.profiles import (
    BloodPressureMonitor,
    HeartRateSensor,
    PulseOximeter,
    Thermometer,
    WeightScale,
)
from rig.ble.stored import CgmSensor, GlucoseMeter
from rig.ble.timing import Timing

KINDS: dict[str, type[Peripheral]] = {cls.kind: cls for cls in (
    Thermometer, BloodPressureMonitor, WeightScale, PulseOximeter, HeartRateSensor,
    GlucoseMeter, CgmSensor, Spirometer)}
ACTIONS = ("measure", "out_of_range", "back_in_range", "malformed_next",
           "disconnect_after_records", "restart_bluetoothd")


@dataclass(frozen=True, slots=True)
class Event:
    at_s: float
    action: str
    device: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    every_s: float | None = None
    count: int = 1


@dataclass(slots=True)
class Scenario:
    timing: Timing
    devices: list[Peripheral]
    bonded: list[str]
    events: list[Event]

    def device(self, address: str) -> Peripheral:
        for device in self.devices:
            if device.address == address.upper():
                return device
        raise SimError(f"scenario event names an unknown device {address}")


def _timing(raw: Any) -> Timing:
    if raw in (None, "fast"):
        return Timing()
    if raw == "realistic":
        return Timing.realistic()
    if isinstance(raw, dict):
        try:
            return replace(Timing(), **raw)
        except TypeError as error:
            raise SimError(f"scenario timing: {error}") from None
    raise SimError("scenario timing must be 'fast', 'realistic' or an object")


def _device(raw: dict[str, Any]) -> Peripheral:
    cls = KINDS.get(str(raw.get("kind")))
    if cls is None:
        raise SimError(f"unknown device kind {raw.get('kind')!r}; known: {sorted(KINDS)}")
    clock_raw = raw.get("clock", {})
    clock = DeviceClock(zone=timedelta(minutes=clock_raw.get("zone_min", 0)),
                        offset=timedelta(seconds=clock_raw.get("offset_s", 0)),
                        drift_ppm=float(clock_raw.get("drift_ppm", 0)),
                        unset=bool(clock_raw.get("unset", False)))
    pairing = None
    if "pairing" in raw:
        pairing = Pairing(PairingMethod(raw["pairing"].get("method", "passkey")),
                          int(raw["pairing"].get("passkey", 0)))
    try:
        device = cls(raw["address"], name=raw.get("name"), rssi=int(raw.get("rssi", -60)),
                     pairing=pairing, clock=clock, **raw.get("options", {}))
    except (KeyError, TypeError) as error:
        raise SimError(f"scenario device {raw.get('address')}: {error}") from None
    if isinstance(device, GlucoseMeter | Spirometer) and raw.get("stored"):
        device.fill(int(raw["stored"]))
    return device


def parse(data: dict[str, Any]) -> Scenario:
    devices = [_device(d) for d in data.get("devices", [])]
    bonded = [str(d["address"]).upper() for d in data.get("devices", []) if d.get("bonded")]
    events = []
    for raw in data.get("events", []):
        if raw.get("action") not in ACTIONS:
            raise SimError(f"unknown scenario action {raw.get('action')!r}; known: {ACTIONS}")
        events.append(Event(float(raw.get("at_s", 0)), raw["action"], raw.get("device"),
                            dict(raw.get("args", {})), raw.get("every_s"),
                            int(raw.get("count", 1))))
    scenario = Scenario(_timing(data.get("timing")), devices, bonded, events)
    for event in events:
        if event.device is not None:
            scenario.device(event.device)
        elif event.action != "restart_bluetoothd":
            raise SimError(f"scenario action {event.action} needs a device")
    return scenario


def load(path: Path) -> Scenario:
    try:
        return parse(json.loads(path.read_text()))
    except (OSError, ValueError) as error:
        raise SimError(f"cannot read scenario {path}: {error}") from None


def apply(scenario: Scenario, event: Event) -> None:
    """One device action, on the simulator's loop."""
    device = scenario.device(event.device or "")
    if event.action == "measure":
        measure: Callable[..., object] = getattr(device, "measure")  # noqa: B009 per-class
        measure(**event.args)
    elif event.action == "out_of_range":
        device.go_out_of_range()
    elif event.action == "back_in_range":
        device.come_back()
    elif event.action == "malformed_next":
        device.script.malformed_next = int(event.args.get("n", 1))
    elif event.action == "disconnect_after_records":
        device.script.disconnect_after_records = int(event.args.get("n", 1))


async def play(scenario: Scenario, restart: Callable[[float], Awaitable[None]]) -> None:
    """Run the timeline; ``restart(down_s)`` restarts the simulated bluetoothd."""
    async def one(event: Event) -> None:
        await asyncio.sleep(event.at_s)
        for n in range(event.count):
            if n:
                await asyncio.sleep(event.every_s or 0)
            if event.action == "restart_bluetoothd":
                await restart(float(event.args.get("down_s", 1.0)))
            else:
                apply(scenario, event)

    async with asyncio.TaskGroup() as group:
        for index, event in enumerate(scenario.events):
            group.create_task(one(event), name=f"scenario-event-{index}")
