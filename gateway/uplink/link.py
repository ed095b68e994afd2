"""Link policy: uploads leave only through the VPN.

Before every connection attempt the uplink asks the kernel which interface the route to the
broker takes (``ip -j route get``). If a VPN interface is configured and the route does not go
through it - the tunnel is down and a default route through the patient's broadband or the bare
5G link would be used - the gateway does not connect: clinical data never leaves outside the VPN.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from dataclasses import dataclass

from gateway.errors import UploadError


class OutsideVpnError(UploadError):
    """The route to the broker does not go through the configured VPN interface."""

    hint = "check the WireGuard tunnel (wg show) and the routes; nothing is sent meanwhile"


@dataclass(frozen=True, slots=True)
class RouteInfo:
    address: str
    interface: str | None


def route_to(host: str, port: int) -> RouteInfo:
    """The interface the kernel would use to reach ``host`` (blocking: call in a thread)."""
    try:
        address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4][0]
    except OSError as exc:
        raise UploadError(f"cannot resolve broker {host}: {exc}") from exc
    ip = shutil.which("ip")
    if ip is None:
        raise OutsideVpnError("cannot check the route to the broker: iproute2 (ip) is missing")
    proc = subprocess.run(  # noqa: S603 - fixed tool, an address we resolved
        [ip, "-j", "route", "get", str(address)],
        capture_output=True,
        text=True,
        timeout=5,
        check=False,
    )
    if proc.returncode != 0:
        return RouteInfo(str(address), None)  # no route at all: nothing would leave anyway
    try:
        routes = json.loads(proc.stdout)
        interface = routes[0].get("dev") if routes else None
    except (ValueError, IndexError, AttributeError):
        interface = None
    return RouteInfo(str(address), interface)


def check_route(host: str, port: int, vpn_interface: str | None) -> RouteInfo | None:
    """Raise OutsideVpnError unless the broker is reached through ``vpn_interface``."""
    if not vpn_interface:
        return None
    route = route_to(host, port)
    if route.interface != vpn_interface:
        raise OutsideVpnError(
            f"route to broker {route.address} goes via {route.interface or 'no interface'}, "
            f"not the VPN interface {vpn_interface}: not connecting"
        )
    return route
