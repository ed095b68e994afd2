"""A home and a provider network namespace joined by a real WireGuard tunnel (wireguard-go).

Topology (all addresses live only inside namespaces this harness creates):

    home netns                                      provider netns
    gateway  --  wg <tag>wh 10.77.0.1 ==tunnel== 10.77.0.2 wg <tag>wp  --  mosquitto
                 veth 192.0.2.1  <--- underlay (UDP 51820) --->  veth 192.0.2.2

Outages are made with iptables inside the home namespace, so nothing on the host is touched.
Interface names carry a random tag because wireguard-go's control sockets share /var/run/wireguard.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

HOME_TUNNEL_IP = "10.77.0.1"
PROVIDER_TUNNEL_IP = "10.77.0.2"
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL("libc.so.6", use_errno=True)


def available() -> str | None:
    """None if the harness can run here, else the reason it cannot."""
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    for tool in ("ip", "wireguard-go", "wg", "iptables"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (make sysdeps installs it)"
    if not Path("/dev/net/tun").exists():
        return "no /dev/net/tun for wireguard-go"
    return None


def _run(*cmd: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.strip()}")
    return proc.stdout


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Run this thread (and the threads and processes it starts) inside namespace ``name``."""
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(target, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {name} failed")
        try:
            yield
        finally:
            _libc.setns(original, _CLONE_NEWNET)
    finally:
        os.close(original)
        os.close(target)


class VpnRig:
    def __init__(self, workdir: Path, prefix: str = "hcg") -> None:
        # ``prefix`` keeps suites apart on one host (hw-tests use "hil"); 3 letters + 4 hex + 4
        # stays within the kernel's 15-character interface names.
        if not (prefix.isalpha() and prefix.islower() and len(prefix) == 3):
            raise ValueError(f"netns prefix must be 3 lowercase letters, got {prefix!r}")
        tag = secrets.token_hex(2)
        self.home, self.provider = f"{prefix}{tag}home", f"{prefix}{tag}prov"
        self.wg_home, self.wg_provider = f"{prefix}{tag}wh", f"{prefix}{tag}wp"
        self._veth = (f"{prefix}{tag}vh", f"{prefix}{tag}vp")
        self._workdir = workdir
        self._wg_procs: list[subprocess.Popen[bytes]] = []

    @property
    def home_wan_interface(self) -> str:
        """The home side's "WAN" (a veth standing in for the 5G modem's interface)."""
        return self._veth[0]

    def exec_prefix(self, netns: str) -> list[str]:
        return ["ip", "netns", "exec", netns]

    def up(self) -> None:
        vh, vp = self._veth
        for ns in (self.home, self.provider):
            _run("ip", "netns", "add", ns)
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run("ip", "link", "add", vh, "type", "veth", "peer", "name", vp)
        for dev, ns, addr in ((vh, self.home, "192.0.2.1/24"), (vp, self.provider, "192.0.2.2/24")):
            _run("ip", "link", "set", dev, "netns", ns)
            _run("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            _run("ip", "-n", ns, "link", "set", dev, "up")
        keys = {side: _run("wg", "genkey").strip() for side in ("home", "provider")}
        pubs = {
            side: subprocess.run(
                ["wg", "pubkey"], input=key, capture_output=True, text=True, check=True
            ).stdout.strip()
            for side, key in keys.items()
        }
        env = dict(os.environ, WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD="1")
        sides = (
            (
                self.home,
                self.wg_home,
                "home",
                "provider",
                HOME_TUNNEL_IP,
                PROVIDER_TUNNEL_IP,
                "192.0.2.2",
            ),
            (
                self.provider,
                self.wg_provider,
                "provider",
                "home",
                PROVIDER_TUNNEL_IP,
                HOME_TUNNEL_IP,
                "192.0.2.1",
            ),
        )
        for ns, dev, me, peer, my_ip, peer_ip, endpoint in sides:
            with (self._workdir / f"wireguard-{me}.log").open("ab") as log:  # the child keeps it
                self._wg_procs.append(
                    subprocess.Popen(
                        [*self.exec_prefix(ns), "wireguard-go", "-f", dev],
                        stdout=log,
                        stderr=log,
                        env=env,
                    )
                )
            key_file = self._workdir / f"wg-{me}.key"
            key_file.write_text(keys[me] + "\n")
            key_file.chmod(0o600)
            self._wait_for_link(ns, dev)
            _run(
                *self.exec_prefix(ns),
                "wg",
                "set",
                dev,
                "private-key",
                str(key_file),
                "listen-port",
                "51820",
                "peer",
                pubs[peer],
                "endpoint",
                f"{endpoint}:51820",
                "allowed-ips",
                f"{peer_ip}/32",
                "persistent-keepalive",
                "5",
            )
            _run("ip", "-n", ns, "addr", "add", f"{my_ip}/32", "peer", f"{peer_ip}/32", "dev", dev)
            _run("ip", "-n", ns, "link", "set", dev, "up")

    def _wait_for_link(self, ns: str, dev: str) -> None:
        for _ in range(100):
            if (
                subprocess.run(
                    ["ip", "-n", ns, "link", "show", dev], capture_output=True, check=False
                ).returncode
                == 0
            ):
                return
            subprocess.run(["sleep", "0.05"], check=False)
        raise RuntimeError(f"wireguard-go did not create {dev} in {ns}")

    def iptables_home(self, *rule: str) -> None:
        _run(*self.exec_prefix(self.home), "iptables", *rule)

    def black_hole(self) -> None:
        """Drop (no RST, no ICMP) everything through the tunnel, both ways."""
        self.iptables_home("-I", "OUTPUT", "-o", self.wg_home, "-j", "DROP")
        self.iptables_home("-I", "INPUT", "-i", self.wg_home, "-j", "DROP")

    def restore(self) -> None:
        self.iptables_home("-D", "OUTPUT", "-o", self.wg_home, "-j", "DROP")
        self.iptables_home("-D", "INPUT", "-i", self.wg_home, "-j", "DROP")

    def handshake_age_s(self) -> float | None:
        out = _run(*self.exec_prefix(self.home), "wg", "show", self.wg_home, "latest-handshakes")
        fields = out.split()
        if len(fields) < 2 or fields[1] == "0":
            return None
        return time.time() - float(fields[1])

    def down(self) -> None:
        for proc in self._wg_procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        for ns in (self.home, self.provider):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        for dev in (self.wg_home, self.wg_provider):
            with contextlib.suppress(FileNotFoundError):
                Path(f"/var/run/wireguard/{dev}.sock").unlink()
