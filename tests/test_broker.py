"""The rig's real mosquitto: mTLS, the per-gateway ACL, restart on the same port, crash detection.

Every wait is bounded and everything listens on loopback only.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from provider import broker as broker_module
from provider.broker import BrokerError, MosquittoBroker, find_mosquitto
from rig.pki import RigPki, create_rig_pki

pytestmark = pytest.mark.integration

TIMEOUT_S = 5.0
LOOPBACK = "127.0.0.1"
RECORDS = "homecare/v1/gw/{}/records"
NOT_AUTHORIZED = 0x87  # MQTT 5.0 section 3.4.2.1, PUBACK reason code


class Probe:
    """A paho 2.x MQTT 5 client driven from a test; its callbacks feed queues read with timeouts."""

    def __init__(
        self, pki: RigPki, client_id: str, cert: Path | None, key: Path | None, subscribe: str = ""
    ) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        self.client.tls_set(
            ca_certs=str(pki.ca_cert),
            certfile=str(cert) if cert else None,
            keyfile=str(key) if key else None,
        )
        # After a broker restart paho's loop thread reconnects on its own after 1-2 s.
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self._subscribe = subscribe
        self.connacks: queue.Queue[ReasonCode] = queue.Queue()
        self.disconnects: queue.Queue[ReasonCode] = queue.Queue()
        self.subacks: queue.Queue[list[ReasonCode]] = queue.Queue()
        self.pubacks: queue.Queue[tuple[int, ReasonCode]] = queue.Queue()
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        if self._subscribe and not rc.is_failure:
            # Subscribed on every connect: a clean-start session is forgotten at disconnect.
            client.subscribe(self._subscribe, qos=1)
        self.connacks.put(rc)

    def _on_disconnect(
        self, _c: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Properties | None
    ) -> None:
        self.disconnects.put(rc)

    def _on_subscribe(
        self, _c: mqtt.Client, _u: Any, _mid: int, rcs: list[ReasonCode], _p: Any
    ) -> None:
        self.subacks.put(rcs)

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, rc: ReasonCode, _p: Any) -> None:
        self.pubacks.put((mid, rc))

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        self.messages.put(message)

    def connect(self, port: int) -> None:
        self.client.connect(LOOPBACK, port, keepalive=10)
        self.client.loop_start()
        assert self.connacks.get(timeout=TIMEOUT_S).value == 0
        if self._subscribe:
            assert [rc.value for rc in self.subacks.get(timeout=TIMEOUT_S)] == [1]  # granted QoS 1

    def publish(self, topic: str, payload: bytes) -> ReasonCode:
        """Publish at QoS 1 and return the reason code of the broker's PUBACK."""
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout=TIMEOUT_S)
        mid, rc = self.pubacks.get(timeout=TIMEOUT_S)
        assert mid == info.mid
        return rc

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


ProbeFactory = Callable[..., Probe]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> RigPki:
    return create_rig_pki(tmp_path_factory.mktemp("pki"), gateway_ids=["gw-alpha", "gw-beta"])


@pytest.fixture
def probes(pki: RigPki) -> Iterator[ProbeFactory]:
    made: list[Probe] = []

    def make(name: str, *, subscribe: str = "") -> Probe:
        if name == "provider":
            probe = Probe(pki, name, pki.provider_cert, pki.provider_key, subscribe)
        else:
            files = pki.gateway(name)
            probe = Probe(pki, name, files.client_cert, files.client_key, subscribe)
        made.append(probe)
        return probe

    yield make
    for probe in made:
        probe.close()


@pytest.fixture
def start_broker(pki: RigPki, tmp_path: Path) -> Iterator[Callable[..., MosquittoBroker]]:
    try:
        find_mosquitto()
    except BrokerError as exc:
        pytest.skip(exc.message)
    started: list[MosquittoBroker] = []

    def start(*, acl: bool = True, port: int = 0) -> MosquittoBroker:
        broker = MosquittoBroker(pki, tmp_path / f"broker{len(started)}", acl=acl, port=port)
        started.append(broker)
        broker.start()
        return broker

    yield start
    for broker in started:
        broker.stop()


def _provider_and_alpha(broker: MosquittoBroker, probes: ProbeFactory) -> tuple[Probe, Probe]:
    provider = probes("provider", subscribe="homecare/v1/gw/#")
    provider.connect(broker.port)
    alpha = probes("gw-alpha")
    alpha.connect(broker.port)
    return provider, alpha


def test_gateway_publishes_qos1_on_its_topic_and_the_provider_receives_it(
    start_broker: Callable[..., MosquittoBroker], probes: ProbeFactory
) -> None:
    broker = start_broker()
    provider, alpha = _provider_and_alpha(broker, probes)
    assert alpha.publish(RECORDS.format("gw-alpha"), b"sealed-record").value == 0
    message = provider.messages.get(timeout=TIMEOUT_S)
    assert (message.topic, message.payload, message.qos) == (
        "homecare/v1/gw/gw-alpha/records",
        b"sealed-record",
        1,
    )


def test_client_without_certificate_is_refused_in_the_tls_handshake(
    start_broker: Callable[..., MosquittoBroker], pki: RigPki, probes: ProbeFactory
) -> None:
    broker = start_broker()
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    # TLS 1.3: the client's side of the handshake completes, the broker's certificate_required
    # alert (RFC 8446 section 4.4.2.4) arrives with the first read.
    with (
        socket.create_connection((LOOPBACK, broker.port), timeout=TIMEOUT_S) as raw,
        context.wrap_socket(raw, server_hostname=LOOPBACK) as tls,
        pytest.raises(ssl.SSLError) as caught,
    ):
        tls.recv(1)
    assert caught.value.reason == "TLSV13_ALERT_CERTIFICATE_REQUIRED"
    # TLS 1.2: the handshake itself fails.
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with (
        socket.create_connection((LOOPBACK, broker.port), timeout=TIMEOUT_S) as raw,
        pytest.raises(ssl.SSLError) as caught,
    ):
        context.wrap_socket(raw, server_hostname=LOOPBACK)
    assert caught.value.reason == "SSLV3_ALERT_HANDSHAKE_FAILURE"
    # paho sees the connection drop before any CONNACK.
    anonymous = Probe(pki, "anonymous", None, None)
    anonymous.client.connect(LOOPBACK, broker.port)
    anonymous.client.loop_start()
    try:
        assert anonymous.disconnects.get(timeout=TIMEOUT_S).is_failure
        assert anonymous.connacks.empty()
    finally:
        anonymous.close()
    assert "peer did not return a certificate" in broker.log_path.read_text()


def test_certificate_from_another_rig_ca_is_refused(
    start_broker: Callable[..., MosquittoBroker], pki: RigPki, tmp_path: Path
) -> None:
    broker = start_broker()
    stranger = create_rig_pki(tmp_path / "stranger", gateway_ids=["gw-alpha"]).gateway("gw-alpha")
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    context.load_cert_chain(str(stranger.client_cert), str(stranger.client_key))
    with (
        socket.create_connection((LOOPBACK, broker.port), timeout=TIMEOUT_S) as raw,
        context.wrap_socket(raw, server_hostname=LOOPBACK) as tls,
        pytest.raises(ssl.SSLError) as caught,
    ):
        tls.recv(1)
    assert caught.value.reason == "TLSV1_ALERT_UNKNOWN_CA"


def test_acl_refuses_a_publish_to_another_gateways_topic_with_not_authorized(
    start_broker: Callable[..., MosquittoBroker], probes: ProbeFactory
) -> None:
    broker = start_broker()
    provider, alpha = _provider_and_alpha(broker, probes)
    reason = alpha.publish(RECORDS.format("gw-beta"), b"forged")
    assert (reason.value, reason.getName()) == (NOT_AUTHORIZED, "Not authorized")
    # Same client, same QoS: mosquitto delivers in order, so once this marker has arrived the
    # forged message would have arrived before it.
    assert alpha.publish(RECORDS.format("gw-alpha"), b"marker").value == 0
    assert provider.messages.get(timeout=TIMEOUT_S).payload == b"marker"
    assert provider.messages.empty()


def test_acl_lets_a_gateway_subscribe_but_never_delivers_another_gateways_records(
    start_broker: Callable[..., MosquittoBroker], probes: ProbeFactory
) -> None:
    broker = start_broker()
    provider = probes("provider", subscribe="homecare/v1/gw/#")
    provider.connect(broker.port)
    # mosquitto 2.0.11 grants the SUBACK (no read rule is checked at subscribe time for a
    # plain acl_file); the read check happens per message, at delivery.
    snoop = probes("gw-alpha", subscribe=RECORDS.format("gw-beta"))
    snoop.connect(broker.port)
    beta = probes("gw-beta")
    beta.connect(broker.port)
    assert beta.publish(RECORDS.format("gw-beta"), b"beta-record").value == 0
    assert provider.messages.get(timeout=TIMEOUT_S).payload == b"beta-record"
    with pytest.raises(queue.Empty):
        snoop.messages.get(timeout=0.5)


def test_without_acl_any_authenticated_client_may_publish_anywhere(
    start_broker: Callable[..., MosquittoBroker], probes: ProbeFactory
) -> None:
    broker = start_broker(acl=False)
    assert not broker.acl_path.exists()
    provider, alpha = _provider_and_alpha(broker, probes)
    assert alpha.publish(RECORDS.format("gw-beta"), b"cross").value == 0
    assert provider.messages.get(timeout=TIMEOUT_S).topic == RECORDS.format("gw-beta")


def test_restart_keeps_the_port_and_connected_clients_reconnect(
    start_broker: Callable[..., MosquittoBroker], probes: ProbeFactory
) -> None:
    broker = start_broker()
    port = broker.port
    provider, alpha = _provider_and_alpha(broker, probes)
    broker.restart()
    assert broker.port == port
    assert broker.is_running
    for probe in (provider, alpha):
        assert probe.disconnects.get(timeout=TIMEOUT_S).is_failure
        # paho's loop thread reconnects on its own; bounded by the 1-2 s reconnect delay.
        assert probe.connacks.get(timeout=TIMEOUT_S).value == 0
    assert [rc.value for rc in provider.subacks.get(timeout=TIMEOUT_S)] == [1]
    assert alpha.publish(RECORDS.format("gw-alpha"), b"after-restart").value == 0
    assert provider.messages.get(timeout=TIMEOUT_S).payload == b"after-restart"


def test_a_broker_that_dies_on_its_own_is_seen_by_poll_and_can_start_again(
    start_broker: Callable[..., MosquittoBroker], probes: ProbeFactory
) -> None:
    broker = start_broker()
    port = broker.port
    assert broker.pid is not None
    assert broker.poll() is None
    os.kill(broker.pid, signal.SIGKILL)
    deadline = time.monotonic() + TIMEOUT_S
    while broker.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert broker.poll() == -signal.SIGKILL
    assert not broker.is_running
    broker.start()
    assert broker.port == port
    probes("gw-alpha").connect(port)


def test_start_on_a_port_someone_else_holds_fails_fast_and_says_so(
    start_broker: Callable[..., MosquittoBroker],
) -> None:
    with socket.socket() as squatter:
        squatter.bind((LOOPBACK, 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        with pytest.raises(BrokerError, match=f"{LOOPBACK}:{taken} is already in use"):
            start_broker(port=taken)


def test_a_broker_that_cannot_start_reports_the_tail_of_its_log(tmp_path: Path) -> None:
    pki = create_rig_pki(tmp_path / "pki", gateway_ids=["gw-alpha"])
    pki.broker_key.write_text("not a key\n")
    broker = MosquittoBroker(pki, tmp_path / "broker")
    with pytest.raises(BrokerError, match="exited with status") as caught:
        broker.start()
    assert "mosquitto.log" in caught.value.message
    assert "Unable to load server key file" in caught.value.message
    assert not broker.is_running


def test_config_and_acl_hold_what_the_rig_relies_on(
    start_broker: Callable[..., MosquittoBroker],
) -> None:
    broker = start_broker()
    conf = broker.conf_path.read_text().splitlines()
    for line in (
        f"listener {broker.port} {LOOPBACK}",
        "require_certificate true",
        "use_identity_as_username true",
        "allow_anonymous false",
        "tls_version tlsv1.2",
        "persistence true",
        f"acl_file {broker.acl_path}",
    ):
        assert line in conf
    acl = broker.acl_path.read_text().splitlines()
    assert "pattern write homecare/v1/gw/%u/#" in acl
    assert acl.index("user provider-verifier") < acl.index("topic read homecare/v1/gw/#")


def test_port_is_unknown_before_the_first_start(pki: RigPki, tmp_path: Path) -> None:
    broker = MosquittoBroker(pki, tmp_path)
    assert not broker.is_running
    with pytest.raises(BrokerError, match="not been started"):
        _ = broker.port


def test_missing_mosquitto_binary_tells_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(broker_module, "_FALLBACK_LOCATIONS", ())
    with pytest.raises(BrokerError, match="apt-get install mosquitto"):
        find_mosquitto()
