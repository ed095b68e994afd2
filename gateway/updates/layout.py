"""Where the updater's files are. One root prefix so tests run it in a temporary directory.

/opt/homecare-gateway/releases/<version>/      one complete tree (a virtualenv) per release
/opt/homecare-gateway/releases/<version>.partial  being unpacked (removed on recovery)
/opt/homecare-gateway/current  -> releases/<v>  what gatewayd and /usr/bin run (switched by rename)
/opt/homecare-gateway/updater  -> releases/<v>  the package's own release: the updater runs
                                                from it, so an offered release can never
                                                break its own rollback (set by postinst)
/var/lib/homecare-gateway-update/state.json     the updater's state (root; readable: no secrets)
/var/lib/homecare-gateway-update/trial          exists while a health gate runs (path unit)
/var/lib/homecare-gateway-update/work/<id>/     the updater's own copy of an inbox entry
/var/lib/homecare-gateway/updates/inbox/<id>/   offers the daemon verified (never trusted)
/var/lib/homecare-gateway/updates/health.json   the daemon's beacon: READY and delivering
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

RELEASE_INFO = "release-info.json"  # in each release tree: version, arch, outbox facts


@dataclass(frozen=True, slots=True)
class UpdateLayout:
    root: Path = Path("/")

    @property
    def opt(self) -> Path:
        return self.root / "opt/homecare-gateway"

    @property
    def releases(self) -> Path:
        return self.opt / "releases"

    @property
    def current(self) -> Path:
        return self.opt / "current"

    def release(self, version: str) -> Path:
        return self.releases / version

    @property
    def state_dir(self) -> Path:
        return self.root / "var/lib/homecare-gateway-update"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def trial_marker(self) -> Path:
        return self.state_dir / "trial"

    @property
    def work(self) -> Path:
        return self.state_dir / "work"

    @property
    def daemon_state(self) -> Path:
        return self.root / "var/lib/homecare-gateway"

    @property
    def inbox(self) -> Path:
        return self.daemon_state / "updates/inbox"

    @property
    def beacon(self) -> Path:
        return self.daemon_state / "updates/health.json"

    @property
    def config(self) -> Path:
        return self.root / "etc/homecare-gateway/gateway.toml"
