"""The simulated rig: every part of a real rig replaced by a real piece of software.

- provider: throwaway PKI, mosquitto with mTLS + ACL and the verifier (tests.integration.rig),
  in a "provider" network namespace joined to the gateway's "home" namespace only by a real
  WireGuard tunnel (tests.integration.netns, names prefixed ``hil``);
- gatewayd: the real daemon as a process in the home namespace;
- serial devices: pty simulators in their own processes (rig.serial), real pyserial;
- BLE devices: the simulated BlueZ on a private D-Bus (rig.ble), real bleak, once the
  daemon accepts ``[[ble_devices]]``; in-daemon simulated devices (``[[sim_devices]]``) in
  stored-records mode.

Controls: power cut = kill -9 of gatewayd (restore = start it again); WAN drop = iptables DROP
in the home namespace; out of range = unplugging a serial simulator / taking a BLE peripheral
out of radio range; broker certificate rotation = a new broker certificate from the test CA and
a mosquitto restart.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from gateway import __version__
from hil.base import DeviceRef
from hil.profile import STORING_BLE_PROFILES, RigProfile
from provisioning.bundle import BoundDevice
from rig.pki import create_rig_pki
from tests.integration import netns
from tests.integration.rig import Received, Rig, wait_for
from tests.provisioning.helpers import EstProvider, broker_accepts

# Simulated BlueZ device kinds are named after the device, the daemon's profiles after the GATT
# profile; only the glucose meter differs.
_BLE_SIM_KIND = {"glucose": "glucose-meter"}
_ASTM_SENDER = ("Afinion 2", "1.10")  # what rig.serial.analyser puts in its H record
FIRST_EPISODE = "ep-hil-first"  # an enrolled rig's episode before any return


class SimRig:
    def __init__(self, profile: RigProfile, base: Path, *, ble_reason: str | None,
                 enrolled: bool = False) -> None:
        reason = netns.available()
        if reason:
            raise RuntimeError(f"the sim rig cannot run here: {reason}")
        self.profile = profile
        self.base = base
        self.ble_reason = ble_reason  # why the daemon cannot take BLE devices (None: it can)
        self.vpn = netns.VpnRig(base, prefix="hil")
        self._vpn_up = False
        self._rig: Rig | None = None
        self._serial: dict[str, Any] = {}  # name -> SimProcess
        self._bluez: Any = None  # SimulatedBluez when BLE is in use
        self._peripherals: dict[str, Any] = {}
        self._away: set[str] = set()  # devices out of range now
        self.config: Path | None = None
        self._crp = Decimal("4.0")
        # enrolled: the gateway gets its identity and episode as a router in the field does
        # (EST from the test CA behind the tunnel, one-time token, signed bundle), not from files.
        self.enrolled = enrolled
        self._provider: EstProvider | None = None

    # -- life cycle ---------------------------------------------------------------------------

    @property
    def rig(self) -> Rig:
        assert self._rig is not None, "SimRig.start() was not called"
        return self._rig

    @property
    def received(self) -> Received:
        return self.rig.received

    def devices(self) -> tuple[DeviceRef, ...]:
        p = self.profile
        return (
            *(DeviceRef(d.name, "sim", d.kind, d.address, True) for d in p.sim_devices),
            *(DeviceRef(s.name, "serial", s.protocol, s.device_id, s.protocol == "astm")
              for s in p.medical_serial),
            *(DeviceRef(d.name, "ble", d.profile, d.address, d.profile in STORING_BLE_PROFILES)
              for d in p.patient_ble if self.ble_reason is None),
        )

    def start(self) -> None:
        self.vpn.up()
        self._vpn_up = True
        self._rig = Rig(self.base, self.profile.gateway_id, vpn=self.vpn)
        self._start_serial()
        if self.profile.ble_devices and self.ble_reason is None:
            self._start_bluez()
        if self.enrolled:
            self._provider = EstProvider(self.rig, est_host=netns.PROVIDER_TUNNEL_IP)
            with self.rig.provider_side():
                self._provider.start()
        self.rig.start_provider()
        self.config = self._write_config()
        if self.enrolled:
            enrol = self.gatewayctl("enrol", "--token-file", "-", timeout_s=120,
                                    stdin=self.enrolment_token(FIRST_EPISODE))
            assert enrol.returncode == 0, f"enrolment failed: {enrol.stderr.strip()[-500:]}"
            self.after_enrolment(start_only=True)
        self.rig.start_daemon(self.config, self._daemon_env())
        # Up means its ports are open: a device that talks before that waits out its own timer.
        self.wait_daemon_up(60)
        wait_for(lambda: bool(self.received.readings), 60, "the first reading of the rig")

    def close(self) -> None:
        try:
            if self._rig is not None:
                self._rig.close()
        finally:
            for sim in self._serial.values():
                sim.stop()
            if self._bluez is not None:
                self._bluez.stop()
            if self._provider is not None:
                self._provider.stop()
            if self._vpn_up:
                self.vpn.down()

    def _start_serial(self) -> None:
        from rig.serial.process import SimProcess  # noqa: PLC0415 - sim rig only

        (self.base / "dev").mkdir(exist_ok=True)
        for port in self.profile.medical_serial:
            args = ["--reply-timeout", "10"] if port.protocol == "astm" else []
            link = self.base / port.path
            self._serial[port.name] = SimProcess(port.protocol, link, args).start()

    def _start_bluez(self) -> None:
        from rig.ble.rig import SimulatedBluez  # noqa: PLC0415 - only with BLE devices

        self._peripherals = sim_peripherals(self.profile)
        bonded = [d.address for d in self.profile.patient_ble]
        self._bluez = SimulatedBluez(self._peripherals.values(), bonded=bonded,
                                     set_env=False).start()

    def _daemon_env(self) -> dict[str, str]:
        return dict(self._bluez.env()) if self._bluez is not None else {}

    def _write_config(self) -> Path:
        if self._provider is not None:
            r = self.rig
            config = self.base / "gateway.toml"
            config.write_text(
                f'[gateway]\nid = "{r.gateway_id}"\nstate_dir = "{r.state_dir}"\n'
                "test_episode = true\n"  # ignored when enrolled: the bundle says it too
                f'log_level = "debug"\n\n{self._provider.config_section()}\n'
                f'[control]\nsocket = "{r.control_socket}"\n\n'
                "[uplink]\nkeepalive_s = 5\nbatch_max_records = 20\n"
            )
        else:
            config = self.rig.write_config([], batch_max_records=20)
        lines = ["", "[outbox]", "stream_chunk_s = 5", ""]
        for d in self.profile.sim_devices:
            memory = self.base / f"memory-{d.name}.json"
            lines += ["[[sim_devices]]", f'kind = "{d.kind}"', f'address = "{d.address}"',
                      f"interval_s = {d.interval_s}", f'memory = "{memory}"', ""]
        for s in self.profile.medical_serial:
            lines += ["[[serial_devices]]", f'kind = "{s.protocol}"', f'name = "{s.name}"',
                      f'path = "{self.base / s.path}"']
            if s.protocol in ("nonin", "cms50"):
                lines += [f'serial = "{s.device_id}"', "interval_s = 2"]
            lines.append("")
        if self._bluez is not None:
            lines.append(ble_config_lines(self.profile))
        config.write_text(config.read_text() + "\n".join(lines))
        return config

    # -- provisioning (enrolled rigs) ------------------------------------------------------------

    def bound_devices(self) -> tuple[BoundDevice, ...]:
        """What the provider binds to an episode: every patient device of the rig."""
        out = [BoundDevice("ble", d.address, d.kind, 60.0) for d in self.profile.sim_devices]
        for s in self.profile.medical_serial:
            # The analyser is known by its port (by-id path on a router), the oximeter by the
            # serial number configured for it.
            ident = str(self.base / s.path) if s.protocol == "astm" else s.device_id
            out.append(BoundDevice("serial", ident, s.protocol, 60.0))
        if self._bluez is not None:
            out += [BoundDevice("ble", d.address, d.profile, 60.0,
                                passkey=None if d.passkey is None else f"{d.passkey:06d}")
                    for d in self.profile.patient_ble]
        return tuple(out)

    def enrolment_token(self, episode: str) -> str:
        assert self._provider is not None, "this sim rig was not started enrolled"
        return self._provider.offer(episode, self.bound_devices())

    def after_enrolment(self, *, start_only: bool = False) -> None:
        """The provider learns the new signing key from the certificate it issued; the service
        starts again (enrolment happens with it stopped: the return ended it)."""
        assert self._provider is not None, "this sim rig was not started enrolled"
        self._provider.trust_enrolled_key()
        if not start_only:
            self.power_restore()
            self.wait_daemon_up(60)

    def capture_identity(self) -> Path | None:
        """A copy of the gateway's TLS certificate and key, as a thief would take them."""
        assert self._provider is not None, "this sim rig was not started enrolled"
        stolen = self.base / "stolen"
        stolen.mkdir(exist_ok=True)
        shutil.copy(self.rig.state_dir / "identity" / "client.crt", stolen / "client.crt")
        shutil.copy(self.rig.state_dir / "keys" / "tls.key", stolen / "tls.key")
        return stolen

    def broker_accepts(self, identity: Path) -> bool:
        """Does the broker take this certificate, seen from the home network?"""
        with netns.in_netns(self.vpn.home):
            return broker_accepts(self.rig.broker.host, self.rig.broker.port,
                                  self.rig.pki.ca_cert, identity / "client.crt",
                                  identity / "tls.key")

    # -- what the scenarios drive ---------------------------------------------------------------

    def verifier_summary(self) -> dict[str, Any]:
        return self.rig.verifier.summary()

    def measure(self, device: DeviceRef) -> None:
        if device.transport == "serial" and device.kind == "astm":
            self._crp += Decimal("0.5")
            self._serial[device.name].command(f"crp {self._crp}")
        elif device.transport == "ble":
            peripheral = self._peripherals[device.name]
            self._bluez.call(lambda: _ble_measure(peripheral))
            if device.kind in STORING_BLE_PROFILES and device.name not in self._away:
                # A meter only stores; like a real one it then wakes its radio to be collected
                # (the simulated meter just stores, so its link is cycled to the same effect).
                self._bluez.call(peripheral.go_out_of_range)
                time.sleep(0.5)
                self._bluez.call(peripheral.come_back)
        # sim devices and oximeters measure on their own (timer / continuous stream)

    def power_cut(self) -> None:
        code = self.rig.stop_daemon(signal.SIGKILL)
        assert code == -signal.SIGKILL, f"gatewayd had already exited ({code}) before the cut"

    def power_restore(self) -> None:
        assert self.config is not None
        self.rig.control_socket.unlink(missing_ok=True)  # /run is a tmpfs: gone after a cut
        self.rig.start_daemon(self.config, self._daemon_env())

    def wan_drop(self) -> None:
        self.vpn.black_hole()

    def wan_restore(self) -> None:
        self.vpn.restore()

    def out_of_range(self, device: DeviceRef) -> None:
        self._away.add(device.name)
        if device.transport == "serial":
            self._serial[device.name].command("unplug")
        else:
            self._bluez.call(self._peripherals[device.name].go_out_of_range)

    def back_in_range(self, device: DeviceRef) -> None:
        self._away.discard(device.name)
        if device.transport == "serial":
            self._serial[device.name].command("replug")
        else:
            self._bluez.call(self._peripherals[device.name].come_back)

    def rotate_broker_cert(self) -> None:
        """A new broker key and certificate from the same test CA, then a broker restart."""
        pki = self.rig.pki
        pki.broker_cert.unlink()
        pki.broker_key.unlink()
        create_rig_pki(pki.directory, gateway_ids=pki.gateway_ids,
                       broker_hosts=("localhost", "127.0.0.1", netns.PROVIDER_TUNNEL_IP))
        with self.rig.provider_side():
            self.rig.broker.restart()

    def broker_fingerprint(self) -> str:
        """SHA-256 of the certificate the broker presents, seen from the gateway's side."""
        pki = self.rig.pki
        ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
        ctx.load_cert_chain(pki.provider_cert, pki.provider_key)
        with netns.in_netns(self.vpn.home), socket.create_connection(
            (self.rig.broker.host, self.rig.broker.port), timeout=10
        ) as raw, ctx.wrap_socket(raw, server_hostname=self.rig.broker.host) as tls:
            der = tls.getpeercert(binary_form=True)
        assert der is not None
        return hashlib.sha256(der).hexdigest()

    def outbox_depth(self) -> int | None:
        return self.rig.outbox_depth()

    def confirmed(self, device: DeviceRef) -> int | None:
        """How many readings the device was told are safe (and may forget)."""
        if device.transport == "sim":
            memory = self.base / f"memory-{device.name}.json"
            return int(json.loads(memory.read_text())["confirmed"]) if memory.exists() else 0
        if device.transport == "serial" and device.kind == "astm":
            sim = self._serial[device.name]
            return sum(1 for e in list(sim.events) if e.get("event") == "delivered")
        return None

    def gatewayctl(self, *args: str, timeout_s: float = 30,
                   stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        # On the router: in the home namespace (EST behind the tunnel) and on its BlueZ.
        argv = [*self.vpn.exec_prefix(self.vpn.home), sys.executable, "-m", "gateway.cli.main",
        *args]
        if self.config is not None and not any(a == "--help" for a in args):
            argv += ["--config", str(self.config)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s,
                              check=False, env={**os.environ, **self._daemon_env()}, input=stdin)

    def wait_daemon_up(self, timeout_s: float) -> None:
        def answering() -> bool:
            daemon = self.rig.daemon
            assert daemon is not None, "gatewayd was never started"
            assert daemon.poll() is None, f"gatewayd exited: {self.rig.log_text()[-1500:]}"
            return self.rig.control_socket.exists() and self.gatewayctl(
                "status", "--json").stdout.startswith("{")

        try:
            wait_for(answering, timeout_s, "gatewayd to answer gatewayctl status")
        except AssertionError as exc:  # the daemon's log says why (it holds no clinical values)
            tail = self.rig.log_text()[-3000:]
            raise AssertionError(f"{exc}; gatewayd log ends:\n{tail}") from None

    def facts(self) -> dict[str, Any]:
        serial = [{
            "name": s.name, "transport": "serial", "protocol": s.protocol,
            "port": "pty simulator", "serial_number": s.device_id,
            **({"model": _ASTM_SENDER[0], "firmware": _ASTM_SENDER[1],
                "source": "ASTM H record sender field (rig.serial.analyser)"}
               if s.protocol == "astm" else
               {"model": f"simulated {s.protocol} oximeter", "firmware": __version__,
                "source": "simulator"}),
        } for s in self.profile.medical_serial]
        sims = [{"name": d.name, "transport": "sim", "kind": d.kind, "address": d.address,
                 "model": f"simulated {d.kind}", "firmware": __version__,
                 "source": "simulator"} for d in self.profile.sim_devices]
        return {"devices": [*sims, *serial],
                "adapter": f"simulated BlueZ ({self.profile.ble_adapter})"
                if self.profile.ble_devices else None,
                "network": f"WireGuard (wireguard-go) {self.vpn.home} <-> {self.vpn.provider}"}


# One plausible reading per simulated BLE kind (synthetic test values, never reported).
_BLE_READING: dict[str, dict[str, Any]] = {
    "thermometer": {"temperature": "37.1"},
    "blood-pressure": {"systolic": 121, "diastolic": 79, "pulse": 66},
    "weight-scale": {"weight_kg": "71.4"},
    "pulse-oximeter": {"spo2": 97, "pulse_rate": 66},
    "glucose-meter": {"concentration": "5.6"},
}


def _ble_measure(peripheral: Any) -> None:
    peripheral.measure(**_BLE_READING[peripheral.kind])


def sim_peripherals(profile: RigProfile) -> dict[str, Any]:
    """One simulated BLE peripheral per BLE device of the profile (the neighbour's too)."""
    from rig.ble.peripheral import Pairing, PairingMethod  # noqa: PLC0415 - BLE rigs
    from rig.ble.scenario import KINDS  # noqa: PLC0415
    from rig.ble.standard import DeviceInfo  # noqa: PLC0415

    return {
        d.name: KINDS[_BLE_SIM_KIND.get(d.profile, d.profile)](
            d.address, name=d.name,
            pairing=Pairing(PairingMethod.PASSKEY_ENTRY, d.passkey) if d.passkey else None,
            info=DeviceInfo(model=f"SIM-{d.profile}", serial=d.address.replace(":", "")[-6:]))
        for d in profile.ble_devices
    }


def ble_config_lines(profile: RigProfile) -> str:
    """``[[ble_devices]]`` for the patient's BLE devices (never the neighbour's)."""
    out = []
    for d in profile.patient_ble:
        out += ["[[ble_devices]]", f'address = "{d.address}"', f'profile = "{d.profile}"',
                f'name = "{d.name}"']
        if d.passkey is not None:
            out.append(f"passkey = {d.passkey}")
        out.append("")
    return "\n".join(out)
