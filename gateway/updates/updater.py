"""The root updater: install a release side by side, switch, gate on health, roll back alone.

Runs as root in homecare-gateway-update.service (started by its .path unit when the daemon drops
an offer into the inbox, or while a health gate is pending) and, at boot, as
``homecare-gateway-update-boot.service`` (``recover``, ordered before gatewayd). It never
trusts the daemon: it copies the inbox entry into its own directory without following links,
and checks signature, digest, size, architecture and direction again on that copy.

Every step that changes the router is preceded by a durable state write (gateway/updates/
state.py), and every change is a rename, so a power cut at any point leaves ``current`` naming
a whole tree (the old one or the new one), and ``recover`` finishes what was started.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.atomicfile import atomic_write, fsync_dir
from gateway.config import updates as updates_config
from gateway.errors import GatewayError
from gateway.updates.errors import (
    ReleaseInvalidError,
    ReleaseNotApplicableError,
    UpdateError,
)
from gateway.updates.inbox import MANIFEST_NAME, check_applicable
from gateway.updates.layout import RELEASE_INFO, UpdateLayout
from gateway.updates.release import (
    MAX_MANIFEST_BYTES,
    Release,
    is_version,
    verify_manifest,
)
from gateway.updates.state import load_state, save_state
from gateway.updates.unpack import unpack

log = structlog.get_logger("gateway.updates")

UNIT = "gatewayd.service"
MAX_TRIAL_BOOTS = 2  # the new version made the router reboot twice in its gate: take it back
POLL_S = 0.25
MAX_BEACON_BYTES = 4096
OTA_MARK = ".installed-by-updater"  # trees the updater made (and may prune); dpkg's it never does
KEEP_OTA = 2
# Fault injection for the field tier only (field/test_updates.py): the updater stops (blocks)
# right after this step has been made durable, so the test can cut the power there.
STOP_AT_ENV = "HOMECARE_UPDATE_TEST_STOP_AT"


@dataclass(frozen=True, slots=True)
class UnitState:
    active_state: str  # active, activating, deactivating, failed, inactive
    main_pid: int
    result: str


class ServiceManager(Protocol):
    def restart(self, unit: str) -> None: ...
    def state(self, unit: str) -> UnitState: ...


class Systemctl:
    """systemd through systemctl (the updater runs as root: no polkit involved)."""

    def restart(self, unit: str) -> None:
        # --no-block: the health gate watches the start itself (and measures it).
        subprocess.run(  # noqa: S603 - fixed arguments
            ["systemctl", "restart", "--no-block", unit],  # noqa: S607 - PATH of systemd's unit
            check=True,
            timeout=60,
        )

    def state(self, unit: str) -> UnitState:
        out = subprocess.run(  # noqa: S603 - fixed arguments
            ["systemctl", "show", unit, "-p", "ActiveState", "-p", "MainPID", "-p", "Result"],  # noqa: S607
            capture_output=True, text=True, check=False, timeout=30,
        ).stdout  # fmt: skip
        props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        pid = props.get("MainPID", "0")
        return UnitState(
            props.get("ActiveState", "unknown"),
            int(pid) if pid.isdigit() else 0,
            props.get("Result", ""),
        )


def machine_arch() -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Updater:
    def __init__(
        self,
        layout: UpdateLayout,
        services: ServiceManager,
        *,
        arch: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        boot: Callable[[], str] = boot_id,
        stop_at: Callable[[str], None] | None = None,
    ) -> None:
        self.layout = layout
        self.services = services
        self.arch = arch or machine_arch()
        self.clock = clock
        self.sleep = sleep
        self.boot = boot
        self._stop_at = stop_at or _stop_at_from_env
        self.state = load_state(layout.state_file)

    # --- state --------------------------------------------------------------------------------
    def _save(self) -> None:
        save_state(self.layout.state_file, self.state)
        marker = self.layout.trial_marker
        if self.state.phase == "trial":
            if not marker.exists():
                atomic_write(marker, b"", mode=0o644)
        else:
            marker.unlink(missing_ok=True)

    def _finish(self, event: str, reason: str, gap_s: float | None = None) -> dict[str, Any]:
        outcome = self.state.add_outcome(
            event,
            from_version=self.state.from_version,
            to_version=self.state.to_version,
            reason=reason,
            time=_now(),
            gap_s=gap_s,
        )
        self.state.phase = "idle"
        self.state.trial_boot_id = self.state.trial_started_mono = None
        self.state.trial_boots = 0
        self._save()
        log.info(
            "update.outcome",
            kind=event,
            from_version=outcome["from_version"],
            to_version=outcome["to_version"],
            reason=outcome["reason"],
            switch_gap_s=outcome["switch_gap_s"],
        )
        return outcome

    # --- the link ------------------------------------------------------------------------------
    def current_version(self) -> str | None:
        try:
            target = os.readlink(self.layout.current)
        except OSError:
            return None
        name = Path(target).name
        return name if is_version(name) else None

    def _point_current(self, version: str) -> None:
        link = self.layout.current
        tmp = link.with_name(link.name + ".new")
        tmp.unlink(missing_ok=True)
        os.symlink(f"releases/{version}", tmp)
        tmp.replace(link)  # rename(2): atomic; a power cut leaves the old link or the new one
        fsync_dir(link.parent)

    # --- recovery ------------------------------------------------------------------------------
    def recover(self, *, at_boot: bool = False) -> str:
        """Make the router consistent after a crash or a power cut; return the phase reached.

        Never waits for the health gate. ``at_boot``: this runs before gatewayd starts (the
        boot unit), so nothing is restarted; otherwise (the updater itself was interrupted)
        gatewayd is restarted onto whatever ``current`` names now."""
        for partial in self.layout.releases.glob("*.partial"):
            shutil.rmtree(partial, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self.layout.work)
        st = self.state
        if st.phase in ("switching", "trial", "reverting") and self.current_version() not in (
            st.from_version,
            st.to_version,
        ):
            # apt installed a package meanwhile (postinst points current at it): its choice.
            self._finish("update.failed", f"superseded by package {self.current_version()}")
        if st.phase == "installing":
            self._finish("update.failed", "interrupted while unpacking; nothing was switched")
        elif st.phase == "switching":
            # The switch was decided and made durable: finish it (current is old or new, whole).
            assert st.to_version is not None
            if self.current_version() != st.to_version:
                self._point_current(st.to_version)
            self._begin_trial(restart=not at_boot)
        elif st.phase == "trial":
            if st.trial_boot_id != self.boot():
                # PIDs repeat from boot to boot: a beacon of the last boot must not count.
                _clear_beacon(self.layout)
                st.trial_boots += 1
                st.trial_boot_id = self.boot()
                st.trial_started_mono = self.clock()
                if st.trial_boots > MAX_TRIAL_BOOTS:
                    self._revert(
                        f"the router restarted {st.trial_boots} times during the health gate",
                        restart=not at_boot,
                    )
                else:
                    self._save()
        elif st.phase == "reverting":
            self._revert("interrupted while switching back", restart=not at_boot)
        return self.state.phase

    # --- one offer -----------------------------------------------------------------------------
    def run(self, gate_s: float | None = None) -> None:
        """Recover, go on with a pending health gate, then take each inbox entry in turn."""
        self.recover()
        cfg = _load_updates_config(self.layout)
        gate = gate_s if gate_s is not None else (cfg.health_gate_s if cfg else 600.0)
        if self.state.phase == "trial":
            self.gate(gate)
        for entry in self._inbox_entries():
            self.take(entry, gate)

    def _inbox_entries(self) -> list[str]:
        try:
            names = sorted(os.listdir(self.layout.inbox))
        except (FileNotFoundError, NotADirectoryError):
            return []
        # Everything is taken, junk too: the path unit starts the updater again for as long as
        # the inbox is not empty, so whatever stays there would make it loop.
        return names

    def take(self, entry: str, gate_s: float) -> dict[str, Any]:
        """Copy one inbox entry out of the daemon's reach, remove it there, install it."""
        previous = self.current_version()
        self.state.from_version, self.state.to_version = previous, None
        work = self.layout.work / "entry"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(mode=0o700, parents=True)
        try:
            try:
                release, artifact = self._copy_entry(entry, work)
            finally:
                _remove_entry(self.layout.inbox, entry)
            self.state.to_version = release.version
            self._check(release)
            return self.install(release, artifact, gate_s)
        except UpdateError as exc:
            log.warning("update.refused", entry=entry[:80], error=exc.one_line())
            return self._finish("update.refused", exc.one_line())
        finally:
            shutil.rmtree(self.layout.work, ignore_errors=True)

    def _copy_entry(self, entry: str, work: Path) -> tuple[Release, Path]:
        cfg = _load_updates_config(self.layout)
        if cfg is None:
            raise UpdateError(
                "this router accepts no releases ([updates] is not in gateway.toml)",
                hint="add [updates] release_signing_key to gateway.toml to allow updates",
            )
        dfd = _open_dir_chain(self.layout.daemon_state, ("updates", "inbox", entry))
        try:
            manifest = _copy_untrusted(dfd, MANIFEST_NAME, work / MANIFEST_NAME, MAX_MANIFEST_BYTES)
            release = verify_manifest(manifest[0], _load_key(cfg.release_signing_key))
            artifact = work / release.artifact_name
            _, size, digest = _copy_untrusted(dfd, release.artifact_name, artifact, release.size)
        finally:
            os.close(dfd)
        if size != release.size:
            raise ReleaseInvalidError(
                f"artifact has {size} bytes, its manifest says {release.size}"
            )
        if digest != release.sha256:
            raise ReleaseInvalidError("artifact SHA-256 does not match its signed manifest")
        return release, artifact

    def _check(self, release: Release) -> None:
        previous = self.current_version()
        if previous is None:
            raise UpdateError(
                "no current release under /opt/homecare-gateway (current link missing)",
                hint="reinstall the homecare-gateway package",
            )
        if release.version == previous:
            raise ReleaseNotApplicableError(f"release {release.version} is already running")
        check_applicable(release, arch=self.arch, running_version=previous)
        info = release_info(self.layout.release(previous))
        fallback_schema = info.get("outbox_schema") if info else None
        if not isinstance(fallback_schema, int):
            raise ReleaseNotApplicableError(
                f"the running release {previous} declares no outbox schema; it cannot be the"
                " fallback of an update",
                hint="install a newer package with apt first",
            )
        # Forward-compatible outbox (buffer/schema_facts.py): the release we would fall back to
        # must be able to open what the new one writes.
        if release.outbox_min_reader > fallback_schema:
            raise ReleaseNotApplicableError(
                f"release {release.version} writes an outbox only schema >= "
                f"{release.outbox_min_reader} can open; the fallback {previous} has schema"
                f" {fallback_schema}",
                hint="offer an intermediate release that reads the new schema first",
            )

    def install(self, release: Release, artifact: Path, gate_s: float) -> dict[str, Any]:
        st = self.state
        st.phase, st.to_version = "installing", release.version
        st.switch_gap_s = None
        self._save()
        target = self.layout.release(release.version)
        if target.exists() and not self._is_package_release(release.version):
            stale = target.with_name(f".{release.version}.stale")
            shutil.rmtree(stale, ignore_errors=True)
            target.rename(stale)
            shutil.rmtree(stale, ignore_errors=True)
        if not target.exists():
            partial = target.with_name(f"{release.version}.partial")
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(mode=0o755, parents=True)
            try:
                _unpack(artifact, release, partial)
            except UpdateError:
                shutil.rmtree(partial, ignore_errors=True)
                raise
            atomic_write(partial / OTA_MARK, json.dumps(release.payload_json()).encode(), 0o644)
            os.sync()  # every file of the tree on disk before the name says it is whole
            partial.rename(target)
            fsync_dir(target.parent)
        log.info("update.installed", version=release.version)
        self._stop_at("installed")
        st.phase = "switching"
        self._save()
        self._point_current(release.version)
        log.info("update.switched", from_version=st.from_version, to_version=release.version)
        self._stop_at("switched")
        self._begin_trial(restart=True, limit_s=gate_s)
        return self.gate(gate_s)

    def _is_package_release(self, version: str) -> bool:
        tree = self.layout.release(version)
        return tree.is_dir() and not (tree / OTA_MARK).exists()

    def _begin_trial(self, *, restart: bool, limit_s: float = 120.0) -> None:
        st = self.state
        old_pid = self.services.state(UNIT).main_pid if restart else 0
        st.phase = "trial"
        st.trial_boot_id, st.trial_started_mono, st.trial_boots = self.boot(), self.clock(), 0
        _clear_beacon(self.layout)  # only a beacon the new version writes from now on counts
        self._save()
        if restart:
            self._restart_and_time(old_pid, limit_s)

    def _restart_and_time(self, old_pid: int, limit_s: float = 120.0) -> None:
        """Restart gatewayd and measure the monitoring gap: from the restart request (the old
        daemon stops taking readings) to the new one's READY (systemd: active, new PID)."""
        started = self.clock()
        self.services.restart(UNIT)
        while self.clock() - started < limit_s:
            s = self.services.state(UNIT)
            if s.active_state == "active" and s.main_pid not in (0, old_pid):
                self.state.switch_gap_s = round(self.clock() - started, 2)
                log.info("update.switch_gap", seconds=self.state.switch_gap_s)
                self._save()
                return
            if s.active_state == "failed":
                return
            self.sleep(POLL_S)

    # --- the health gate -----------------------------------------------------------------------
    def gate(self, gate_s: float) -> dict[str, Any]:
        """Wait until the new version is READY and has delivered a record, or roll back."""
        st = self.state
        assert st.phase == "trial"
        assert st.to_version is not None
        started = st.trial_started_mono if st.trial_started_mono is not None else self.clock()
        ready = False
        failed = ""
        while self.clock() - started < gate_s:
            unit = self.services.state(UNIT)
            if unit.active_state == "active" and unit.main_pid:
                ready = True
                beacon = read_beacon(self.layout)
                if (
                    beacon is not None
                    and beacon.get("version") == st.to_version
                    and beacon.get("pid") == unit.main_pid
                    and isinstance(beacon.get("delivered_records"), int)
                    and beacon["delivered_records"] > 0
                ):
                    outcome = self._finish(
                        "update.done",
                        f"READY and delivering after {self.clock() - started:.0f} s",
                        gap_s=st.switch_gap_s,
                    )
                    self._prune()
                    return outcome
            elif unit.active_state == "failed":
                failed = unit.result or "failed"
                break
            self.sleep(POLL_S * 4)
        if failed:
            reason = f"gatewayd {st.to_version} failed ({failed[:40]})"
        elif not ready:
            reason = f"gatewayd {st.to_version} not READY within {gate_s:.0f} s"
        else:
            reason = f"gatewayd {st.to_version} delivered no record within {gate_s:.0f} s"
        return self._revert(reason, restart=True)

    def _revert(self, reason: str, *, restart: bool) -> dict[str, Any]:
        st = self.state
        st.phase = "reverting"
        self._save()
        back = st.from_version
        if back is not None and self.layout.release(back).is_dir():
            self._point_current(back)
            log.warning("update.reverted", to_version=back, reason=reason)
            if restart:
                self.services.restart(UNIT)
        return self._finish("update.rolled_back", reason)

    def _prune(self) -> None:
        """Keep the package's tree, current, the previous one, and at most KEEP_OTA of ours."""
        keep = {self.current_version(), self.state.from_version}
        with contextlib.suppress(OSError):
            keep.add(Path(os.readlink(self.layout.opt / "updater")).name)
        ours = sorted(
            (p for p in self.layout.releases.iterdir() if (p / OTA_MARK).exists()),
            key=lambda p: p.stat().st_mtime,
        )
        for p in ours[:-KEEP_OTA] if len(ours) > KEEP_OTA else []:
            if p.name not in keep:
                shutil.rmtree(p, ignore_errors=True)


# --- files the daemon can touch: opened without following links, bounded ----------------------
def _open_dir_chain(base: Path, names: Sequence[str]) -> int:
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in names:
            if not name or "/" in name or name in (".", ".."):
                raise ReleaseInvalidError(f"bad inbox entry name {name[:40]!r}")
            nxt = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except OSError as exc:
        os.close(fd)
        raise ReleaseInvalidError(f"inbox entry unreadable: {exc.strerror}") from None
    return fd


def _copy_untrusted(dfd: int, name: str, dest: Path, cap: int) -> tuple[bytes, int, str]:
    """Copy a regular file (never a link, fifo or device) of at most ``cap`` bytes; return the
    first bytes (all of a small file), the size and the SHA-256."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dfd)
    except OSError as exc:
        raise ReleaseInvalidError(f"{name}: {exc.strerror}") from None
    digest, size, head = hashlib.sha256(), 0, bytearray()
    with os.fdopen(fd, "rb") as src, dest.open("xb") as out:
        if not stat.S_ISREG(os.fstat(src.fileno()).st_mode):
            raise ReleaseInvalidError(f"{name} is not a regular file")
        while chunk := src.read(1024 * 1024):
            size += len(chunk)
            if size > cap:
                raise ReleaseInvalidError(f"{name} is larger than {cap} bytes")
            digest.update(chunk)
            out.write(chunk)
            if len(head) < MAX_MANIFEST_BYTES:
                head += chunk[: MAX_MANIFEST_BYTES - len(head)]
    return bytes(head), size, digest.hexdigest()


def _remove_entry(inbox: Path, entry: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(inbox, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            shutil.rmtree(entry, dir_fd=fd)
        finally:
            os.close(fd)


def _clear_beacon(layout: UpdateLayout) -> None:
    """Remove the daemon's beacon; a failure is logged, never raised: the gate also checks the
    version and systemd's MainPID, and an updater that stops here would loop on its path unit."""
    try:
        dfd = _open_dir_chain(layout.daemon_state, ("updates",))
    except ReleaseInvalidError:
        return
    try:
        os.unlink("health.json", dir_fd=dfd)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("update.beacon_not_cleared", error=exc.strerror)
    finally:
        os.close(dfd)


def read_beacon(layout: UpdateLayout) -> dict[str, Any] | None:
    try:
        dfd = _open_dir_chain(layout.daemon_state, ("updates",))
    except ReleaseInvalidError:
        return None
    try:
        fd = os.open("health.json", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dfd)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return None
            data = json.loads(f.read(MAX_BEACON_BYTES + 1)[:MAX_BEACON_BYTES])
    except (OSError, ValueError):
        return None
    finally:
        os.close(dfd)
    return data if isinstance(data, dict) else None


def release_info(tree: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((tree / RELEASE_INFO).read_bytes()[:MAX_MANIFEST_BYTES])
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _unpack(artifact: Path, release: Release, dest: Path) -> None:
    unpack(artifact, release.compression, dest)
    info = release_info(dest)
    if info is None or info.get("version") != release.version or info.get("arch") != release.arch:
        raise ReleaseInvalidError(
            f"the tree's {RELEASE_INFO} does not name {release.version}/{release.arch}"
        )
    if not (dest / "bin" / "gatewayd").exists():
        raise ReleaseInvalidError("the release tree has no bin/gatewayd")


def _load_key(path: Path) -> ed25519.Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise UpdateError(f"release signing key {path} unusable: {exc}"[:200]) from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise UpdateError(f"release signing key {path} is not an Ed25519 public key")
    return key


def _load_updates_config(layout: UpdateLayout) -> updates_config.UpdatesConfig | None:
    try:
        return updates_config.load(layout.config)
    except GatewayError as exc:
        log.warning("update.config_unusable", error=exc.one_line())
        return None


def _stop_at_from_env(step: str) -> None:
    if os.environ.get(STOP_AT_ENV) == step:
        log.warning("update.test_stop", step=step)
        while True:  # the field test cuts the power now
            time.sleep(3600)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="homecare-gateway-updater",
        description="Install, switch and health-gate software releases (run by systemd as root).",
        epilog="example: homecare-gateway-updater recover   (at boot, before gatewayd)",
    )
    parser.add_argument("action", choices=("run", "recover", "status"))
    parser.add_argument("--root", type=Path, default=Path("/"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    structlog.configure(processors=[structlog.processors.JSONRenderer()])
    updater = Updater(UpdateLayout(args.root), Systemctl())
    try:
        if args.action == "recover":
            updater.recover(at_boot=True)
        elif args.action == "run":
            updater.run()
        print(json.dumps({"current": updater.current_version(), **updater.state.to_json()}))
    except (GatewayError, OSError, ValueError) as exc:
        print(f"homecare-gateway-updater: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
