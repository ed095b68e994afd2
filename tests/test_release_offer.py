"""``homecare-provider release offer`` without a broker: the artifact is published under its
SHA-256 only when it is the one the manifest signs, and the command sent is a signed
``update.offer`` the router's validator accepts (manifest byte for byte, the desk's URL)."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.commands import envelope
from gateway.updates.release import Release, sign_release
from provider import commands as pc
from provider import release_offer as ro

KEY = ed25519.Ed25519PrivateKey.generate()
ARTIFACT = b"release tree bytes" * 1000


def _manifest(data: bytes = ARTIFACT) -> bytes:
    release = Release(
        version="0.2.0", arch="amd64", sha256=hashlib.sha256(data).hexdigest(), size=len(data),
        compression="gz", rollback=False, issued_at=datetime.now(UTC), outbox_schema=3,
        outbox_min_reader=3,
    )  # fmt: skip
    return sign_release(release, KEY)


def _pem(key: ed25519.Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture
def desk(tmp_path: Path) -> Path:
    d = tmp_path / "desk"
    assert pc.main(["keygen", "--desk", str(d)]) == 0
    (d / "desk.json").write_text(json.dumps({"est_url": "https://127.0.0.1:8443",
                                             "broker_port": 1}))  # fmt: skip
    (tmp_path / "release.json").write_bytes(_manifest())
    (tmp_path / "release.tar.gz").write_bytes(ARTIFACT)
    (tmp_path / "release.pub").write_bytes(_pem(KEY))
    return d


def _broker(_root: Path, _host: str | None, _port: int | None) -> pc.BrokerSettings:
    return pc.BrokerSettings("h", 1, Path("ca"), Path("c"), Path("k"))


def _argv(desk: Path, *extra: str) -> list[str]:
    t = desk.parent
    return ["--desk", str(desk), "--gateway", "gw-1", "--manifest", str(t / "release.json"),
            "--artifact", str(t / "release.tar.gz"), *extra]  # fmt: skip


def test_offer_publishes_the_artifact_and_sends_a_signed_update_offer(
    desk: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sent: list[tuple[str, bytes]] = []
    monkeypatch.setattr(pc, "publish", lambda _b, topic, payload: sent.append((topic, payload)))
    assert ro.main(_argv(desk, "--key", str(desk.parent / "release.pub")), _broker) == 0
    sha = hashlib.sha256(ARTIFACT).hexdigest()
    assert (desk / "releases" / sha).read_bytes() == ARTIFACT
    assert [p.name for p in (desk / "releases").iterdir()] == [sha]  # no partial left
    [(topic, raw)] = sent
    assert topic == "homecare/v1/cmd/gw-1"
    key_text = pc.public_key_text(pc.load_key(desk / pc.KEY_FILE))
    c = envelope.verify(raw, envelope.public_key_from_text(key_text), "gw-1", datetime.now(UTC))
    assert c.name == "update.offer"
    assert base64.b64decode(c.args["manifest"]) == (desk.parent / "release.json").read_bytes()
    assert c.args["url"] == f"https://127.0.0.1:8443/homecare/v1/releases/{sha}"
    assert "offered 0.2.0 (amd64)" in capsys.readouterr().out


@pytest.mark.parametrize("problem", ["other-artifact", "other-key", "http-url"])
def test_offer_refuses_what_the_router_would_refuse_and_sends_nothing(
    desk: Path, problem: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sent: list[Any] = []
    monkeypatch.setattr(pc, "publish", lambda *a: sent.append(a))
    t = desk.parent
    extra: list[str] = []
    if problem == "other-artifact":
        (t / "release.tar.gz").write_bytes(ARTIFACT + b"!")
    elif problem == "http-url":
        extra = ["--url-base", "http://provider.example"]
    else:
        (t / "release.pub").write_bytes(_pem(ed25519.Ed25519PrivateKey.generate()))
    assert ro.main(_argv(desk, "--key", str(t / "release.pub"), *extra), _broker) == 1
    assert sent == []
    assert list((desk / "releases").glob("*")) == [] if (desk / "releases").exists() else True
    assert pc.CounterBook(desk / pc.COUNTERS_FILE).last("gw-1") == 0  # no counter spent
    assert "homecare-provider release offer:" in capsys.readouterr().err
