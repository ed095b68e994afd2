"""The MQTT uplink against a real mosquitto with mutual TLS: acks, refusals, failures."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.errors import UploadError
from gateway.uplink.mqtt import ConnectionLostError, MqttUplink, PublishRefusedError, UplinkSettings
from gateway.uplink.retry import FailureKind, classify
from rig.pki import create_rig_pki
from tests.integration.rig import Rig, rig_fixture

pytestmark = pytest.mark.integration


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    yield from rig_fixture(tmp_path)


def settings(rig: Rig, **changes: object) -> UplinkSettings:
    gw = rig.pki.gateway(rig.gateway_id)
    base = UplinkSettings(
        host=rig.broker.host,
        port=rig.broker.port,
        ca_file=rig.pki.ca_cert,
        cert_file=gw.client_cert,
        key_file=gw.client_key,
        client_id=rig.gateway_id,
        keepalive_s=5,
        connect_timeout_s=5,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


async def test_publish_returns_after_puback(rig: Rig) -> None:
    rig.start_provider()
    up = MqttUplink(settings(rig))
    await up.connect()
    assert up.is_connected
    await up.publish(f"homecare/v1/gw/{rig.gateway_id}/records", b"HCB1-not-a-real-batch")
    await up.close()
    assert not up.is_connected


async def test_acl_denial_is_a_refusal_not_a_success(rig: Rig) -> None:
    rig.start_provider()
    up = MqttUplink(settings(rig))
    await up.connect()
    with pytest.raises(PublishRefusedError) as err:
        await up.publish("homecare/v1/gw/someone-else/records", b"x")
    assert err.value.code == 0x87
    assert classify(err.value).kind is FailureKind.REFUSED
    await up.close()


async def test_nobody_listening_is_a_transient_upload_error(rig: Rig) -> None:
    rig.broker.start()
    rig.broker.stop()
    up = MqttUplink(settings(rig))
    with pytest.raises(UploadError) as err:
        await up.connect()
    assert classify(err.value).kind is FailureKind.TRANSIENT


async def test_broker_from_another_ca_is_refused_and_classified(rig: Rig, tmp_path: Path) -> None:
    rig.start_provider()
    other = create_rig_pki(tmp_path / "other", gateway_ids=[rig.gateway_id])
    up = MqttUplink(settings(rig, ca_file=other.ca_cert))
    with pytest.raises(UploadError) as err:
        await up.connect()
    assert isinstance(err.value.__cause__, ssl.SSLCertVerificationError)
    assert classify(err.value).kind is FailureKind.REFUSED


async def test_broker_stop_fails_pending_publish_with_connection_lost(rig: Rig) -> None:
    rig.start_provider()
    up = MqttUplink(settings(rig))
    await up.connect()
    rig.broker.stop()
    await asyncio.wait_for(up.lost.wait(), 10)  # noticed without anything being sent
    with pytest.raises(ConnectionLostError):
        await up.publish(f"homecare/v1/gw/{rig.gateway_id}/records", b"x")
    await up.close()


async def test_silent_server_times_out_connect(rig: Rig) -> None:
    """A TCP listener that never answers TLS must not hang the uplink."""
    rig.broker.start()
    rig.broker.stop()
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        up = MqttUplink(settings(rig, port=srv.getsockname()[1], connect_timeout_s=1.0))
        with pytest.raises(UploadError):
            await up.connect()


def test_classifier_on_plain_network_errors() -> None:
    assert classify(ConnectionRefusedError()).kind is FailureKind.TRANSIENT
    assert classify(TimeoutError()).kind is FailureKind.TRANSIENT
    assert classify(FileNotFoundError("client.key")).kind is FailureKind.CONFIG
