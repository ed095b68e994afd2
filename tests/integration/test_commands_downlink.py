"""Signed commands from the command centre, end to end (issue 20): the real mosquitto broker with
its ACL, the real gatewayd, and the provider's verifier reading the sealed audit records.

Every command that is refused must change nothing and leave a sealed ``refused`` record with
its typed reason; every command that runs leaves ``accepted`` then ``done``. The provider signs
with provider/commands.py, the same code ``homecare-provider command send`` runs.
"""

from __future__ import annotations

import io
import json
import signal
import sqlite3
import tarfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.commands import envelope
from gateway.commands.ledger import LEDGER_FILE
from gateway.commands.runner import CRASH_ENV
from gateway.daemon.overrides import COMMAND_KEY_FILE
from provider.commands import (
    BrokerSettings,
    CommandDeskError,
    commands_topic,
    make_command,
    public_key_text,
    publish,
    support_archive,
)
from rig.pki import create_rig_pki
from tests.integration.rig import Rig, wait_for

OTHER = "gw-it-other"
THERMO = ("thermometer", "AA:BB:CC:00:00:51", 0.5, 100000)
# Generous: the machine is shared and small.
OUTCOME_S = 60.0


class Centre:
    """The command centre for one rig: its key, its counter, its broker connection."""

    def __init__(self, rig: Rig, key: ed25519.Ed25519PrivateKey) -> None:
        self.rig = rig
        self.key = key
        self.counter = 0
        self.broker = BrokerSettings(
            rig.broker.host, rig.broker.port, rig.pki.ca_cert, rig.pki.provider_cert,
            rig.pki.provider_key,
        )  # fmt: skip

    def signed(self, name: str, args: dict[str, Any] | None = None, **kw: Any) -> bytes:
        self.counter += 1
        key = kw.pop("key", self.key)
        command = make_command(
            kw.pop("gateway_id", self.rig.gateway_id), name, args or {}, self.counter, **kw
        )
        return envelope.sign(command, key)

    def send_raw(self, raw: bytes) -> str:
        publish(self.broker, commands_topic(self.rig.gateway_id), raw)
        return envelope.digest(raw)

    def outcome(self, sha: str, timeout_s: float = OUTCOME_S) -> dict[str, Any]:
        """The final sealed record (done / refused / failed) of the envelope with this digest."""

        def final() -> dict[str, Any] | None:
            for e in self.rig.received.events:
                if (
                    e.get("event") == "command"
                    and e.get("envelope_sha256") == sha
                    and e.get("outcome") in ("done", "refused", "failed")
                ):
                    return e
            return None

        wait_for(lambda: final() is not None, timeout_s, f"the outcome of {sha[:12]}")
        found = final()
        assert found is not None
        return found

    def run(self, raw: bytes) -> dict[str, Any]:
        return self.outcome(self.send_raw(raw))

    def records_of(self, sha: str) -> list[str]:
        return [
            str(e["outcome"])
            for e in self.rig.received.events
            if e.get("event") == "command" and e.get("envelope_sha256") == sha
        ]


def _config(rig: Rig, key_text: str | None, devices: list[Any]) -> Path:
    """The rig's configuration; the command key as a router without enrolment pins it."""
    if key_text is not None:
        rig.state_dir.mkdir(parents=True, exist_ok=True)
        (rig.state_dir / COMMAND_KEY_FILE).write_text(key_text + "\n")
    return rig.write_config(devices)


def _ledger_counter(rig: Rig) -> int:
    conn = sqlite3.connect(f"file:{rig.state_dir / LEDGER_FILE}?mode=ro", uri=True, timeout=5)
    try:
        return int(conn.execute("SELECT last FROM counter").fetchone()[0])
    finally:
        conn.close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    # A second router's certificate, for the ACL test.
    r.pki = create_rig_pki(tmp_path / "pki", gateway_ids=[r.gateway_id, OTHER])
    try:
        r.start_provider()
        yield r
    finally:
        r.close()


@pytest.fixture
def centre(rig: Rig) -> Iterator[Centre]:
    key = ed25519.Ed25519PrivateKey.generate()
    c = Centre(rig, key)
    rig.start_daemon(_config(rig, public_key_text(key), [THERMO]))
    wait_for(lambda: len(rig.received.readings) >= 2, 60, "readings from the thermometer")
    yield c
    assert rig.stop_daemon() == 0, rig.log_text()[-3000:]


def test_every_refusal_is_sealed_with_its_reason_and_changes_nothing(
    rig: Rig, centre: Centre
) -> None:
    """Bad signature, another router, expired, not yet valid, too long-lived, unknown command,
    malformed, bad arguments, a setting outside the allowed set: each is a sealed ``refused``
    record naming the reason, no ``accepted`` record, and neither the counter nor the settings
    move. Then a replay of an accepted command is refused ``replayed``."""
    now = datetime.now(UTC)
    intruder = ed25519.Ed25519PrivateKey.generate()
    cases = {
        "bad-signature": centre.signed("health.report", key=intruder),
        "wrong-gateway": centre.signed("health.report", gateway_id=OTHER),
        "expired": centre.signed(
            "health.report", now=now - timedelta(hours=2), ttl=timedelta(minutes=30)
        ),
        "not-yet-valid": centre.signed("health.report", now=now + timedelta(hours=1)),
        "unknown-command": centre.signed("reboot.now"),
        "malformed": b'{"format": 1, "payload": "not base64!", "signature": ""}',
        "bad-args": centre.signed("config.set", {"key": "health_interval_s", "value": 0}),
        "not-allowed": centre.signed("config.set", {"key": "broker_host", "value": "evil"}),
    }
    # Too long-lived: signed by hand (the provider's tool refuses to make one).
    centre.counter += 1
    long_lived = envelope.Command(
        rig.gateway_id, "c-long", centre.counter, now, now + timedelta(days=3), "rescan", {}
    )
    cases["too-long-lived"] = envelope.sign(long_lived, centre.key)
    shas = {reason: centre.send_raw(raw) for reason, raw in cases.items()}
    for reason, sha in shas.items():
        got = centre.outcome(sha)
        assert (got["outcome"], got["reason"]) == ("refused", reason), got
        assert centre.records_of(sha) == ["refused"], reason  # never accepted
    assert _ledger_counter(rig) == 0  # no counter was used
    assert not (rig.state_dir / "config-overrides.json").exists()

    accepted = centre.signed("health.report")
    first = centre.run(accepted)
    assert first["outcome"] == "done"
    assert _ledger_counter(rig) == centre.counter
    replay = centre.send_raw(accepted)
    # The same envelope again: its digest is the same, so wait for a second final record.
    wait_for(lambda: centre.records_of(replay).count("refused") == 1, OUTCOME_S, "the replay")
    refused = [
        e
        for e in rig.received.events
        if e.get("envelope_sha256") == replay and e.get("outcome") == "refused"
    ]
    assert refused[0]["reason"] == "replayed"
    assert centre.records_of(replay) == ["accepted", "done", "refused"]


def test_each_command_runs_and_its_outcome_is_sealed(rig: Rig, centre: Centre) -> None:
    """health.report, config.set (kept across a restart), rescan and support.bundle run: an
    ``accepted`` then a ``done`` record each, with a result that says what was done."""
    health_before = rig.received.health
    done = centre.run(centre.signed("health.report"))
    assert done["outcome"] == "done"
    assert done["result"]["health_seq"] > 0
    wait_for(lambda: rig.received.health > health_before, 30, "the health record")

    done = centre.run(centre.signed("config.set", {"key": "health_interval_s", "value": 1}))
    assert done["result"] == {"key": "health_interval_s", "applies": "now"}
    done = centre.run(centre.signed("config.set", {"key": "log_level", "value": "info"}))
    assert done["result"] == {"key": "log_level", "applies": "next-start"}
    assert json.loads((rig.state_dir / "config-overrides.json").read_text()) == {
        "health_interval_s": 1,
        "log_level": "info",
    }
    # The interval applies now: health records every second (the default is a minute).
    count = rig.received.health
    wait_for(lambda: rig.received.health >= count + 3, 30, "health records each second")

    readings = len(rig.received.readings)
    done = centre.run(centre.signed("rescan"))
    assert (done["outcome"], done["result"]) == ("done", {"drivers": 1})
    wait_for(lambda: len(rig.received.readings) > readings + 2, 60, "readings after the rescan")

    done = centre.run(centre.signed("support.bundle"))
    assert done["outcome"] == "done", done
    sb_seq = done["result"]["seq"]
    wait_for(
        lambda: any(e.get("event") == "support-bundle" for e in rig.received.events),
        60,
        "the support bundle record",
    )
    body = next(e for e in rig.received.events if e.get("event") == "support-bundle")
    archive = support_archive(body)
    assert len(archive) == done["result"]["bytes"]
    assert sb_seq > 0
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        names = set(tar.getnames())
        text = b"".join(
            f.read() for m in tar.getmembers() if (f := tar.extractfile(m)) is not None
        )
    assert {"support/status.json", "support/config.json", "support/versions.json"} <= names
    assert b"PRIVATE KEY" not in text
    # No reading's value: the simulated thermometer's readings are in the verifier's hands only.
    values = {str(m.value) for _, m in rig.received.readings if m.value is not None}
    assert values
    assert b"valueQuantity" not in text  # no FHIR Observation content at all
    assert not any(f'"value": {v}'.encode() in text or f'"{v}"'.encode() in text for v in values)

    # The setting survives a restart (applied from the state directory at start-up).
    assert rig.stop_daemon() == 0
    count = rig.received.health
    rig.start_daemon(rig.base / "gateway.toml")
    wait_for(lambda: rig.received.health >= count + 4, 60, "health each second after restart")


def test_a_router_cannot_publish_commands_to_itself_or_another(rig: Rig, centre: Centre) -> None:
    """The broker's ACL: only the provider writes homecare/v1/cmd/#; a router's certificate is
    refused for its own command topic and another router's (PUBACK "not authorized")."""
    signed = centre.signed("health.report")
    for gateway, target in ((rig.gateway_id, rig.gateway_id), (OTHER, rig.gateway_id),
                            (rig.gateway_id, OTHER)):  # fmt: skip
        gw = rig.pki.gateway(gateway)
        as_router = BrokerSettings(
            rig.broker.host, rig.broker.port, rig.pki.ca_cert, gw.client_cert, gw.client_key,
            client_id=f"{gateway}-intruder",
        )  # fmt: skip
        with pytest.raises(CommandDeskError, match="refused"):
            publish(as_router, commands_topic(target), signed)
    # Nothing reached the daemon: the same envelope, from the provider, is still fresh.
    assert centre.run(signed)["outcome"] == "done"


def test_a_router_without_a_command_key_refuses_every_command(rig: Rig) -> None:
    """No key pinned: even a well-signed command is refused ``no-command-key`` (and sealed)."""
    c = Centre(rig, ed25519.Ed25519PrivateKey.generate())
    rig.start_daemon(_config(rig, None, [THERMO]))
    wait_for(lambda: len(rig.received.readings) >= 1, 60, "readings")
    got = c.run(c.signed("health.report"))
    assert (got["outcome"], got["reason"]) == ("refused", "no-command-key")
    assert rig.stop_daemon() == 0


def test_a_command_cut_short_by_a_crash_is_reported_interrupted(rig: Rig) -> None:
    """gatewayd killed (SIGKILL) right after a command was accepted - its counter durable, its
    "accepted" record sealed, its outcome never: the next start seals ``interrupted`` for it,
    and its counter stays used (the same envelope again is a replay, it never runs twice)."""
    key = ed25519.Ed25519PrivateKey.generate()
    c = Centre(rig, key)
    config = _config(rig, public_key_text(key), [THERMO])
    rig.start_daemon(config, env_extra={CRASH_ENV: "rescan"})
    wait_for(lambda: len(rig.received.readings) >= 1, 60, "readings")
    raw = c.signed("rescan")
    sha = c.send_raw(raw)
    assert rig.daemon is not None
    assert rig.daemon.wait(60) == -signal.SIGKILL
    assert _ledger_counter(rig) == c.counter  # durable before anything ran
    rig.start_daemon(config)
    wait_for(
        lambda: any(e.get("outcome") == "interrupted" for e in rig.received.events),
        60,
        "the interrupted record",
    )
    rec = next(e for e in rig.received.events if e.get("outcome") == "interrupted")
    assert (rec["command"], rec["counter"]) == ("rescan", c.counter)
    assert "accepted" in c.records_of(sha)  # sealed before the crash, delivered after
    again = c.send_raw(raw)
    wait_for(lambda: c.records_of(again).count("refused") == 1, OUTCOME_S, "the replay")
    assert [e["reason"] for e in rig.received.events
            if e.get("envelope_sha256") == sha and e.get("outcome") == "refused"] == ["replayed"]
    assert rig.stop_daemon() == 0


def test_an_unusable_command_ledger_costs_commands_not_readings(rig: Rig) -> None:
    """A damaged commands.db: the daemon reads and delivers as ever, takes no commands (no
    replay could be refused) and says so in its health report's alarms."""
    rig.state_dir.mkdir(parents=True, exist_ok=True)
    (rig.state_dir / LEDGER_FILE).write_bytes(b"this is not a database" * 100)
    rig.start_daemon(_config(rig, public_key_text(ed25519.Ed25519PrivateKey.generate()), [THERMO]))
    wait_for(lambda: len(rig.received.readings) >= 3, 60, "readings")
    wait_for(lambda: bool(rig.received.health_reports), 60, "a health report")
    assert "command-ledger-unusable" in rig.received.health_reports[0]["alarms"]
    assert rig.stop_daemon() == 0
