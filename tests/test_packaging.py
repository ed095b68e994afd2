"""The Debian package: built from the repo by packaging/build-deb.sh, inspected, and installed,
upgraded and purged in a scratch root with ``dpkg --root`` (nothing on the host is touched).

Building takes 30-60 s (a virtualenv with cryptography and friends, compressed with xz), so the
package is built once per module. HCG_TEST_DEB=/path/to.deb inspects an existing build instead.
The maintainer scripts are also run on their own, with every tool they call replaced by a stub
that records its arguments: DPKG_ROOT confines them to a scratch root, and a private mount
namespace (unshare) stands in a "running systemd" (/run/systemd/system) and an /etc for the
start-or-not decision.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
NAME = "homecare-gateway"
BASE = Path("/opt/homecare-gateway")
with (REPO / "pyproject.toml").open("rb") as _f:
    # The A/B layout (gateway/updates): the package's venv is one release among others.
    PREFIX = BASE / "releases" / str(tomllib.load(_f)["project"]["version"])
UPDATE_UNITS = (
    "homecare-gateway-update.path",
    "homecare-gateway-update.service",
    "homecare-gateway-update-boot.service",
)
SCRIPTS = ("postinst", "prerm", "postrm")
# Tools the maintainer scripts may call that change system state; stubs stand in for them.
STUBBED = (
    "systemd-sysusers",
    "systemd-tmpfiles",
    "udevadm",
    "deb-systemd-helper",
    "deb-systemd-invoke",
    "systemctl",
    "userdel",
    "groupdel",
    "adduser",
    "addgroup",
)
PRIVATE_KEY_PEM = re.compile(
    rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----\s+[A-Za-z0-9+/=\s]{32,}-----END"
)


def _need(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: chown inside the scratch root, a private mount namespace")


def _run(argv: list[str], env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=600, env=env)


@dataclass(frozen=True)
class Package:
    deb: Path
    tree: Path  # dpkg-deb -x
    control: Path  # dpkg-deb -e
    contents: dict[str, str]  # path -> `dpkg-deb --contents` line


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Package:
    _need("dpkg-deb", "dpkg")
    out = tmp_path_factory.mktemp("dist")
    prebuilt = os.environ.get("HCG_TEST_DEB")
    if prebuilt:
        deb = Path(prebuilt)
    else:
        leftovers = {p for p in ("build", "homecare_gateway.egg-info") if (REPO / p).exists()}
        result = _run(
            ["bash", str(REPO / "packaging" / "build-deb.sh"), "--out", str(out)],
            env={**os.environ, "BUILD_PYTHON": sys.executable},
        )
        assert result.returncode == 0, result.stdout + result.stderr
        debs = sorted(out.glob("*.deb"))
        assert len(debs) == 1, debs
        deb = debs[0]
        after = {p for p in ("build", "homecare_gateway.egg-info") if (REPO / p).exists()}
        assert after == leftovers, "the build wrote into the repository"
    tree, control = out / "tree", out / "control"
    assert _run(["dpkg-deb", "-x", str(deb), str(tree)]).returncode == 0
    assert _run(["dpkg-deb", "-e", str(deb), str(control)]).returncode == 0
    listing = _run(["dpkg-deb", "--contents", str(deb)])
    assert listing.returncode == 0, listing.stderr
    contents = {}
    for line in listing.stdout.splitlines():
        path = line.split(None, 5)[5].split(" -> ")[0]
        contents[path.removeprefix(".").rstrip("/") or "/"] = line
    return Package(deb, tree, control, contents)


def _version() -> str:
    with (REPO / "pyproject.toml").open("rb") as f:
        version: str = tomllib.load(f)["project"]["version"]
    return version


def _field(package: Package, name: str) -> str:
    result = _run(["dpkg-deb", "-f", str(package.deb), name])
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


# --- what the package is ------------------------------------------------------------------------


def test_file_name_and_control_fields(package: Package) -> None:
    """Named <package>_<pyproject version>_<build arch>.deb; depends only on what runs it."""
    arch = _run(["dpkg", "--print-architecture"]).stdout.strip()
    assert package.deb.name == f"{NAME}_{_version()}_{arch}.deb"
    assert _field(package, "Package") == NAME
    assert _field(package, "Version") == _version()
    assert _field(package, "Architecture") == arch
    depends = [d.strip() for d in _field(package, "Depends").split(",")]
    python_dep = depends[0]
    assert re.fullmatch(r"python3\.(\d+)", python_dep)
    assert int(python_dep.split(".")[1]) >= 11
    assert depends[1:] == ["systemd | adduser"]
    assert "bluez" in _field(package, "Recommends")
    assert "mosquitto" not in _field(package, "Depends")


def test_expected_paths(package: Package) -> None:
    expected = [
        f"{PREFIX}/bin/gatewayd",
        f"{PREFIX}/bin/gatewayctl",
        f"{PREFIX}/pyvenv.cfg",
        f"{PREFIX}/release-info.json",
        f"{PREFIX}/bin/homecare-gateway-updater",
        "/lib/systemd/system/gatewayd.service",
        *(f"/lib/systemd/system/{u}" for u in UPDATE_UNITS),
        f"/usr/lib/sysusers.d/{NAME}.conf",
        f"/usr/lib/tmpfiles.d/{NAME}.conf",
        "/usr/lib/udev/rules.d/60-homecare-gateway.rules",
        f"/etc/dbus-1/system.d/{NAME}-bluez.conf",
        "/usr/share/polkit-1/rules.d/50-homecare-gateway.rules",
        f"/etc/{NAME}/gateway.toml.example",
        f"/usr/share/doc/{NAME}/README.systemd.md",
        f"/usr/share/doc/{NAME}/README.packaging.md",
        f"/usr/share/doc/{NAME}/copyright",
        f"/usr/share/doc/{NAME}/python-packages.txt",
    ]
    missing = [p for p in expected if p not in package.contents]
    assert not missing
    for command in ("gatewayd", "gatewayctl"):
        assert package.contents[f"/usr/bin/{command}"].endswith(
            f"-> {BASE}/current/bin/{command}"
        )
    # Enrolment writes the real configuration; the package must never own it.
    assert f"/etc/{NAME}/gateway.toml" not in package.contents
    assert all(" root/root " in line for line in package.contents.values())
    for unit in ("gatewayd.service", *UPDATE_UNITS):
        shipped = (package.tree / "lib/systemd/system" / unit).read_bytes()
        assert shipped == (REPO / "systemd" / unit).read_bytes()


def test_release_info_names_the_tree_and_its_outbox_schema(package: Package) -> None:
    """What the updater reads of a release it does not run: version, arch, schema facts."""
    import json  # noqa: PLC0415 - only here

    from buffer import schema_facts  # noqa: PLC0415

    info = json.loads((package.tree / PREFIX.relative_to("/") / "release-info.json").read_text())
    arch = _run(["dpkg", "--print-architecture"]).stdout.strip()
    assert info == {
        "version": _version(),
        "arch": arch,
        "outbox_schema": schema_facts.OUTBOX_SCHEMA,
        "outbox_min_reader": schema_facts.OUTBOX_MIN_READER,
    }


ROUTER_PACKAGES = ("gateway", "drivers", "buffer", "provisioning")


def test_only_the_router_is_shipped(package: Package) -> None:
    """The three worlds: the .deb carries the router's packages and nothing of the simulated home
    (rig/: simulated BlueZ, pty simulators, simulated devices, rig PKI) or the provider."""
    site = next(p for p in package.contents if p.endswith("/site-packages")) + "/"
    top = {p[len(site):].split("/")[0] for p in package.contents if p.startswith(site)}
    ours = {t for t in top if (REPO / t / "__init__.py").is_file()}
    assert ours == set(ROUTER_PACKAGES)
    modules = [p for p in package.contents if p.endswith(".py")]
    for stray in ("rig", "provider"):
        assert not any(p.startswith(f"{site}{stray}/") for p in modules)
    assert not any("devpki" in p or "/sim/" in p or "simulated" in p for p in modules)
    for script in (package.tree / str(PREFIX).lstrip("/") / "bin").iterdir():
        assert script.name != "homecare-provider"
    dist = next((package.tree / site.strip("/")).glob("homecare_gateway-*.dist-info"))
    entry_points = (dist / "entry_points.txt").read_text()
    assert "homecare_gateway.drivers" not in entry_points
    assert "rig." not in entry_points
    assert "provider." not in entry_points
    # Every router module the repository has is shipped (the filter took nothing of ours away).
    for name in ROUTER_PACKAGES:
        for source in (REPO / name).rglob("*.py"):
            assert f"{site}{source.relative_to(REPO)}" in package.contents, source


def test_no_secrets_or_databases_inside(package: Package) -> None:
    """No private key, key file or database is shipped - not even a test one from a wheel."""
    forbidden = re.compile(r"\.(key|db|db-wal|db-shm|sqlite3?|p12|pfx)$")
    assert not [p for p in package.contents if forbidden.search(p)]
    with_keys = [
        path
        for path in package.tree.rglob("*")
        if path.is_file() and not path.is_symlink() and PRIVATE_KEY_PEM.search(path.read_bytes())
    ]
    assert not with_keys


def test_conffiles_are_the_example_and_the_bluez_policy(package: Package) -> None:
    conffiles = (package.control / "conffiles").read_text(encoding="utf-8").split()
    assert conffiles == [
        f"/etc/{NAME}/gateway.toml.example",
        f"/etc/dbus-1/system.d/{NAME}-bluez.conf",
    ]


def test_venv_is_relocated_to_its_final_path(package: Package) -> None:
    """Shebangs, pyvenv.cfg and byte-code name /opt/homecare-gateway, never the build directory,
    and the interpreter is the distribution's versioned one."""
    venv = package.tree / PREFIX.relative_to("/")
    for script in ("gatewayd", "gatewayctl"):
        first = (venv / "bin" / script).read_text(encoding="utf-8").splitlines()[0]
        assert first == f"#!{PREFIX}/bin/python"
    target = os.readlink(venv / "bin" / "python3")
    assert os.readlink(venv / "bin" / target) == f"/usr/bin/{target}"
    assert "hcg-deb." not in (venv / "pyvenv.cfg").read_text(encoding="utf-8")
    leaks = _run(["grep", "-rlF", "hcg-deb.", str(venv)])
    assert leaks.stdout == ""


# --- the shipped virtualenv works, offline -------------------------------------------------------


def _venv_python(package: Package) -> Path:
    # Python finds the venv from its own path (pyvenv.cfg beside bin/), wherever the tree is.
    return package.tree / PREFIX.relative_to("/") / "bin" / "python"


def _concrete_example(package: Package, directory: Path) -> Path:
    """The shipped example with the files it names created (empty) next to it."""
    config = directory / "gateway.toml"
    shutil.copyfile(package.tree / f"etc/{NAME}/gateway.toml.example", config)
    for rel in (
        "keys/identity.key",
        "provider/hpke.pub",
        "tls/ca.crt",
        "tls/client.crt",
        "tls/client.key",
    ):
        (directory / rel).parent.mkdir(parents=True, exist_ok=True)
        (directory / rel).touch()
    return config


def test_shipped_daemon_runs_and_accepts_the_example_config(
    package: Package, tmp_path: Path
) -> None:
    """The packaged venv imports and runs with no network and no pip, uses its precompiled byte-
    code without rewriting it, and every key in the example configuration is a valid one."""
    python = _venv_python(package)
    venv = python.parent.parent
    before = sorted(p.name for p in venv.rglob("*"))
    env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"}
    version = _run([str(python), "-I", "-m", "gateway.daemon.main", "--version"], env=env)
    assert (version.returncode, version.stdout.strip()) == (0, f"gatewayd {_version()}")
    config = _concrete_example(package, tmp_path)
    check = _run(
        [str(python), "-I", "-m", "gateway.daemon.main", "--config", str(config), "--check-config"],
        env=env,
    )
    assert check.returncode == 0, check.stderr
    assert sorted(p.name for p in venv.rglob("*")) == before, "byte-code was rewritten"


# --- maintainer scripts ---------------------------------------------------------------------------


@pytest.mark.parametrize("script", SCRIPTS)
def test_maintainer_script_syntax(package: Package, script: str) -> None:
    path = package.control / script
    assert path.read_text(encoding="utf-8").startswith("#!/bin/sh\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    for shell in ("sh", "bash"):
        result = _run([shell, "-n", str(path)])
        assert result.returncode == 0, f"{shell} -n {script}: {result.stderr}"


def test_scripts_pass_shellcheck(package: Package) -> None:
    """shellcheck (Debian package: shellcheck) on the build script and the maintainer scripts."""
    _need("shellcheck")
    scripts = [str(package.control / s) for s in SCRIPTS]
    result = _run(["shellcheck", "-s", "sh", *scripts])
    assert result.returncode == 0, result.stdout
    result = _run(["shellcheck", str(REPO / "packaging" / "build-deb.sh")])
    assert result.returncode == 0, result.stdout


def _stubs(directory: Path, log: Path) -> Path:
    """Executables that only record how they were called (was-enabled: yes, a first install)."""
    directory.mkdir()
    for tool in STUBBED:
        stub = directory / tool
        stub.write_text(f'#!/bin/sh\necho "{tool} $*" >> "{log}"\nexit 0\n', encoding="utf-8")
        stub.chmod(0o755)
    return directory


def _run_script(
    package: Package,
    tmp_path: Path,
    script: str,
    *args: str,
    env: Mapping[str, str] | None = None,
    namespace_setup: str | None = None,
) -> list[str]:
    log = tmp_path / "calls.log"
    log.touch()
    stubs = _stubs(tmp_path / "stubs", log)
    path = str(package.control / script)
    base_env = {"PATH": f"{stubs}:/usr/sbin:/usr/bin:/sbin:/bin", **(env or {})}
    if namespace_setup is None:
        argv = ["sh", path, *args]
    else:
        argv = [
            "unshare", "--mount", "--propagation", "private",
            "sh", "-c", f'{namespace_setup} && exec sh "$0" "$@"', path, *args,
        ]  # fmt: skip
    result = _run(argv, env=base_env)
    assert result.returncode == 0, result.stdout + result.stderr
    return log.read_text(encoding="utf-8").splitlines()


def _with_running_systemd(package: Package, tmp_path: Path, *, enrolled: bool) -> list[str]:
    """postinst configure as on a live router: /run/systemd/system exists (a tmpfs /run in a
    private mount namespace) and /etc is a scratch directory, with or without gateway.toml."""
    _need_root()
    _need("unshare")
    probe = _run(["unshare", "--mount", "true"])
    if probe.returncode != 0:
        pytest.skip(f"no private mount namespace here (unshare: {probe.stderr.strip()})")
    etc = tmp_path / "etc"
    (etc / NAME).mkdir(parents=True)
    if enrolled:
        (etc / NAME / "gateway.toml").write_text("# written by enrolment\n", encoding="utf-8")
    setup = (
        "mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/system /run/udev"
        f' && mount --bind "{etc}" /etc'
    )
    return _run_script(package, tmp_path, "postinst", "configure", namespace_setup=setup)


def test_postinst_does_not_start_without_configuration(package: Package, tmp_path: Path) -> None:
    calls = _with_running_systemd(package, tmp_path, enrolled=False)
    assert f"systemd-sysusers {NAME}.conf" in calls
    assert f"systemd-tmpfiles --create {NAME}.conf" in calls
    assert "udevadm trigger --action=change --subsystem-match=tty" in calls
    assert "deb-systemd-helper enable gatewayd.service" in calls
    # Only the updater's watch starts (harmless before enrolment); never the daemon.
    started = [c for c in calls if re.search(r"\b(start|restart)\b", c)]
    assert started == ["deb-systemd-invoke start homecare-gateway-update.path"], calls


def test_postinst_starts_an_enrolled_router(package: Package, tmp_path: Path) -> None:
    calls = _with_running_systemd(package, tmp_path, enrolled=True)
    assert "deb-systemd-invoke restart gatewayd.service" in calls


def test_postinst_in_an_image_build_enables_but_never_starts(
    package: Package, tmp_path: Path
) -> None:
    """DPKG_ROOT (an image being assembled): every tool is pointed at the image, nothing is
    started, and udev (the build host's) is left alone."""
    root = tmp_path / "image"
    (root / "etc" / NAME).mkdir(parents=True)
    (root / "etc" / NAME / "gateway.toml").touch()
    calls = _run_script(package, tmp_path, "postinst", "configure", env={"DPKG_ROOT": str(root)})
    assert f"systemd-sysusers --root={root} {NAME}.conf" in calls
    assert f"systemd-tmpfiles --create --root={root} {NAME}.conf" in calls
    assert "deb-systemd-helper enable gatewayd.service" in calls
    assert not [c for c in calls if c.startswith(("udevadm", "deb-systemd-invoke", "systemctl"))]


def _populated_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    for rel, content in {
        f"etc/{NAME}/gateway.toml": "# enrolled\n",
        f"etc/{NAME}/keys/identity.key": "secret\n",
        f"var/lib/{NAME}/outbox.db": "readings\n",
        f"var/log/{NAME}/export.json": "{}\n",
        f"opt/{NAME}/bin/gatewayd": "#!/bin/sh\n",
        "etc/passwd": f"root:x:0:0::/root:/bin/sh\n{NAME}:x:998:998::/:/usr/sbin/nologin\n",
        "etc/group": f"root:x:0:\n{NAME}:x:998:\nbluetooth:x:999:\n",
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(content, encoding="utf-8")
    return root


def test_postrm_purge_removes_state_configuration_logs_and_user(
    package: Package, tmp_path: Path
) -> None:
    root = _populated_root(tmp_path)
    calls = _run_script(package, tmp_path, "postrm", "purge", env={"DPKG_ROOT": str(root)})
    for rel in (f"etc/{NAME}", f"var/lib/{NAME}", f"var/log/{NAME}", f"opt/{NAME}"):
        assert not (root / rel).exists(), rel
    assert f"userdel --root {root} {NAME}" in calls
    assert "deb-systemd-helper purge gatewayd.service" in calls


@pytest.mark.parametrize("action", ["upgrade", "remove"])
def test_postrm_upgrade_and_remove_keep_state_and_configuration(
    package: Package, tmp_path: Path, action: str
) -> None:
    root = _populated_root(tmp_path)
    calls = _run_script(package, tmp_path, "postrm", action, env={"DPKG_ROOT": str(root)})
    assert (root / f"var/lib/{NAME}/outbox.db").read_text(encoding="utf-8") == "readings\n"
    assert (root / f"etc/{NAME}/keys/identity.key").exists()
    assert not [c for c in calls if c.startswith(("userdel", "groupdel"))]


# --- the real thing, in a scratch root ----------------------------------------------------------


def _dpkg(root: Path, *args: str) -> None:
    result = _run(
        ["dpkg", f"--root={root}", "--force-script-chrootless", "--force-depends", *args],
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_install_upgrade_purge_in_a_scratch_root(package: Package, tmp_path: Path) -> None:
    """dpkg --root with chrootless scripts (how image builders install): the real sysusers,
    tmpfiles and deb-systemd-helper act on the scratch root only. Installing creates the user,
    the directories and the enablement link; reinstalling (the upgrade path) keeps state and
    configuration; purge leaves nothing of ours. Dependencies are forced: the scratch root has
    no Python, the shipped venv is run through the host's."""
    _need_root()
    _need("systemd-sysusers", "systemd-tmpfiles", "deb-systemd-helper", "userdel")
    root = tmp_path / "root"
    for rel in ("var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers", "var/log"):
        (root / rel).mkdir(parents=True)
    for rel in ("var/lib/dpkg/status", "var/lib/dpkg/available"):
        (root / rel).touch()

    _dpkg(root, "--install", str(package.deb))
    passwd = (root / "etc/passwd").read_text(encoding="utf-8")
    match = re.search(rf"^{NAME}:x:(\d+):(\d+):", passwd, re.MULTILINE)
    assert match, passwd
    uid = int(match.group(1))
    state = root / f"var/lib/{NAME}"
    assert (state.stat().st_uid, stat.S_IMODE(state.stat().st_mode)) == (uid, 0o750)
    config_dir = root / f"etc/{NAME}"
    assert (config_dir.stat().st_uid, config_dir.stat().st_gid) == (0, int(match.group(2)))
    wants = root / "etc/systemd/system/multi-user.target.wants/gatewayd.service"
    assert os.readlink(wants) == "/lib/systemd/system/gatewayd.service"
    # A/B layout: current (what runs) and updater (what the updater runs from) name this release.
    for link in ("current", "updater"):
        assert os.readlink(root / BASE.relative_to("/") / link) == f"releases/{_version()}"
    for unit in ("homecare-gateway-update.path", "homecare-gateway-update-boot.service"):
        assert (root / "etc/systemd/system/multi-user.target.wants" / unit).is_symlink(), unit

    (state / "outbox.db").write_text("undelivered readings\n", encoding="utf-8")
    (config_dir / "gateway.toml").write_text("# enrolled\n", encoding="utf-8")
    _dpkg(root, "--install", str(package.deb))  # same version again: prerm/postrm "upgrade"
    assert (state / "outbox.db").read_text(encoding="utf-8") == "undelivered readings\n"
    assert (config_dir / "gateway.toml").exists()
    passwd = (root / "etc/passwd").read_text(encoding="utf-8")
    assert re.search(rf"^{NAME}:x:{uid}:", passwd, re.MULTILINE)  # same uid owns the outbox

    _dpkg(root, "--purge", NAME)
    ours = [
        str(p.relative_to(root))
        for p in root.rglob("*")
        if NAME in p.name and not str(p.relative_to(root)).startswith("var/lib/dpkg")
    ]
    assert ours == []
    assert not wants.is_symlink()
    # The account is gone; the "-" backups userdel leaves behind are the system's, not ours.
    for db in ("passwd", "group", "shadow", "gshadow"):
        text = (root / "etc" / db).read_text(encoding="utf-8")
        assert not re.search(rf"^{NAME}:", text, re.MULTILINE), db
    assert "bluetooth:" in (root / "etc/group").read_text(encoding="utf-8")  # shared with bluez
