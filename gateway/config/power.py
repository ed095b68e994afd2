"""``[power]``: the UPS the router runs on, read from Network UPS Tools' upsd (gateway.power).

No table: the health report says ``power: unknown (no UPS configured)``. Every key is checked
here so a wrong value stops the daemon with one line naming it.

    [power]
    ups = "ups"                # the UPS's name in upsd (ups.conf section)
    host = "127.0.0.1"         # upsd; 127.0.0.1 when NUT runs on the router itself
    port = 3493
    low_runtime_s = 300        # stop cleanly when less battery runtime than this is left
    poll_interval_s = 5
    confirm_s = 10             # a change of supply must hold this long to count (debounce)
    power_off = "logind"       # how to power off after the clean stop
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config.tomltable import Table
from gateway.errors import ConfigError

NUT_PORT = 3493
_UPS_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_PLUGIN_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
KEYS = ("ups", "host", "port", "low_runtime_s", "poll_interval_s", "confirm_s", "power_off")


@dataclass(frozen=True, slots=True)
class PowerConfig:
    ups: str
    host: str = "127.0.0.1"
    port: int = NUT_PORT
    low_runtime_s: float = 300.0
    poll_interval_s: float = 5.0
    confirm_s: float = 10.0
    power_off: str = "logind"  # or a plug-in of the entry-point group homecare_gateway.power_off


def parse(data: Mapping[str, Any], path: Path) -> PowerConfig | None:
    if "power" not in data:
        return None
    raw = data["power"]
    if not isinstance(raw, dict):
        raise ConfigError("power", "must be a table ([power])", path=str(path))
    t = Table(raw, "power", path, KEYS)
    ups = t.get("ups", str, what='the UPS name in upsd, such as "ups"')
    if not _UPS_NAME.match(ups):
        raise t.error("ups", f"1-64 letters, digits, '.', '_' or '-', got {ups!r}")
    host = t.get("host", str, "127.0.0.1", what="a host name or address")
    if not host or len(host) > 253 or any(c.isspace() for c in host):
        raise t.error("host", f"not a host name or address: {host!r}")
    port = t.int_in("port", 1, 65535, NUT_PORT)
    low = t.get("low_runtime_s", float, 300.0, what="a number of seconds")
    if not 10 <= low <= 7200:
        raise t.error("low_runtime_s", "must be between 10 and 7200 seconds")
    poll = t.get("poll_interval_s", float, 5.0, what="a number of seconds")
    if not 0.2 <= poll <= 60:
        raise t.error("poll_interval_s", "must be between 0.2 and 60 seconds")
    confirm = t.get("confirm_s", float, 10.0, what="a number of seconds")
    if not 0 <= confirm <= 600:
        raise t.error("confirm_s", "must be between 0 and 600 seconds")
    power_off = t.get("power_off", str, "logind", what='"logind" or a power-off plug-in name')
    if not _PLUGIN_NAME.match(power_off):
        raise t.error("power_off", f'"logind" or a plug-in name, got {power_off!r}')
    return PowerConfig(ups, host, port, low, poll, confirm, power_off)
