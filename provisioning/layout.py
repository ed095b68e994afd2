"""Where provisioning keeps things under the state directory (one place, so erase misses nothing).

<state_dir>/lifecycle.json       phase, return progress, events not yet reported upstream
<state_dir>/keys/                signing.key, tls.key (0600, dir 0700) - the FileKeyStore
<state_dir>/identity/client.crt  the EST-issued TLS client certificate
<state_dir>/episode/             bundle.json (as signed by the provider), broker-ca.crt,
                                 provider-hpke.pub, devices.json (the bound devices)
<state_dir>/outbox.db(-wal,-shm) the sealed records (gateway/config/settings.py [outbox] path)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class StateLayout:
    state_dir: Path

    @property
    def keys_dir(self) -> Path:
        return self.state_dir / "keys"

    @property
    def identity_dir(self) -> Path:
        return self.state_dir / "identity"

    @property
    def client_cert(self) -> Path:
        return self.identity_dir / "client.crt"

    @property
    def episode_dir(self) -> Path:
        return self.state_dir / "episode"

    @property
    def bundle(self) -> Path:
        return self.episode_dir / "bundle.json"

    @property
    def broker_ca(self) -> Path:
        return self.episode_dir / "broker-ca.crt"

    @property
    def provider_hpke_pub(self) -> Path:
        return self.episode_dir / "provider-hpke.pub"

    @property
    def signing_key(self) -> Path:
        return self.keys_dir / "signing.key"

    @property
    def tls_key(self) -> Path:
        return self.keys_dir / "tls.key"
