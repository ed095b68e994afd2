"""``homecare-provider command`` without a broker: the key, the durable counter, the signed
envelope the router accepts, and the outcomes and support bundles kept from verified records."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.commands import envelope
from provider import commands as pc


def test_keygen_sign_and_counter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """keygen prints the key a bundle pins; each sign takes the next counter, kept on disk,
    and the envelope verifies with the printed key."""
    desk = tmp_path / "desk"
    assert pc.main(["keygen", "--desk", str(desk)]) == 0
    key_text = capsys.readouterr().out.strip()
    assert (desk / pc.KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert pc.main(["keygen", "--desk", str(desk)]) == 0  # the same key again, never a new one
    assert capsys.readouterr().out.strip() == key_text
    for expected in (1, 2):
        assert pc.main(["sign", "--desk", str(desk), "--gateway", "gw-1", "config.set",
                        "--arg", "key=health_interval_s", "--arg", "value=30"]) == 0  # fmt: skip
        raw = capsys.readouterr().out.strip().encode()
        c = envelope.verify(raw, envelope.public_key_from_text(key_text), "gw-1", datetime.now(UTC))
        assert (c.counter, c.name, c.args) == (
            expected, "config.set", {"key": "health_interval_s", "value": 30},
        )  # fmt: skip
    assert pc.CounterBook(desk / pc.COUNTERS_FILE).last("gw-1") == 2


def test_send_without_a_broker_fails_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    desk = tmp_path / "desk"
    pc.main(["keygen", "--desk", str(desk)])
    assert pc.main(["send", "--desk", str(desk), "--gateway", "gw-1", "rescan"]) == 1
    assert "no broker" in capsys.readouterr().err


def test_outcomes_and_support_bundles_are_kept_from_verified_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    centre = pc.CommandCentre(tmp_path)
    centre.note_event({"event": "command", "gateway_id": "gw-1", "counter": 3, "command": "rescan",
                       "outcome": "refused", "reason": "replayed", "time": "2026-12-07T10:00:00",
                       "result": None})  # fmt: skip
    archive = b"not really a tarball"
    centre.note_event({"event": "support-bundle", "gateway_id": "gw-1", "command_id": "c-9",
                       "archive": base64.b64encode(archive).decode(),
                       "sha256": hashlib.sha256(archive).hexdigest()})  # fmt: skip
    assert pc.main(["outcomes", "--desk", str(tmp_path), "--gateway", "gw-1"]) == 0
    assert "#3  rescan  refused  replayed" in capsys.readouterr().out
    out = tmp_path / "sb.tar.gz"
    assert pc.main(["support-bundle", "--desk", str(tmp_path), "--out", str(out)]) == 0
    assert out.read_bytes() == archive
    with pytest.raises(pc.CommandDeskError, match="digest"):
        pc.support_archive({"archive": base64.b64encode(b"x").decode(), "sha256": "0" * 64})
    rows = json.loads(json.dumps(centre.outcomes("gw-1")))
    assert [r["outcome"] for r in rows] == ["refused"]


def test_the_bundle_pins_the_command_key_and_refuses_a_bad_one() -> None:
    """The enrolment bundle carries ``command_key`` (absent when none: older routers read the
    payload unchanged); anything but base64 of 32 bytes makes the bundle unusable."""
    from provisioning.bundle import EnrolmentBundle  # noqa: PLC0415 - only here

    key_text = pc.public_key_text(pc.keygen_in_memory())
    now = datetime.now(UTC)
    b = EnrolmentBundle("gw-1", "ep-1", now, now, "h", 8883, "ca", "hpke", (),
                        command_key=key_text)  # fmt: skip
    assert EnrolmentBundle.from_payload(b.payload_json()) == b
    plain = EnrolmentBundle("gw-1", "ep-1", now, now, "h", 8883, "ca", "hpke", ())
    assert "command_key" not in plain.payload_json()
    with pytest.raises(ValueError, match="command_key"):
        EnrolmentBundle.from_payload(plain.payload_json() | {"command_key": "AAAA"})
