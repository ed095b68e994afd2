"""The provider's half of a field run, on the host: rig PKI, mosquitto on loopback, a verifier.

The container shares the host's network namespace, so a daemon inside reaches this broker on
127.0.0.1. :func:`install_enrolment` writes a static configuration by hand (keys in
``/etc/homecare-gateway``, as a rig or a previous package version runs); :func:`install_profile`
installs the provider profile a fresh router enrols with (test_enrol_fresh.py).

Only this module imports the repository's rig code, so a move of those modules is one edit here.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from field.nspawn import Container, wait_until

REPO = Path(__file__).resolve().parent.parent


def _first_module(*names: str) -> ModuleType:
    """The first of ``names`` that imports: the rig and provider code is moving out of gateway/
    and drivers/ (rig/, provider/); this tier works before and after that move."""
    for name in names:
        if importlib.util.find_spec(name.rpartition(".")[0] or name) is None:
            continue
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError:
            continue
    raise ModuleNotFoundError(f"none of {', '.join(names)} can be imported")


_broker = _first_module("provider.broker", "gateway.provider.broker")
_pki = _first_module("rig.pki", "provisioning.devpki")
PROVIDER_SERVICE = _first_module("provider.service", "gateway.provider.service").__name__
MosquittoBroker: Any = _broker.MosquittoBroker
create_rig_pki: Any = _pki.create_rig_pki
_est = _first_module("provider.est")
EstAuthority: Any = _est.EstAuthority
EstService: Any = _est.EstService

CONFIG_DIR = "/etc/homecare-gateway"
SIM_ADDRESS = "C0:FF:EE:00:F1:01"
SERIAL_LINK = "/run/field-dev/spo2"
SERIAL_ID = "501234567"
SERIAL_TABLE = (
    f'[[serial_devices]]\nkind = "nonin"\nname = "spo2"\npath = "{SERIAL_LINK}"\n'
    f'serial = "{SERIAL_ID}"\ninterval_s = 2\n'
)


@dataclass
class Reading:
    gateway: str
    seq: int
    device: str


class HostProvider:
    """mosquitto with mutual TLS on loopback, and ``homecare-provider --json`` subscribed to it."""

    def __init__(self, base: Path, gateway_ids: list[str]) -> None:
        self.base = base
        self.gateway_ids = gateway_ids
        self.pki: Any = create_rig_pki(base / "pki", gateway_ids=gateway_ids)
        self.broker = MosquittoBroker(self.pki, base / "broker", host="127.0.0.1")
        self.out_path = base / "provider.jsonl"
        self._proc: subprocess.Popen[bytes] | None = None
        self._broker_started = False

    def start_broker(self) -> None:
        if not self._broker_started:
            self.broker.start()
            self._broker_started = True

    def start(self, keys: dict[str, Path] | None = None) -> None:
        """Broker (if not yet) and verifier; ``keys`` are record-signing keys of gateways that
        enrolled (made their own keys), beside the rig PKI's ``gateway_ids``."""
        self.start_broker()
        known = {gid: self.pki.gateway(gid).identity_pub for gid in self.gateway_ids}
        gateways = [
            arg for gid, pub in {**known, **(keys or {})}.items()
            for arg in ("--gateway", f"{gid}={pub}")
        ]  # fmt: skip
        with self.out_path.open("ab") as out:
            self._proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [
                    sys.executable, "-m", PROVIDER_SERVICE, "--json",
                    "--host", self.broker.host, "--port", str(self.broker.port),
                    "--ca", str(self.pki.ca_cert), "--cert", str(self.pki.provider_cert),
                    "--key", str(self.pki.provider_key), "--hpke-key", str(self.pki.hpke_key),
                    *gateways,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        # Its session is persistent (clean_start=False) once it exists: wait until it connected.
        log = self.broker.log_path
        deadline = time.monotonic() + 30

        def broker_log() -> str:
            return log.read_text(errors="replace") if log.exists() else ""

        while "as provider-verifier" not in broker_log():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the provider did not connect to the broker:\n{self.output()}")
            time.sleep(0.1)

    def readings(self, gateway_id: str | None = None) -> list[Reading]:
        """Every verified reading the provider printed so far (one JSON object a line)."""
        found: list[Reading] = []
        if not self.out_path.exists():
            return found
        for line in self.out_path.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "seq" in obj and "gateway" in obj and "device" in obj:
                reading = Reading(str(obj["gateway"]), int(obj["seq"]), str(obj["device"]))
                if gateway_id is None or reading.gateway == gateway_id:
                    found.append(reading)
        return found

    def output(self) -> str:
        return self.out_path.read_text(errors="replace") if self.out_path.exists() else ""

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)
        self.broker.stop()
        self._broker_started = False


def gateway_toml(
    gateway_id: str, port: int, *, interval_s: float = 1.0, extra_uplink: str = ""
) -> str:
    """A configuration as enrolment would leave it: relative paths into the config directory."""
    return (
        f'[gateway]\nid = "{gateway_id}"\nepisode = "ep-field"\n'
        f'state_dir = "/var/lib/homecare-gateway"\nlog_level = "debug"\n\n'
        f'[identity]\nsigning_key = "keys/identity.key"\n\n'
        f'[provider]\nhpke_public_key = "provider/hpke.pub"\n\n'
        f'[uplink]\nhost = "127.0.0.1"\nport = {port}\nca_file = "tls/ca.crt"\n'
        f'cert_file = "tls/client.crt"\nkey_file = "tls/client.key"\nkeepalive_s = 5\n'
        f"{extra_uplink}\n"
        f'[[sim_devices]]\nkind = "thermometer"\naddress = "{SIM_ADDRESS}"\n'
        f"interval_s = {interval_s}\n"
    )


# Before the rig moved out, simulated devices were part of the router's packages
# (drivers/simulated.py); after, they are an entry point the .deb does not carry (gatewayd
# --check-config and the start both refuse [[sim_devices]] then).
_SIM_CHECK = (
    "import importlib.metadata as m, importlib.util as u, sys; "
    "sys.exit(0 if u.find_spec('drivers.simulated') or "
    "m.entry_points(group='homecare_gateway.drivers', name='simulated') else 1)"
)


def package_has_sim_devices(c: Container) -> bool:
    return c.run([package_python(c), "-c", _SIM_CHECK], check=False).returncode == 0


def install_enrolment(
    c: Container, provider: HostProvider, gateway_id: str, toml: str | None = None
) -> None:
    """Put keys, certificates and gateway.toml where enrolment would: root:homecare-gateway 0640."""
    gw = provider.pki.gateway(gateway_id)
    files = {
        "keys/identity.key": gw.identity_key,
        "tls/ca.crt": provider.pki.ca_cert,
        "tls/client.crt": gw.client_cert,
        "tls/client.key": gw.client_key,
        "provider/hpke.pub": provider.pki.hpke_pub,
    }
    for rel, src in files.items():
        c.write_file(f"{CONFIG_DIR}/{rel}", src.read_text(), 0o640, "root:homecare-gateway")
    c.sh(f"chown root:homecare-gateway {CONFIG_DIR}/keys {CONFIG_DIR}/tls {CONFIG_DIR}/provider"
         f" && chmod 0750 {CONFIG_DIR}/keys {CONFIG_DIR}/tls {CONFIG_DIR}/provider")
    body = toml if toml is not None else gateway_toml(gateway_id, provider.broker.port)
    c.write_file(f"{CONFIG_DIR}/gateway.toml", body, 0o640, "root:homecare-gateway")
    if "[[sim_devices]]" not in body:
        return
    if package_has_sim_devices(c):
        return
    # A package without the simulated devices (they moved to rig/, which the .deb does not
    # carry): the same test with a pty oximeter simulator instead.
    start_serial_sim(c, "nonin", SERIAL_LINK, "--scenario")
    body = body.split("[[sim_devices]]")[0] + SERIAL_TABLE
    c.write_file(f"{CONFIG_DIR}/gateway.toml", body, 0o640, "root:homecare-gateway")


# The pty device simulators: shipped inside the package before the rig moved out of drivers/
# (drivers.serial.sim), copied into the container from the source tree after (rig/serial).
SIM_SRC = "/usr/local/lib/field-rig"
PACKAGE_PYTHON = "/opt/homecare-gateway/current/bin/python"
# Before the A/B layout (software updates) the venv was /opt/homecare-gateway itself: the
# previous version test_package_upgrade.py starts from still has it there.
_FLAT_PYTHON = "/opt/homecare-gateway/bin/python"


def package_python(c: Container) -> str:
    """The installed package's interpreter, in whichever layout that package has."""
    if (c.root / "opt/homecare-gateway/current").is_symlink():
        return PACKAGE_PYTHON
    return _FLAT_PYTHON


def start_serial_sim(c: Container, kind: str, link: str, *args: str) -> str:
    """Start a pty device simulator as a transient unit of the container's systemd, running as
    the service user (so the daemon may open the pty it creates); returns the unit name."""
    env: list[str] = []
    if (REPO / "rig" / "serial").is_dir():
        module = "rig.serial"
        target = c.root / SIM_SRC.lstrip("/")
        if not (target / "rig").exists():
            shutil.copytree(REPO / "rig", target / "rig",
                            ignore=shutil.ignore_patterns("__pycache__"))
        env = ["-E", f"PYTHONPATH={SIM_SRC}"]
    else:
        module = "drivers.serial.sim"
    name = link.rsplit("/", 1)[-1]
    unit = f"field-sim-{name}"
    state = c.run(["systemctl", "is-active", f"{unit}.service"], check=False).stdout.strip()
    if state == "active":
        return f"{unit}.service"
    c.run([
        "systemd-run", f"--unit={unit}", "-p", "User=homecare-gateway",
        "-p", "RuntimeDirectory=field-dev", "-p", "RuntimeDirectoryPreserve=yes", *env,
        package_python(c), "-m", module, kind, "--link", link, *args,
    ])  # fmt: skip
    wait_until(lambda: c.run(["test", "-e", link], check=False).returncode == 0, 30,
               f"the {kind} simulator's pty at {link}")
    return f"{unit}.service"


PROFILE_DIR = f"{CONFIG_DIR}/profile"
PROFILE_PACKAGE = "homecare-provider-profile-field"


def install_profile(
    c: Container, est_url: str, est_ca: Path, bundle_signing_pub: Path, workdir: Path
) -> None:
    """The care provider's profile package, built as packaging/README.md shows and installed by
    apt: provider.toml and the public files it names, root-owned, world-readable."""
    stage = workdir / PROFILE_PACKAGE
    (stage / "DEBIAN").mkdir(parents=True)
    etc = stage / CONFIG_DIR.lstrip("/")
    (etc / "profile").mkdir(parents=True)
    (etc / "provider.toml").write_text(
        "# The care provider's profile (field test provider)\n"
        f'[provisioning]\nest_url = "{est_url}"\nest_ca_file = "profile/est-ca.crt"\n'
        'bundle_signing_key = "profile/bundle-signing.pub"\nauth = "bearer"\n'
    )
    shutil.copyfile(est_ca, etc / "profile" / "est-ca.crt")
    shutil.copyfile(bundle_signing_pub, etc / "profile" / "bundle-signing.pub")
    for f in (etc / "provider.toml", etc / "profile" / "est-ca.crt",
              etc / "profile" / "bundle-signing.pub"):  # fmt: skip
        f.chmod(0o644)
    (stage / "DEBIAN" / "control").write_text(
        f"Package: {PROFILE_PACKAGE}\nVersion: 1\nArchitecture: all\n"
        "Maintainer: Field Test Provider <it@provider.invalid>\nEnhances: homecare-gateway\n"
        "Description: homecare-gateway provider profile for the field tests\n"
    )
    (stage / "DEBIAN" / "conffiles").write_text(f"{CONFIG_DIR}/provider.toml\n")
    deb = workdir / f"{PROFILE_PACKAGE}_1_all.deb"
    subprocess.run(  # noqa: S603 - dpkg-deb on our own staging directory
        ["dpkg-deb", "--root-owner-group", "--build", str(stage), str(deb)],  # noqa: S607
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    c.copy_in(deb, f"/root/{deb.name}")
    c.run(["apt-get", "install", "-y", f"/root/{deb.name}"], timeout_s=300)
