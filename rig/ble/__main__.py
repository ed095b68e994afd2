"""``python -m rig.ble SCENARIO.json``: a simulated BlueZ in the foreground.

Starts a private bus (or serves on ``--bus-address``), the simulated bluetoothd with the
scenario's devices, prints ``DBUS_SYSTEM_BUS_ADDRESS=...`` and ``PATH=...`` lines (also written
to ``--env-file`` for a shell to source) then ``bluez-sim: ready``, plays the scenario's events
and runs until SIGINT / SIGTERM or ``--seconds``. Exit codes: 0 done, 2 bad scenario or
start-up failure. Example::

    python -m rig.ble demo.json --env-file /tmp/bluez-sim.env &
    . /tmp/bluez-sim.env && gatewayd ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shlex
import signal
import sys
import tempfile
from pathlib import Path

from rig.ble.bluez import BluezService
from rig.ble.bus import PrivateBus
from rig.ble.errors import SimError
from rig.ble.scenario import Scenario, load, play
from rig.ble.stub import stub_dir


async def serve(scenario: Scenario, address: str, seconds: float) -> None:
    service = BluezService(scenario.devices, scenario.timing)
    service.bonds.update(scenario.bonded)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    async def restart(down_s: float) -> None:
        await service.stop(crash=True)
        await asyncio.sleep(down_s)
        await service.start(address)

    try:
        await service.start(address)
        print("bluez-sim: ready", flush=True)
        timeline = loop.create_task(play(scenario, restart), name="scenario")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds if seconds > 0 else None)
        timeline.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await timeline
    finally:
        await service.stop()
        for device in scenario.devices:
            device.stop()


def environment_lines(address: str, bin_dir: Path) -> list[str]:
    return [f"DBUS_SYSTEM_BUS_ADDRESS={shlex.quote(address)}",
            f'PATH={shlex.quote(str(bin_dir))}:"$PATH"']


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rig.ble",
                                     description="Run a simulated BlueZ from a scenario file.")
    parser.add_argument("scenario", type=Path, help="scenario JSON (rig/ble/scenario.py)")
    parser.add_argument("--bus-address", help="serve on this bus instead of a private one")
    parser.add_argument("--env-file", type=Path, help="write export lines for a shell here")
    parser.add_argument("--seconds", type=float, default=0, help="stop after this long (0: never)")
    args = parser.parse_args(argv)
    bus = PrivateBus()
    try:
        scenario = load(args.scenario)
        address = args.bus_address or bus.start()
        scratch = bus.directory if bus.running else Path(tempfile.mkdtemp(prefix="bluez-sim-"))
        lines = environment_lines(address, stub_dir(scratch / "bin"))
        if args.env_file is not None:
            args.env_file.write_text("".join(f"export {line}\n" for line in lines))
        print("\n".join(lines), flush=True)
        asyncio.run(serve(scenario, address, args.seconds))
    except SimError as error:
        print(f"bluez-sim: {error.one_line()}", file=sys.stderr)
        return 2
    finally:
        bus.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
