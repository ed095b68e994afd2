"""Software updates (issue 20 part 2): manifest, inbox, root updater, health gate, recovery.

The updater runs here against a temporary root (UpdateLayout(root)) with a fake systemd: the
real unit pair is exercised under systemd by field/test_updates.py.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
import stat
import tarfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.config import updates as updates_config
from gateway.errors import ConfigError
from gateway.seal import cjson
from gateway.updates import beacon
from gateway.updates.errors import (
    ReleaseInvalidError,
    ReleaseNotApplicableError,
    ReleaseSignatureError,
    UpdateBusyError,
)
from gateway.updates.inbox import drop_release, inbox_dir
from gateway.updates.layout import RELEASE_INFO, UpdateLayout
from gateway.updates.release import Release, parse_version, sign_release, verify_manifest
from gateway.updates.state import load_state
from gateway.updates.unpack import unpack
from gateway.updates.updater import UNIT, UnitState, Updater

KEY = ed25519.Ed25519PrivateKey.generate()
OLD = "0.1.0"
NEW = "0.1.1"


def tree_tar(version: str, *, arch: str = "amd64", schema: int = 3, extra: Any = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:

        def add(name: str, data: bytes, mode: int = 0o644) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))

        add("./bin/gatewayd", b"#!/bin/sh\n", 0o755)
        info = {"version": version, "arch": arch, "outbox_schema": schema, "outbox_min_reader": 3}
        add(f"./{RELEASE_INFO}", json.dumps(info).encode())
        if extra is not None:
            extra(tar)
    return buf.getvalue()


def manifest_for(
    artifact: bytes, version: str, *, rollback: bool = False, arch: str = "amd64",
    min_reader: int = 3, key: ed25519.Ed25519PrivateKey = KEY,
) -> bytes:  # fmt: skip
    release = Release(
        version=version, arch=arch, sha256=hashlib.sha256(artifact).hexdigest(),
        size=len(artifact), compression="gz", rollback=rollback,
        issued_at=datetime.now(UTC), outbox_schema=max(3, min_reader), outbox_min_reader=min_reader,
    )  # fmt: skip
    return sign_release(release, key)


@dataclass
class FakeSystemd:
    """gatewayd as systemd would show it: each restart is a new PID; a healthy version writes
    the beacon (READY and delivered) the way gateway/updates/beacon.py does."""

    layout: UpdateLayout
    healthy: set[str] = field(default_factory=lambda: {OLD, NEW})
    pid: int = 100
    active: str = "active"
    restarts: list[str] = field(default_factory=list)

    def restart(self, unit: str) -> None:
        assert unit == UNIT
        version = Path(os.readlink(self.layout.current)).name
        self.restarts.append(version)
        self.pid += 1
        if version in self.healthy:
            self.active = "active"
            self.layout.beacon.parent.mkdir(parents=True, exist_ok=True)
            body = {"version": version, "pid": self.pid, "delivered_records": 1}
            self.layout.beacon.write_text(json.dumps(body))
        else:
            self.active = "activating"  # never reaches READY

    def state(self, unit: str) -> UnitState:
        return UnitState(self.active, self.pid, "success")


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


class PowerCut(Exception):  # noqa: N818 - an event the test stages, not an error
    """Stands for the power going off at a step of the updater."""


@pytest.fixture
def root(tmp_path: Path) -> UpdateLayout:
    layout = UpdateLayout(tmp_path)
    old = layout.release(OLD)
    (old / "bin").mkdir(parents=True)
    (old / "bin/gatewayd").write_text("#!/bin/sh\n")
    info = {"version": OLD, "arch": "amd64", "outbox_schema": 3, "outbox_min_reader": 3}
    (old / RELEASE_INFO).write_text(json.dumps(info))
    os.symlink(f"releases/{OLD}", layout.current)
    os.symlink(f"releases/{OLD}", layout.opt / "updater")
    layout.config.parent.mkdir(parents=True)
    pub = KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (layout.config.parent / "release.pub").write_bytes(pub)
    layout.config.write_text('[updates]\nrelease_signing_key = "release.pub"\nhealth_gate_s = 60\n')
    layout.daemon_state.mkdir(parents=True)
    return layout


def offer(layout: UpdateLayout, version: str = NEW, **kw: Any) -> Path:
    artifact = tree_tar(version)
    manifest = manifest_for(artifact, version, **kw)
    chunks = [artifact[i : i + 1000] for i in range(0, len(artifact), 1000)]
    return drop_release(
        layout.daemon_state, manifest, chunks, KEY.public_key(), arch="amd64",
        running_version=OLD if version != OLD else NEW,
    ).path  # fmt: skip


def updater(layout: UpdateLayout, systemd: FakeSystemd, clock: Clock, **kw: Any) -> Updater:
    return Updater(layout, systemd, arch="amd64", clock=clock, sleep=clock.sleep,
                   boot=kw.pop("boot", lambda: "boot-1"), **kw)  # fmt: skip


def current(layout: UpdateLayout) -> str:
    return Path(os.readlink(layout.current)).name


# --- manifest ----------------------------------------------------------------------------------
def test_manifest_round_trips_and_refuses_another_key() -> None:
    """A manifest verifies with the pinned key and not with any other."""
    artifact = tree_tar(NEW)
    raw = manifest_for(artifact, NEW)
    assert verify_manifest(raw, KEY.public_key()).version == NEW
    with pytest.raises(ReleaseSignatureError):
        verify_manifest(raw, ed25519.Ed25519PrivateKey.generate().public_key())


def test_tampered_payload_is_refused_before_it_is_parsed() -> None:
    """Changing one byte of the signed payload (here: the rollback flag) breaks the signature."""
    raw = json.loads(manifest_for(tree_tar(NEW), NEW))
    payload = json.loads(base64.b64decode(raw["payload"]))
    payload["rollback"] = True
    raw["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    with pytest.raises(ReleaseSignatureError):
        verify_manifest(json.dumps(raw).encode(), KEY.public_key())


@pytest.mark.parametrize("bad", ["1", "01.2", "1.2.3.4.5", "1.2-rc1", "../1.2", "1.2/x", ""])
def test_versions_are_dotted_numbers_only(bad: str) -> None:
    """A version is a directory name under releases/: nothing but 2-4 dotted numbers."""
    with pytest.raises(ReleaseInvalidError):
        parse_version(bad)
    assert parse_version("0.10.1") > parse_version("0.9.9")


# --- the daemon's inbox --------------------------------------------------------------------------
def test_drop_streams_into_the_inbox_atomically(root: UpdateLayout) -> None:
    """A good offer lands as inbox/<id>/{release.json,release.tar.gz}; nothing stays in incoming."""
    entry = offer(root)
    assert entry.parent == inbox_dir(root.daemon_state)
    assert sorted(p.name for p in entry.iterdir()) == ["release.json", "release.tar.gz"]
    assert list((root.daemon_state / "updates/incoming").iterdir()) == []


def test_drop_refuses_an_artifact_longer_than_its_manifest(root: UpdateLayout) -> None:
    """The size cap holds while streaming: extra bytes are refused and nothing is left behind."""
    artifact = tree_tar(NEW)
    manifest = manifest_for(artifact, NEW)
    with pytest.raises(ReleaseInvalidError, match="larger"):
        drop_release(root.daemon_state, manifest, [artifact, b"x"], KEY.public_key(),
                     arch="amd64", running_version=OLD)  # fmt: skip
    assert list(inbox_dir(root.daemon_state).iterdir()) == []
    assert list((root.daemon_state / "updates/incoming").iterdir()) == []


def test_drop_refuses_a_digest_mismatch(root: UpdateLayout) -> None:
    artifact = tree_tar(NEW)
    manifest = manifest_for(artifact, NEW)
    corrupt = bytes([artifact[0] ^ 1]) + artifact[1:]
    with pytest.raises(ReleaseInvalidError, match="SHA-256"):
        drop_release(root.daemon_state, manifest, [corrupt], KEY.public_key(),
                     arch="amd64", running_version=OLD)  # fmt: skip


def test_drop_refuses_downgrade_arch_and_a_second_offer(root: UpdateLayout) -> None:
    """Lower version without the rollback flag, another architecture, or a busy inbox: refused."""
    a = tree_tar("0.0.9")
    with pytest.raises(ReleaseNotApplicableError, match="rollback"):
        drop_release(root.daemon_state, manifest_for(a, "0.0.9"), [a], KEY.public_key(),
                     arch="amd64", running_version=OLD)  # fmt: skip
    b = tree_tar(NEW, arch="arm64")
    with pytest.raises(ReleaseNotApplicableError, match="arm64"):
        drop_release(root.daemon_state, manifest_for(b, NEW, arch="arm64"), [b],
                     KEY.public_key(), arch="amd64", running_version=OLD)  # fmt: skip
    offer(root)
    with pytest.raises(UpdateBusyError):
        offer(root)


# --- the root updater ----------------------------------------------------------------------------
def test_good_update_switches_and_is_kept(root: UpdateLayout) -> None:
    """Installed side by side, current switched, gatewayd restarted, kept once READY and
    delivering; the inbox is emptied and update.done carries the measured switch gap."""
    offer(root)
    systemd, clock = FakeSystemd(root), Clock()
    updater(root, systemd, clock).run()
    assert current(root) == NEW
    assert (root.release(OLD) / "bin/gatewayd").exists()  # the fallback stays
    assert systemd.restarts == [NEW]
    assert list(root.inbox.iterdir()) == []
    state = load_state(root.state_file)
    assert state.phase == "idle"
    assert state.outcomes[-1]["event"] == "update.done"
    assert state.outcomes[-1]["switch_gap_s"] is not None
    assert not root.trial_marker.exists()


def test_bad_update_is_rolled_back_by_the_gate(root: UpdateLayout) -> None:
    """A version that never reaches READY is switched back after health_gate_s, by itself."""
    offer(root)
    systemd, clock = FakeSystemd(root, healthy={OLD}), Clock()
    updater(root, systemd, clock).run()
    assert current(root) == OLD
    assert systemd.restarts == [NEW, OLD]
    out = load_state(root.state_file).outcomes[-1]
    assert out["event"] == "update.rolled_back"
    assert "not READY within 60 s" in out["reason"]
    assert clock.t - 1000.0 >= 60


def test_ready_but_not_delivering_is_rolled_back(root: UpdateLayout) -> None:
    """READY alone is not enough: without an acknowledged record the update goes back."""
    offer(root)
    systemd, clock = FakeSystemd(root), Clock()
    root.beacon.parent.mkdir(parents=True, exist_ok=True)

    def restart_without_beacon(unit: str) -> None:
        FakeSystemd.restart(systemd, unit)
        root.beacon.unlink(missing_ok=True)

    systemd.restart = restart_without_beacon  # type: ignore[method-assign]
    updater(root, systemd, clock).run()
    assert current(root) == OLD
    assert "delivered no record" in load_state(root.state_file).outcomes[-1]["reason"]


def test_bad_signature_is_refused_and_nothing_changes(root: UpdateLayout) -> None:
    """The updater re-verifies: an entry the daemon was fooled by (or forged) changes nothing."""
    entry = offer(root)
    other = ed25519.Ed25519PrivateKey.generate()
    artifact = (entry / "release.tar.gz").read_bytes()
    (entry / "release.json").write_bytes(manifest_for(artifact, NEW, key=other))
    systemd, clock = FakeSystemd(root), Clock()
    updater(root, systemd, clock).run()
    assert current(root) == OLD
    assert systemd.restarts == []
    assert not root.release(NEW).exists()
    out = load_state(root.state_file).outcomes[-1]
    assert out["event"] == "update.refused"
    assert "signature" in out["reason"]
    assert list(root.inbox.iterdir()) == []


def test_artifact_swapped_after_the_daemon_checked_it_is_refused(root: UpdateLayout) -> None:
    """The daemon's check counts for nothing: a changed artifact fails the updater's digest."""
    entry = offer(root)
    good = (entry / "release.tar.gz").read_bytes()
    (entry / "release.tar.gz").write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    updater(root, FakeSystemd(root), Clock()).run()
    assert current(root) == OLD
    assert "SHA-256" in load_state(root.state_file).outcomes[-1]["reason"]


def test_symlinked_artifact_is_not_followed(root: UpdateLayout, tmp_path: Path) -> None:
    """A link planted in the inbox (to a root-only file) is refused, never read."""
    entry = offer(root)
    (entry / "release.tar.gz").unlink()
    secret = tmp_path / "secret"
    secret.write_text("root only")
    (entry / "release.tar.gz").symlink_to(secret)
    updater(root, FakeSystemd(root), Clock()).run()
    assert current(root) == OLD
    assert load_state(root.state_file).outcomes[-1]["event"] == "update.refused"


def test_release_escaping_its_tree_is_refused(root: UpdateLayout) -> None:
    """A signed tarball with ../ names still cannot write outside releases/<v>.partial."""

    def escape(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo("../../../etc/evil")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))

    artifact = tree_tar(NEW, extra=escape)
    drop_release(root.daemon_state, manifest_for(artifact, NEW), [artifact], KEY.public_key(),
                 arch="amd64", running_version=OLD)  # fmt: skip
    updater(root, FakeSystemd(root), Clock()).run()
    assert current(root) == OLD
    assert not (root.root / "etc/evil").exists()
    assert not any(root.releases.glob("*.partial"))
    assert load_state(root.state_file).outcomes[-1]["event"] == "update.refused"


def test_downgrade_needs_the_rollback_flag_at_the_updater_too(root: UpdateLayout) -> None:
    """A lower version the daemon let through (forged inbox) is refused unless signed so."""
    artifact = tree_tar("0.0.9")
    entry = root.inbox / "x"
    entry.mkdir(parents=True)
    (entry / "release.json").write_bytes(manifest_for(artifact, "0.0.9"))
    (entry / "release.tar.gz").write_bytes(artifact)
    updater(root, FakeSystemd(root), Clock()).run()
    assert current(root) == OLD
    assert "rollback" in load_state(root.state_file).outcomes[-1]["reason"]
    entry.mkdir(parents=True)
    (entry / "release.json").write_bytes(manifest_for(artifact, "0.0.9", rollback=True))
    (entry / "release.tar.gz").write_bytes(artifact)
    updater(root, FakeSystemd(root, healthy={"0.0.9"}), Clock()).run()
    assert current(root) == "0.0.9"


def test_release_whose_outbox_the_fallback_cannot_open_is_refused(root: UpdateLayout) -> None:
    """A rollback never meets an outbox it cannot open: a release with a reader floor above
    the fallback's schema is refused before anything is switched."""
    artifact = tree_tar(NEW, schema=5)
    entry = root.inbox / "y"
    entry.mkdir(parents=True)
    (entry / "release.json").write_bytes(manifest_for(artifact, NEW, min_reader=5))
    (entry / "release.tar.gz").write_bytes(artifact)
    updater(root, FakeSystemd(root), Clock()).run()
    assert current(root) == OLD
    assert "schema" in load_state(root.state_file).outcomes[-1]["reason"]


def cut_at(step: str) -> Any:
    def cut(at: str) -> None:
        if at == step:
            raise PowerCut

    return cut


def test_power_cut_before_the_switch_keeps_the_old_version(root: UpdateLayout) -> None:
    """Power lost with the new tree unpacked but the switch not yet decided: at boot the old
    version stays current (whole), and update.failed says so."""
    offer(root)
    with pytest.raises(PowerCut):
        updater(root, FakeSystemd(root), Clock(), stop_at=cut_at("installed")).run()
    booted = updater(root, FakeSystemd(root), Clock(), boot=lambda: "boot-2")
    assert booted.recover(at_boot=True) == "idle"
    assert current(root) == OLD
    assert load_state(root.state_file).outcomes[-1]["event"] == "update.failed"


def test_power_cut_mid_switch_resumes_to_a_whole_version(root: UpdateLayout) -> None:
    """Power lost once the switch is durable: at boot, recover() ends on a whole tree (the
    switch is finished), gatewayd then runs it under the gate and it is kept."""
    offer(root)
    systemd, clock = FakeSystemd(root), Clock()
    with pytest.raises(PowerCut):
        updater(root, systemd, clock, stop_at=cut_at("switched")).run()
    # Boot: the boot unit runs before gatewayd; nothing restarts, the link is whole.
    booted = updater(root, systemd, clock, boot=lambda: "boot-2")
    assert booted.recover(at_boot=True) == "trial"
    assert current(root) == NEW
    assert (root.release(NEW) / "bin/gatewayd").exists()
    assert root.trial_marker.exists()  # the path unit starts the gate after boot
    systemd.restart(UNIT)  # systemd starts gatewayd at boot
    booted.run()
    assert load_state(root.state_file).outcomes[-1]["event"] == "update.done"


def test_power_cut_while_unpacking_leaves_the_old_version(root: UpdateLayout) -> None:
    """A half-unpacked tree is never named by current: recovery removes it, records a failure."""
    offer(root)
    u = updater(root, FakeSystemd(root), Clock())
    u.state.phase, u.state.from_version, u.state.to_version = "installing", OLD, NEW
    u._save()
    (root.releases / f"{NEW}.partial/bin").mkdir(parents=True)
    booted = updater(root, FakeSystemd(root), Clock(), boot=lambda: "boot-2")
    assert booted.recover(at_boot=True) == "idle"
    assert current(root) == OLD
    assert not (root.releases / f"{NEW}.partial").exists()
    assert load_state(root.state_file).outcomes[-1]["event"] == "update.failed"


def test_repeated_reboots_in_the_gate_roll_back(root: UpdateLayout) -> None:
    """A version that keeps rebooting the router is taken back after MAX_TRIAL_BOOTS boots."""
    offer(root)
    systemd, clock = FakeSystemd(root), Clock()
    with pytest.raises(PowerCut):
        updater(root, systemd, clock, stop_at=cut_at("switched")).run()
    for n in range(2, 6):  # the boot that finishes the switch, then three more
        updater(root, systemd, clock, boot=lambda n=n: f"boot-{n}").recover(at_boot=True)
    assert current(root) == OLD
    assert load_state(root.state_file).outcomes[-1]["event"] == "update.rolled_back"


# --- the daemon's reports ------------------------------------------------------------------------
def test_outcomes_are_sealed_once_each(root: UpdateLayout) -> None:
    """Each outcome becomes one event record (checked fields), and is not sealed again."""
    offer(root)
    updater(root, FakeSystemd(root, healthy={OLD}), Clock()).run()
    sealed: list[dict[str, Any]] = []

    async def submit(body: dict[str, Any]) -> int:
        sealed.append(body)
        return len(sealed)

    assert asyncio.run(beacon.report_outcomes(root.daemon_state, submit, root.state_file)) == 1
    assert sealed[0]["event"] == "update.rolled_back"
    cjson.dumps(sealed[0])  # what the writer does with it: canonical JSON, no floats
    assert sealed[0]["to_version"] == NEW
    assert asyncio.run(beacon.report_outcomes(root.daemon_state, submit, root.state_file)) == 0


def test_a_done_outcome_with_its_gap_is_sealable(root: UpdateLayout) -> None:
    """update.done carries the switch gap; the sealed body must be canonical JSON (integers:
    a float there crashed the daemon at start in the field tier)."""
    offer(root)
    updater(root, FakeSystemd(root), Clock()).run()
    (body,) = beacon.pending_outcomes(root.daemon_state, root.state_file)
    assert body["event"] == "update.done"
    assert isinstance(body["switch_gap_ms"], int)
    cjson.dumps(body)


def test_a_refused_report_does_not_stop_the_daemon(root: UpdateLayout) -> None:
    """The writer refusing a report (quota, encoding) is logged; the task ends normally."""
    offer(root)
    updater(root, FakeSystemd(root), Clock()).run()

    async def refuse(body: dict[str, Any]) -> int:
        raise TypeError("refused")

    assert asyncio.run(beacon.report_outcomes(root.daemon_state, refuse, root.state_file)) == 0
    assert beacon.pending_outcomes(root.daemon_state, root.state_file) == []


def test_outcome_with_unchecked_fields_is_not_signed() -> None:
    """A reason with terminal escapes (or any field out of its bounds) is not sealed."""
    bad = {"event": "update.done", "n": 1, "reason": "x\x1b[2J", "time": "t",
           "from_version": None, "to_version": None}  # fmt: skip
    assert beacon.checked_outcome(bad) is None
    assert beacon.checked_outcome({**bad, "reason": "ok"}) is not None


def test_beacon_waits_for_a_delivered_record(tmp_path: Path) -> None:
    """No beacon before the broker acknowledged a record from this process."""

    class Up:
        delivered_records = 0

    up = Up()

    async def scenario() -> None:
        task = asyncio.create_task(beacon.beacon_task(tmp_path, NEW, up, poll_s=0.01))
        await asyncio.sleep(0.05)
        assert not (tmp_path / beacon.BEACON).exists()
        up.delivered_records = 2
        await asyncio.wait_for(task, 10)

    asyncio.run(scenario())
    body = json.loads((tmp_path / beacon.BEACON).read_text())
    assert body == {"version": NEW, "pid": os.getpid(), "delivered_records": 2}


def test_updates_config_bounds(tmp_path: Path) -> None:
    key = tmp_path / "k.pub"
    key.write_text("x")
    cfg = updates_config.parse({"updates": {"release_signing_key": "k.pub"}}, tmp_path / "g.toml")
    assert cfg is not None
    assert cfg.health_gate_s == 600
    with pytest.raises(ConfigError, match="health_gate_s"):
        updates_config.parse(
            {"updates": {"release_signing_key": "k.pub", "health_gate_s": 5}}, tmp_path / "g.toml"
        )


def test_package_install_during_a_gate_supersedes_the_update(root: UpdateLayout) -> None:
    """apt pointed current at its own release mid-gate: the updater does not switch anything
    back, it records the update as superseded."""
    offer(root)
    with pytest.raises(PowerCut):
        updater(root, FakeSystemd(root), Clock(), stop_at=cut_at("switched")).run()
    pkg = root.release("0.2.0")
    (pkg / "bin").mkdir(parents=True)
    os.unlink(root.current)
    os.symlink("releases/0.2.0", root.current)
    updater(root, FakeSystemd(root), Clock(), boot=lambda: "boot-2").recover(at_boot=True)
    assert current(root) == "0.2.0"
    out = load_state(root.state_file).outcomes[-1]
    assert out["event"] == "update.failed"
    assert "superseded" in out["reason"]


def test_provider_release_sign_and_verify_round_trip(tmp_path: Path) -> None:
    """`homecare-provider release sign` takes version, arch and schema facts from the tree's
    release-info.json; `verify` accepts it with the public key and refuses a downgrade."""
    from provider import release_tool  # noqa: PLC0415 - the provider side, only here

    artifact = tmp_path / "release.tar.gz"
    artifact.write_bytes(tree_tar(NEW))
    key = tmp_path / "release.key"
    manifest = tmp_path / "release.json"
    assert release_tool.main(["sign", "--key", str(key), "--new-key", "--artifact",
                              str(artifact), "--out", str(manifest)]) == 0  # fmt: skip
    pub = tmp_path / "release.key.pub"
    ok = ["verify", "--key", str(pub), "--manifest", str(manifest), "--artifact", str(artifact)]
    assert release_tool.main([*ok, "--arch", "amd64", "--running", OLD]) == 0
    assert release_tool.main([*ok, "--arch", "amd64", "--running", "0.2.0"]) == 1
    release = release_tool.verify(manifest, pub, artifact, None, None)
    assert (release.version, release.outbox_schema, release.rollback) == (NEW, 3, False)


# --- unpacking: the router's Python (3.11.2) has no tarfile filters, gateway/updates/unpack.py --
def _tar(tmp_path: Path, build: Any) -> Path:
    path = tmp_path / "t.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        build(tar)
    return path


def _file(tar: tarfile.TarFile, name: str, data: bytes = b"x", mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))


def _link(tar: tarfile.TarFile, name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    tar.addfile(info)


def test_unpack_keeps_a_venv_shape_and_drops_dangerous_bits(tmp_path: Path) -> None:
    """The interpreter link to /usr/bin/python3.11, relative links, hard links and execute bits
    survive; setuid and group/other write bits do not."""

    def build(tar: tarfile.TarFile) -> None:
        _file(tar, "./bin/gatewayd", b"#!/bin/sh\n", 0o4777)
        _link(tar, "./bin/python3.11", "/usr/bin/python3.11")
        _link(tar, "./bin/python", "python3.11")
        _link(tar, "./bin/again", "bin/gatewayd", tarfile.LNKTYPE)

    dest = tmp_path / "out"
    dest.mkdir()
    unpack(_tar(tmp_path, build), "gz", dest)
    assert stat.S_IMODE((dest / "bin/gatewayd").stat().st_mode) == 0o755
    assert os.readlink(dest / "bin/python3.11") == "/usr/bin/python3.11"
    assert (dest / "bin/again").stat().st_ino == (dest / "bin/gatewayd").stat().st_ino


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda t: _file(t, "../evil"), id="dotdot"),
        pytest.param(lambda t: _file(t, "/etc/evil"), id="absolute"),
        pytest.param(lambda t: _link(t, "./etc", "/etc"), id="absolute-link"),
        pytest.param(lambda t: _link(t, "./up", "../../.."), id="escaping-link"),
        pytest.param(lambda t: _file(t, "./d/../../evil"), id="dotdot-inside"),
        pytest.param(lambda t: _link(t, "./h", "/etc/shadow", tarfile.LNKTYPE), id="hardlink-out"),
        pytest.param(lambda t: _link(t, "./dev", "", tarfile.CHRTYPE), id="device"),
    ],
)
def test_unpack_refuses_what_could_leave_the_tree(tmp_path: Path, build: Any) -> None:
    """Each of these is refused with a typed error, and nothing lands outside ``dest``."""
    dest = tmp_path / "a" / "b" / "out"
    dest.mkdir(parents=True)
    with pytest.raises(ReleaseInvalidError):
        unpack(_tar(tmp_path, build), "gz", dest)
    assert not (tmp_path / "a" / "evil").exists()
    assert not (tmp_path / "a" / "b" / "evil").exists()


def test_unpack_never_writes_through_a_link(tmp_path: Path) -> None:
    """A link to a directory inside the tree, then a file under the link's name: refused."""

    def build(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo("./real")
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        _link(tar, "./alias", "real")
        _file(tar, "./alias/f")

    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(ReleaseInvalidError, match="through a link"):
        unpack(_tar(tmp_path, build), "gz", dest)


def test_beacon_names_the_release_tree_it_runs_from(tmp_path: Path, monkeypatch: Any) -> None:
    """The updater compares the beacon with the release directory it switched to: the version
    comes from the running tree's release-info.json, not from the package metadata."""
    monkeypatch.setattr("sys.prefix", str(tmp_path))
    assert beacon.running_release("0.1.0") == "0.1.0"
    (tmp_path / RELEASE_INFO).write_text(json.dumps({"version": "0.1.0.1"}))
    assert beacon.running_release("0.1.0") == "0.1.0.1"
    (tmp_path / RELEASE_INFO).write_text(json.dumps({"version": "../x"}))
    assert beacon.running_release("0.1.0") == "0.1.0"


def test_a_beacon_from_the_last_boot_does_not_pass_the_gate(root: UpdateLayout) -> None:
    """PIDs repeat across boots: after a power cut in the gate, the old boot's beacon (same
    version, same PID as the new gatewayd) is dropped; the new process must deliver again."""
    offer(root)
    systemd, clock = FakeSystemd(root), Clock()
    with pytest.raises(PowerCut):
        updater(root, systemd, clock, stop_at=cut_at("switched")).run()
    booted = updater(root, systemd, clock, boot=lambda: "boot-2")
    booted.recover(at_boot=True)
    root.beacon.write_text(json.dumps({"version": NEW, "pid": systemd.pid, "delivered_records": 3}))
    booted2 = updater(root, systemd, clock, boot=lambda: "boot-3")
    booted2.recover(at_boot=True)  # another boot inside the gate
    assert not root.beacon.exists()
    booted2.run()
    assert load_state(root.state_file).outcomes[-1]["event"] == "update.rolled_back"
