"""What ties an enrolment bundle to this router's enrolment, and its episode files to the bundle.

- ``binding_for``: enrolment accepts only a bundle bound to the TLS key it just had certified
  (SHA-256 of its SubjectPublicKeyInfo) and of a generation no older than the last one accepted.
- The highest accepted generation is kept in ``<state_dir>/bundle.generation``, one integer and
  nothing about the patient; the equipment return keeps it (like the chain-epoch marker), so a
  bundle the router accepted once can never be replayed onto it.
- ``check_episode_files``: the daemon loads ``broker-ca.crt`` and ``provider-hpke.pub`` from
  files; their SHA-256 must be that of the content the signed bundle carries.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from provisioning.bundle import Binding, EnrolmentBundle, tls_key_sha256
from provisioning.errors import BundleInvalidError
from provisioning.keystore import KeyStore
from provisioning.layout import StateLayout
from provisioning.safepath import SafeTree

GENERATION_FILE = "bundle.generation"


def accepted_generation(state_dir: Path) -> int:
    try:
        text = SafeTree(state_dir).read_bytes(GENERATION_FILE, limit=32).decode()
    except FileNotFoundError:
        return 0
    try:
        return int(text.strip())
    except ValueError:
        # Tampering or damage: refuse generation 0 bundles at least (the provider starts at 1).
        return 0


def record_generation(state_dir: Path, generation: int) -> None:
    if generation > accepted_generation(state_dir):
        SafeTree(state_dir).atomic_write(GENERATION_FILE, f"{generation}\n".encode(), 0o644)


def binding_for(store: KeyStore, state_dir: Path) -> Binding:
    return Binding(
        tls_key_sha256=tls_key_sha256(store.tls_public_key()),
        min_generation=max(accepted_generation(state_dir), 1),
    )


def check_episode_files(layout: StateLayout, bundle: EnrolmentBundle) -> None:
    """The episode files on disk are the ones the signed bundle carries (SHA-256 pinned)."""
    tree = SafeTree(layout.state_dir)
    for path, content in (
        (layout.broker_ca, bundle.broker_ca_pem),
        (layout.provider_hpke_pub, bundle.provider_hpke_public_pem),
    ):
        try:
            on_disk = hashlib.sha256(tree.read_bytes(path)).digest()
        except FileNotFoundError:
            raise BundleInvalidError(f"the episode file {path.name} is missing") from None
        if not hmac.compare_digest(on_disk, hashlib.sha256(content.encode()).digest()):
            raise BundleInvalidError(
                f"the episode file {path.name} is not the one the signed bundle carries",
                hint="call support: the router's files were changed; it needs a depot reset",
            )
