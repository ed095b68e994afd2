"""What the build and the rig can do, asked once per session: BLE support in the daemon, the
software version, the BLE devices' Device Information."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from gateway.seal.keys import private_pem, public_pem
from hil.profile import RigProfile

_PROBE_ADDRESS = "A4:C1:38:7E:57:01"


def _gatewayctl(profile: RigProfile, *args: str) -> subprocess.CompletedProcess[str]:
    prefix = list(profile.gatewayctl) or [sys.executable, "-m", "gateway.cli.main"]
    return subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=60,
                          check=False)


@functools.cache
def daemon_ble_support() -> str | None:
    """None if this build's gatewayd accepts ``[[ble_devices]]`` (``gatewayctl config-check`` on
    a minimal configuration holding one), else the skip reason with the checker's answer."""
    with tempfile.TemporaryDirectory(prefix="hil-probe-") as tmp:
        d = Path(tmp)
        (d / "identity.key").write_bytes(private_pem(ed25519.Ed25519PrivateKey.generate()))
        (d / "provider.pub").write_bytes(
            public_pem(x25519.X25519PrivateKey.generate().public_key())
        )
        for name in ("ca.crt", "client.crt", "client.key"):
            (d / name).write_text("placeholder\n")
        config = d / "gateway.toml"
        config.write_text(
            '[gateway]\nid = "gw-hil-probe"\n'
            f'state_dir = "{d / "state"}"\n[identity]\nsigning_key = "{d / "identity.key"}"\n'
            f'[provider]\nhpke_public_key = "{d / "provider.pub"}"\n'
            f'[uplink]\nhost = "127.0.0.1"\nca_file = "{d / "ca.crt"}"\n'
            f'cert_file = "{d / "client.crt"}"\nkey_file = "{d / "client.key"}"\n'
            f'[[ble_devices]]\naddress = "{_PROBE_ADDRESS}"\nprofile = "thermometer"\n'
        )
        proc = subprocess.run(
            [sys.executable, "-m", "gateway.cli.main", "config-check", "--config", str(config)],
            capture_output=True, text=True, timeout=60, check=False,
        )
    if proc.returncode == 0:
        return None
    answer = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
    answer = answer.replace(f"{config}: ", "").split(" (fix ", 1)[0]  # the probe's temp path
    return f"this build's gatewayd does not accept [[ble_devices]] yet (config-check: {answer})"


def software_version(profile: RigProfile) -> str:
    """``gatewayctl version`` as the gateway (the router on a real rig) answers it."""
    try:
        proc = _gatewayctl(profile, "version", "--json")
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    if proc.returncode != 0:
        return f"unknown (gatewayctl version exit {proc.returncode})"
    try:
        return f"homecare-gateway {json.loads(proc.stdout)['gatewayctl']}"
    except (ValueError, KeyError):
        return proc.stdout.strip()[:80]


def lifecycle_support(profile: RigProfile) -> str | None:
    """None if ``gatewayctl return --help`` works on the gateway, else the skip reason."""
    from hil.base import NOT_AVAILABLE  # noqa: PLC0415

    try:
        proc = _gatewayctl(profile, "return", "--help")
    except (OSError, subprocess.TimeoutExpired):
        return NOT_AVAILABLE
    return None if proc.returncode == 0 else NOT_AVAILABLE


def ble_device_information(profile: RigProfile, workdir: Path) -> list[dict[str, Any]]:
    """Device Information of each BLE device, read with the real bleak. On the sim rig the
    devices live on a simulated BlueZ started for this; on a real rig the adapter of this host
    is used (run the suite on the router, or give it a second adapter of the same kind)."""
    from bleak.exc import BleakError  # noqa: PLC0415 - only rigs with BLE devices need bleak

    from hil.ble_info import read_device_information  # noqa: PLC0415

    bluez: Any = None
    if profile.simulated:
        from hil.sim import sim_peripherals  # noqa: PLC0415
        from rig.ble.rig import SimulatedBluez  # noqa: PLC0415

        bluez = SimulatedBluez(sim_peripherals(profile).values()).start()
    out: list[dict[str, Any]] = []
    try:
        for d in profile.ble_devices:
            entry: dict[str, Any] = {"name": d.name, "transport": "ble", "profile": d.profile,
                                     "address": d.address, "neighbour": d.neighbour}
            try:
                info = read_device_information(d.address, profile.ble_adapter)
            except (BleakError, TimeoutError, OSError) as exc:
                entry.update(model="?", firmware="?", source=f"not read: {exc}"[:120])
            else:
                entry.update(
                    model=info.get("model_number", "?"),
                    firmware=info.get("firmware_revision", "?"),
                    manufacturer=info.get("manufacturer_name", "?"),
                    source="Device Information 0x180A"
                    + (" (simulated BlueZ)" if profile.simulated else ""),
                )
                if "serial_number" in info:
                    entry["serial_number"] = info["serial_number"]
            out.append(entry)
    finally:
        if bluez is not None:
            bluez.stop()
    return out
