"""The ``bluetoothctl`` stub and the environment a bleak process needs to use the rig.

bleak asks ``bluetoothctl --version`` once per process (the answer is cached on a class) before
its first connect; a missing binary only logs a warning, a version below 5.55 makes every
connect fail. The stub answers 5.66. If the packaged script lost its executable bit (a wheel
install), a copy is written to ``fallback_dir``.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

BIN_DIR = Path(__file__).with_name("bin")
STUB = BIN_DIR / "bluetoothctl"


def stub_dir(fallback_dir: Path) -> Path:
    """A directory holding an executable ``bluetoothctl`` stub."""
    if os.access(STUB, os.X_OK):
        return BIN_DIR
    fallback_dir.mkdir(parents=True, exist_ok=True)
    copy = fallback_dir / "bluetoothctl"
    shutil.copyfile(STUB, copy)
    copy.chmod(stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    return fallback_dir


def rig_environment(bus_address: str, bin_dir: Path, base: dict[str, str] | None = None
                    ) -> dict[str, str]:
    """``base`` (default: this process's environment) pointed at the rig: the private bus as
    the system bus, the stub first on PATH."""
    env = dict(os.environ if base is None else base)
    env["DBUS_SYSTEM_BUS_ADDRESS"] = bus_address
    env["PATH"] = os.pathsep.join([str(bin_dir), env.get("PATH", os.defpath)])
    return env
