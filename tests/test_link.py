"""The VPN route check: connect only when the kernel routes the broker through the VPN."""

from __future__ import annotations

import shutil

import pytest

from gateway.uplink.link import OutsideVpnError, check_route, route_to
from gateway.uplink.retry import FailureKind, classify

pytestmark = pytest.mark.skipif(shutil.which("ip") is None, reason="iproute2 not installed")


def test_loopback_is_routed_through_lo() -> None:
    assert route_to("127.0.0.1", 8883).interface == "lo"
    assert check_route("127.0.0.1", 8883, "lo") is not None


def test_a_route_around_the_vpn_is_refused_and_classified() -> None:
    with pytest.raises(OutsideVpnError, match="not the VPN interface wg-hcg0") as err:
        check_route("127.0.0.1", 8883, "wg-hcg0")
    assert classify(err.value).kind is FailureKind.OUTSIDE_VPN


def test_no_vpn_configured_means_no_check() -> None:
    assert check_route("127.0.0.1", 8883, None) is None
