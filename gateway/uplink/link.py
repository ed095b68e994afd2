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


IP_ERROR_MAX_CHARS = 200  # ip's own message, as much as a log line or a status line needs
IP_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class RouteInfo:
    address: str
    interface: str | None
    # Why there is no interface, in ip's own words ("RTNETLINK answers: Network is unreachable",
    # "Cannot open netlink socket: ..."): a missing route and a check that could not run are
    # different problems for whoever reads the message.
    error: str | None = None


def route_to(host: str, port: int) -> RouteInfo:
    """The interface the kernel would use to reach ``host`` (blocking: call in a thread)."""
    try:
        address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4][0]
    except OSError as exc:
        raise UploadError(f"cannot resolve broker {host}: {exc}") from exc
    ip = shutil.which("ip")
    if ip is None:
        raise OutsideVpnError("cannot check the route to the broker: iproute2 (ip) is missing")
    argv = [ip, "-j", "route", "get", str(address)]
    try:
        proc = subprocess.run(  # noqa: S603 - fixed tool, an address we resolved
            argv, capture_output=True, text=True, timeout=IP_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        return RouteInfo(str(address), None, f"ip route get gave no answer in {IP_TIMEOUT_S:.0f} s")
    except OSError as exc:
        return RouteInfo(str(address), None, f"cannot run ip: {exc.strerror}")
    if proc.returncode != 0:
        return RouteInfo(str(address), None, _ip_error(proc))
    try:
        routes = json.loads(proc.stdout)
        interface = routes[0].get("dev") if routes else None
    except (ValueError, IndexError, AttributeError):
        return RouteInfo(str(address), None, "ip route get printed no JSON route")
    if interface is None:
        return RouteInfo(str(address), None, "ip route get named no interface")
    return RouteInfo(str(address), str(interface))


def _ip_error(proc: subprocess.CompletedProcess[str]) -> str:
    """ip's first line of complaint, printable and bounded; its exit status when it said nothing
    (it exits 1 silently when, for one, capset(2) is denied to it)."""
    lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
    if not lines:
        return f"ip route get failed with exit status {proc.returncode} and no message"
    text = "".join(ch if ch.isprintable() else "?" for ch in lines[0])
    return text[:IP_ERROR_MAX_CHARS]


def check_route(host: str, port: int, vpn_interface: str | None) -> RouteInfo | None:
    """Raise OutsideVpnError unless the broker is reached through ``vpn_interface``."""
    if not vpn_interface:
        return None
    route = route_to(host, port)
    if route.interface is None:
        raise OutsideVpnError(
            f"no route to broker {route.address} through the VPN interface {vpn_interface} "
            f"could be found ({route.error}): not connecting",
            ip_error=route.error,
        )
    if route.interface != vpn_interface:
        raise OutsideVpnError(
            f"route to broker {route.address} goes via {route.interface}, "
            f"not the VPN interface {vpn_interface}: not connecting"
        )
    return route
