"""Link monitor: WireGuard handshake age, the WAN interface under the tunnel, alarms."""

from __future__ import annotations

import time
from collections.abc import Sequence

import pytest

from gateway.uplink import linkmon
from gateway.uplink.link import RouteInfo
from gateway.uplink.linkmon import LinkMonitor, LinkProbeError, LinkSettings

PEER = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="


def test_parsers_read_wg_output_and_skip_anything_else() -> None:
    assert linkmon.parse_latest_handshakes(f"{PEER}\t1700000000\n{PEER}\t0\ngarbage\n") == [
        1700000000,
        0,
    ]
    text = f"{PEER}\t203.0.113.7:51820\n{PEER}\t[2001:db8::1]:51820\n{PEER}\t(none)\nx\ty:1\n"
    assert linkmon.parse_endpoint_hosts(text) == ["203.0.113.7", "2001:db8::1"]


def fake_wg(handshake: int | None, endpoint: str = "203.0.113.7:51820") -> linkmon.CommandRunner:
    def run(argv: Sequence[str]) -> str:
        assert "dump" not in argv  # dump prints the private key
        if handshake is None:
            raise LinkProbeError("wg show wg0: Operation not permitted")
        if argv[-1] == "latest-handshakes":
            return f"{PEER}\t{handshake}\n"
        return f"{PEER}\t{endpoint}\n"

    return run


@pytest.fixture
def routes(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    table = {"broker.example": "wg0", "203.0.113.7": "wwan0"}

    def route_to(host: str, _port: int) -> RouteInfo:
        return RouteInfo(host, table.get(host, "eth0"))

    monkeypatch.setattr(linkmon, "route_to", route_to)
    return table


SETTINGS = LinkSettings("broker.example", 8883, "wg0", wan_interfaces=("wwan0",))


def test_fresh_handshake_over_the_modem_is_healthy(routes: dict[str, str]) -> None:
    mon = LinkMonitor(SETTINGS, fake_wg(int(time.time()) - 40))
    mon.refresh()
    vpn, wan = mon.vpn_snapshot(), mon.wan_snapshot()
    assert vpn["state"] == "up"
    assert 39 <= vpn["handshake_age_s"] <= 45
    assert vpn["route_via_vpn"] is True
    assert wan == {"interface": "wwan0", "kind": "modem", "carries": "vpn"}
    assert mon.alarms() == []


def test_old_or_missing_handshake_raises_an_alarm(routes: dict[str, str]) -> None:
    mon = LinkMonitor(SETTINGS, fake_wg(int(time.time()) - 600))
    mon.refresh()
    assert mon.vpn_snapshot()["state"] == "stale"
    assert mon.alarms() == ["vpn-handshake-stale"]
    never = LinkMonitor(SETTINGS, fake_wg(0))
    never.refresh()
    assert never.vpn_snapshot()["state"] == "no-handshake"
    assert never.alarms() == ["vpn-handshake-stale"]


def test_tunnel_over_broadband_is_an_alarm_unless_it_is_the_listed_exception(
    routes: dict[str, str],
) -> None:
    routes["203.0.113.7"] = "eth0"
    mon = LinkMonitor(SETTINGS, fake_wg(int(time.time())))
    mon.refresh()
    assert mon.wan_snapshot()["kind"] == "unexpected"
    assert mon.alarms() == ["wan-unexpected-interface"]
    allowed = LinkSettings("broker.example", 8883, "wg0", ("wwan0",), ("eth0",))
    mon = LinkMonitor(allowed, fake_wg(int(time.time())))
    mon.refresh()
    assert mon.wan_snapshot()["kind"] == "broadband-exception"
    assert mon.alarms() == []


def test_without_permission_the_vpn_is_unknown_with_the_reason(routes: dict[str, str]) -> None:
    mon = LinkMonitor(SETTINGS, fake_wg(None))
    mon.refresh()
    vpn = mon.vpn_snapshot()
    assert vpn["state"] == "unknown"
    assert "not permitted" in vpn["error"]
    assert mon.alarms() == []  # unknown is shown, not alarmed: the route check still guards
    assert mon.wan_snapshot()["kind"] == "unknown"  # what carries the tunnel is not known


def test_without_a_vpn_only_the_wan_is_reported(routes: dict[str, str]) -> None:
    mon = LinkMonitor(LinkSettings("broker.example", 8883), fake_wg(1))
    mon.refresh()
    assert mon.vpn_snapshot()["state"] == "unchecked"
    assert mon.wan_snapshot()["kind"] == "unchecked"
