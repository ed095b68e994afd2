"""The VPN route check: connect only when the kernel routes the broker through the VPN."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

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


def _fake_ip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> None:
    """An `ip` on PATH that behaves as the sandbox made the real one behave."""
    ip = tmp_path / "ip"
    ip.write_text("#!/bin/sh\n" + script + "\n")
    ip.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")


def test_ip_s_own_error_is_reported_not_turned_into_no_interface(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_ip(tmp_path, monkeypatch,
             "echo 'Cannot open netlink socket: Address family not supported by protocol' >&2\n"
             "exit 1")  # fmt: skip
    route = route_to("127.0.0.1", 8883)
    assert route.interface is None
    assert route.error == "Cannot open netlink socket: Address family not supported by protocol"
    with pytest.raises(OutsideVpnError, match="Cannot open netlink socket") as err:
        check_route("127.0.0.1", 8883, "wg0")
    assert "goes via no interface" not in err.value.message


def test_a_silent_ip_failure_names_its_exit_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_ip(tmp_path, monkeypatch, "exit 1")  # as ip does when capset(2) is denied
    route = route_to("127.0.0.1", 8883)
    assert route.error == "ip route get failed with exit status 1 and no message"


def test_a_missing_route_keeps_the_kernel_s_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_ip(tmp_path, monkeypatch, "echo 'RTNETLINK answers: Network is unreachable' >&2; exit 2")
    with pytest.raises(OutsideVpnError, match="Network is unreachable"):
        check_route("127.0.0.1", 8883, "wg0")
