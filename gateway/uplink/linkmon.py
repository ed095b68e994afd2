"""Link monitor: the VPN tunnel and the WAN link under it, as the health report shows them.

The command centre must tell "no readings because nothing was measured" from "no readings because
the link is down". Every ``interval_s`` this asks the kernel, in a worker thread:

- **VPN**: the WireGuard interface's latest handshake per peer (``wg show <if> latest-handshakes``;
  never ``dump``, which prints the private key) and whether the route to the broker goes through
  the tunnel. WireGuard renews a session every 2 minutes while traffic flows and drops it after
  180 s without a handshake, so an older handshake means the tunnel is not carrying anything.
- **WAN**: which interface carries the tunnel itself (the route to the peer's endpoint; without a
  VPN, the route to the broker). The 5G modem's interfaces (``uplink.wan_interfaces``) are the
  expected WAN; the patient's own broadband is acceptable only when it is listed as an explicit
  exception (``uplink.broadband_interfaces``). Anything else raises an alarm.

Reading WireGuard state needs CAP_NET_ADMIN. Without it the VPN state is ``unknown`` with the
reason; the route checks work unprivileged.
"""

from __future__ import annotations

import asyncio
import ipaddress
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from gateway import alarms
from gateway.uplink.link import route_to

log = structlog.get_logger("gateway.linkmon")

WG_REJECT_AFTER_S = 180.0  # WireGuard's Reject-After-Time: an older session carries nothing
CommandRunner = Callable[[Sequence[str]], str]


class LinkProbeError(Exception):
    """A link tool could not answer (missing, no permission, interface gone)."""


def run_command(argv: Sequence[str]) -> str:
    tool = shutil.which(argv[0])
    if tool is None:
        raise LinkProbeError(f"{argv[0]} is not installed")
    proc = subprocess.run(  # noqa: S603 - fixed tools, arguments from our configuration
        [tool, *argv[1:]], capture_output=True, text=True, timeout=5, check=False
    )
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or ["failed"])[-1]
        raise LinkProbeError(f"{' '.join(argv[:3])}: {reason}")
    return proc.stdout


def parse_latest_handshakes(text: str) -> list[int]:
    """``wg show <if> latest-handshakes``: "<peer key>\\t<unix time>" per peer (0: never)."""
    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[1].isdigit():
            out.append(int(fields[1]))
    return out


def parse_endpoint_hosts(text: str) -> list[str]:
    """``wg show <if> endpoints``: "<peer key>\\t<ip:port | [ipv6]:port | (none)>" per peer."""
    hosts = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) != 2 or fields[1] == "(none)":
            continue
        host = fields[1].rsplit(":", 1)[0].strip("[]")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            continue
        hosts.append(host)
    return hosts


@dataclass(frozen=True, slots=True)
class LinkSettings:
    broker_host: str
    broker_port: int
    vpn_interface: str | None = None
    wan_interfaces: tuple[str, ...] = ()  # the 5G modem's network interfaces
    broadband_interfaces: tuple[str, ...] = ()  # the patient's broadband, an explicit exception


class LinkMonitor:
    def __init__(self, settings: LinkSettings, run: CommandRunner = run_command) -> None:
        self.settings = settings
        self._run = run
        self._vpn: dict[str, Any] = {"interface": settings.vpn_interface, "state": "unchecked"}
        self._wan: dict[str, Any] = {"interface": None, "kind": "unchecked"}
        self.checked_at: float | None = None

    # -- probes (blocking: run in a thread) ---------------------------------------------------

    def refresh(self) -> None:
        endpoints: list[str] = []
        if self.settings.vpn_interface:
            self._vpn, endpoints = self._probe_vpn(self.settings.vpn_interface)
        self._wan = self._probe_wan(endpoints)
        self.checked_at = time.time()

    def _probe_vpn(self, iface: str) -> tuple[dict[str, Any], list[str]]:
        snap: dict[str, Any] = {"interface": iface}
        try:
            route = route_to(self.settings.broker_host, self.settings.broker_port)
            snap["route_via_vpn"] = route.interface == iface
            if route.error:
                snap["route_error"] = route.error
        except Exception as exc:  # noqa: BLE001 - reported, never raised into the health loop
            snap["route_via_vpn"] = None
            snap["route_error"] = str(exc)
        try:
            handshakes = parse_latest_handshakes(
                self._run(["wg", "show", iface, "latest-handshakes"])
            )
            endpoints = parse_endpoint_hosts(self._run(["wg", "show", iface, "endpoints"]))
        except (LinkProbeError, OSError, subprocess.TimeoutExpired) as exc:
            snap.update(state="unknown", handshake_age_s=None, error=str(exc))
            return snap, []
        latest = max(handshakes, default=0)
        if latest == 0:
            snap.update(state="no-handshake", handshake_age_s=None)
        else:
            age = round(max(0.0, time.time() - latest), 1)
            snap.update(state="up" if age < WG_REJECT_AFTER_S else "stale", handshake_age_s=age)
        snap["peers"] = len(handshakes)
        return snap, endpoints

    def _probe_wan(self, endpoints: list[str]) -> dict[str, Any]:
        target = endpoints[0] if endpoints else self.settings.broker_host
        try:
            route = route_to(target, self.settings.broker_port)
        except Exception as exc:  # noqa: BLE001 - reported, never raised into the health loop
            return {"interface": None, "kind": "unknown", "error": str(exc)}
        iface = route.interface
        if iface is None and route.error:
            return {"interface": None, "kind": "unknown", "error": route.error}
        if not endpoints and iface and iface == self.settings.vpn_interface:
            # The broker route is the tunnel; what carries the tunnel needs its endpoint.
            return {"interface": None, "kind": "unknown", "error": "tunnel endpoint not known"}
        if not self.settings.wan_interfaces and not self.settings.broadband_interfaces:
            kind = "unchecked"
        elif iface in self.settings.wan_interfaces:
            kind = "modem"
        elif iface in self.settings.broadband_interfaces:
            kind = "broadband-exception"
        else:
            kind = "unexpected"
        return {"interface": iface, "kind": kind, "carries": "vpn" if endpoints else "broker"}

    # -- what the health report reads (cached; cheap on the event loop) -----------------------

    def vpn_snapshot(self) -> dict[str, Any]:
        return dict(self._vpn)

    def wan_snapshot(self) -> dict[str, Any]:
        return dict(self._wan)

    def alarms(self) -> list[str]:
        out = []
        if self._vpn.get("state") in ("stale", "no-handshake"):
            out.append(alarms.VPN_HANDSHAKE_STALE)
        if self._wan.get("kind") == "unexpected":
            out.append(alarms.WAN_UNEXPECTED_INTERFACE)
        return out

    async def run(self, interval_s: float = 30.0) -> None:
        previous: list[str] = []
        while True:
            await asyncio.to_thread(self.refresh)
            alarms = self.alarms()
            if alarms != previous:
                log.warning("link.alarms_changed", alarms=alarms, previous=previous)
                previous = alarms
            await asyncio.sleep(interval_s)
