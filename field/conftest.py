"""Fixtures of the field tier: cached Debian roots, the .deb per architecture, booted containers.

Run by ``make field`` (never by ``make test``: pyproject's testpaths is ``tests``). Everything
here needs root. What the machine cannot do (no root, no nspawn, no qemu for a foreign
architecture) is a *skip with its reason*; ``make field`` prints those reasons, and with
``FIELD_REQUIRED=1`` a skip fails the run instead.

Environment: ``FIELD_ARCHES`` (default ``amd64,arm64``), ``FIELD_KEEP=1`` keeps each run's
container directory under ``field/report/runs``, ``FIELD_DEB_<ARCH>`` uses a prebuilt .deb.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from field.hostrig import HostProvider
from field.nspawn import Container, booted

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
REPORT = HERE / "report"
ARCHES = [a for a in os.environ.get("FIELD_ARCHES", "amd64,arm64").split(",") if a]
HOST_ARCH = subprocess.run(
    ["dpkg", "--print-architecture"], capture_output=True, text=True, check=False  # noqa: S607
).stdout.strip()
TIMINGS: dict[str, float] = {}
COUNTS: dict[str, int] = {}  # facts that are not durations
EXERCISED: set[str] = set()  # architectures whose container actually booted


UPGRADE_GATEWAY = "gw-field-upgrade"  # test_package_upgrade.py's router
UPDATE_GATEWAY = "gw-field-update"  # test_release_updates.py's router
OFFER_GATEWAY = "gw-field-offer"  # test_update_offer.py's router
# The previous package version the upgrade starts from: the first commit with the field tier
# on main (same layout, static configuration). FIELD_PREVIOUS_REF names another commit.
PREVIOUS_REF = os.environ.get("FIELD_PREVIOUS_REF", "e215172")
PREVIOUS_VERSION = "0.0.1"  # below any version this tree builds, so apt sees an upgrade


def previous_deb(arch: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package as built from PREVIOUS_REF (git archive: no worktree, nothing in .git)."""
    require(arch)
    started = time.monotonic()
    src = tmp_path_factory.mktemp("previous-src")
    archive = subprocess.run(  # noqa: S603 - git on our own repository
        ["git", "-C", str(REPO), "archive", "--format=tar", PREVIOUS_REF],  # noqa: S607
        capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    if archive.returncode != 0:
        pytest.fail(f"git archive {PREVIOUS_REF}: {archive.stderr.decode()[-500:]}")
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive.stdout, check=True, timeout=120)  # noqa: S603, S607
    pyproject = src / "pyproject.toml"
    text = pyproject.read_text()
    pyproject.write_text(
        re.sub(r'^version = "[^"]+"', f'version = "{PREVIOUS_VERSION}"', text, count=1,
               flags=re.MULTILINE)
    )  # fmt: skip
    out = tmp_path_factory.mktemp(f"dist-previous-{arch}")
    env = {**os.environ, "BUILD_PYTHON": os.environ.get("FIELD_BUILD_PYTHON", sys.executable)}
    proc = subprocess.run(  # noqa: S603 - the previous version's own build script
        [str(src / "packaging" / "build-deb.sh"), "--arch", arch, "--out", str(out)],
        capture_output=True, text=True, timeout=900, check=False, env=env,
    )  # fmt: skip
    if proc.returncode != 0:
        pytest.fail(f"building {PREVIOUS_REF} failed:\n{proc.stderr[-3000:]}")
    timed(f"deb build {arch} previous ({PREVIOUS_REF})", started)
    debs = sorted(out.glob(f"homecare-gateway_{PREVIOUS_VERSION}_{arch}.deb"))
    assert debs, f"no {PREVIOUS_VERSION} .deb in {out}"
    return debs[-1]


def release_deb(arch: str, version: str, out_dir: Path) -> Path:
    """The package of this tree built as ``version`` (VERSION_OVERRIDE): a newer release."""
    require(arch)
    started = time.monotonic()
    env = {**os.environ, "BUILD_PYTHON": os.environ.get("FIELD_BUILD_PYTHON", sys.executable),
           "VERSION_OVERRIDE": version}  # fmt: skip
    proc = subprocess.run(  # noqa: S603 - our own build script
        [str(REPO / "packaging" / "build-deb.sh"), "--arch", arch, "--out", str(out_dir)],
        capture_output=True, text=True, timeout=900, check=False, env=env,
    )  # fmt: skip
    if proc.returncode != 0:
        pytest.fail(f"building {version} failed:\n{proc.stderr[-3000:]}")
    timed(f"deb build {arch} {version}", started)
    return out_dir / f"homecare-gateway_{version}_{arch}.deb"


def gateway_id(arch: str) -> str:
    return f"gw-field-{arch}"


def timed(name: str, started: float) -> None:
    TIMINGS[name] = round(time.monotonic() - started, 1)


def _script(*argv: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own scripts
        list(argv), capture_output=True, text=True, timeout=timeout_s, check=False
    )


_SKIPS: dict[str, str | None] = {}


def unavailable(arch: str) -> str | None:
    """Why this machine cannot run the field tier for ``arch``; None when it can."""
    if arch in _SKIPS:
        return _SKIPS[arch]
    reason: str | None = None
    if sys.platform != "linux" or os.geteuid() != 0:
        reason = "needs root on Linux (systemd-nspawn, overlay mounts, binfmt_misc)"
    elif not Path("/sys/fs/cgroup").is_dir():
        reason = "no /sys/fs/cgroup: systemd cannot run as PID 1 in a container here"
    else:
        proc = _script(str(HERE / "setup-host.sh"), arch, timeout_s=600)
        if proc.returncode != 0:
            reason = f"cannot install the host tools: {proc.stderr.strip()[-300:]}"
        elif arch != HOST_ARCH:
            proc = _script(str(HERE / "binfmt.sh"), arch, timeout_s=60)
            if proc.returncode != 0:
                reason = f"cannot run {arch} binaries here (qemu-user/binfmt_misc): " + (
                    proc.stderr.strip()[-300:]
                )
    _SKIPS[arch] = reason
    return reason


def require(arch: str) -> None:
    if arch not in ARCHES:
        pytest.skip(f"{arch}: not in FIELD_ARCHES={','.join(ARCHES)}")
    reason = unavailable(arch)
    if reason is None:
        return
    if os.environ.get("FIELD_REQUIRED") == "1":
        pytest.fail(f"{arch}: {reason} (FIELD_REQUIRED=1)")
    pytest.skip(f"{arch}: {reason}")


@pytest.fixture(scope="session")
def report_dir() -> Path:
    REPORT.mkdir(parents=True, exist_ok=True)
    return REPORT


_ROOTS: dict[str, Path] = {}
_DEBS: dict[str, Path] = {}


def root_for(arch: str) -> Path:
    """The cached root for ``arch`` (built on first use; minutes when cold)."""
    if arch not in _ROOTS:
        require(arch)
        started = time.monotonic()
        proc = _script(str(HERE / "mkroot.sh"), "--arch", arch, timeout_s=1500)
        if proc.returncode != 0:
            pytest.fail(f"building the {arch} root failed:\n{proc.stderr[-3000:]}")
        timed(f"root {arch}", started)
        _ROOTS[arch] = Path(proc.stdout.strip().splitlines()[-1])
    return _ROOTS[arch]


def deb_for(arch: str, out_dir: Path) -> Path:
    """The package built from this tree for ``arch`` (once per session)."""
    if arch in _DEBS:
        return _DEBS[arch]
    prebuilt = os.environ.get(f"FIELD_DEB_{arch.upper()}")
    if prebuilt:
        _DEBS[arch] = Path(prebuilt)
        return _DEBS[arch]
    started = time.monotonic()
    build_python = os.environ.get("FIELD_BUILD_PYTHON", sys.executable)
    env = {**os.environ, "BUILD_PYTHON": build_python}
    proc = subprocess.run(  # noqa: S603 - our own build script
        [str(REPO / "packaging" / "build-deb.sh"), "--arch", arch, "--out", str(out_dir)],
        capture_output=True, text=True, timeout=900, check=False, env=env,
    )  # fmt: skip
    if proc.returncode != 0:
        pytest.fail(f"packaging/build-deb.sh --arch {arch} failed:\n{proc.stderr[-3000:]}")
    timed(f"deb build {arch}", started)
    debs = sorted(out_dir.glob(f"homecare-gateway_*_{arch}.deb"))
    assert debs, f"no {arch} .deb in {out_dir}"
    _DEBS[arch] = debs[-1]
    return _DEBS[arch]


@pytest.fixture(scope="session")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostProvider]:
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        subprocess.run(["bash", str(REPO / "scripts" / "install-sysdeps.sh")], check=False)  # noqa: S603, S607
    gateways = [gateway_id(a) for a in ARCHES] + [UPGRADE_GATEWAY, UPDATE_GATEWAY, OFFER_GATEWAY]
    prov = HostProvider(tmp_path_factory.mktemp("provider"), gateways)
    try:
        prov.start()
        yield prov
    finally:
        prov.stop()


def boot_installed(
    arch: str, tmp_path_factory: pytest.TempPathFactory, name: str, deb: Path | None = None
) -> Iterator[Container]:
    """A fresh container of ``arch`` with the package (``deb``, by default the one built from
    this tree) installed by apt, as on a new router."""
    template = root_for(arch)
    deb = deb or deb_for(arch, tmp_path_factory.mktemp(f"dist-{arch}"))
    keep = os.environ.get("FIELD_KEEP") == "1"
    workdir = (
        REPORT / "runs" / f"{name}-{int(time.time())}"
        if keep
        else Path(tmp_path_factory.mktemp(f"nspawn-{name}"))
    )
    started = time.monotonic()
    with booted(template, workdir, arch=arch, keep=keep) as c:
        EXERCISED.add(arch)
        TIMINGS.setdefault(f"boot {arch}", round(c.boot_s, 1))
        c.copy_in(deb, f"/root/{deb.name}")
        t = time.monotonic()
        c.run(
            ["apt-get", "install", "-y", f"/root/{deb.name}"],
            timeout_s=600,
        )
        timed(f"apt install {arch}", t)
        try:
            yield c
        finally:
            (REPORT / f"commands-{name}.log").write_text("\n".join(c.log) + "\n")
            journal = c.journal(lines=3000, output="short-precise")
            (REPORT / f"journal-{name}.log").write_text(journal)
    timed(f"container {name} total", started)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    REPORT.mkdir(parents=True, exist_ok=True)
    for arch, reason in _SKIPS.items():
        if reason:
            terminalreporter.write_line(f"field: {arch} skipped: {reason}")
    for name, seconds in TIMINGS.items():
        terminalreporter.write_line(f"field timing: {name}: {seconds} s")
    for name, count in COUNTS.items():
        terminalreporter.write_line(f"field count: {name}: {count}")
    (REPORT / "timings.json").write_text(
        json.dumps({"seconds": TIMINGS, "counts": COUNTS}, indent=2) + "\n"
    )
    (REPORT / "arches.txt").write_text(",".join(a for a in ARCHES if a in EXERCISED) + "\n")
