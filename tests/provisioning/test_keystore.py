"""FileKeyStore: keys made on the router, 0600 in a 0700 folder, destroyed for good."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from provisioning.keystore import FileKeyStore, KeyStore
from provisioning.state import LifecycleStore, Phase


def test_keys_are_created_once_with_private_modes(tmp_path: Path) -> None:
    store: KeyStore = FileKeyStore(tmp_path / "keys")
    assert store.ensure() is True
    first = store.signing_key_path().read_bytes()
    assert store.ensure() is False  # a rerun (resumed enrolment) keeps the same keys
    assert store.signing_key_path().read_bytes() == first
    assert (tmp_path / "keys").stat().st_mode & 0o777 == 0o700
    for name in ("signing.key", "tls.key"):
        assert (tmp_path / "keys" / name).stat().st_mode & 0o777 == 0o600


def test_the_csr_is_signed_by_the_tls_key(tmp_path: Path) -> None:
    store = FileKeyStore(tmp_path)
    store.ensure()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gw-1")])
    csr = store.sign_csr(x509.CertificateSigningRequestBuilder().subject_name(name))
    assert csr.is_signature_valid
    assert csr.public_key() == store.tls_public_key()


def test_destroy_removes_every_key_and_leftover(tmp_path: Path) -> None:
    store = FileKeyStore(tmp_path)
    store.ensure()
    (tmp_path / ".tls.key.tmp").write_bytes(b"-----BEGIN PRIVATE KEY-----")  # interrupted write
    assert sorted(store.destroy()) == [".tls.key.tmp", "signing.key", "tls.key"]
    assert list(tmp_path.iterdir()) == []
    assert store.present() == []
    assert store.destroy() == []  # idempotent


def test_a_damaged_key_is_replaced_not_used(tmp_path: Path) -> None:
    store = FileKeyStore(tmp_path)
    store.ensure()
    (tmp_path / "tls.key").write_bytes(b"garbage")
    assert store.ensure() is True
    assert store.tls_public_key() is not None


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can hand files to another user")
def test_keys_root_creates_belong_to_the_service_user_owning_the_state_dir(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, 65534, 65534)  # the service user (systemd StateDirectory= owns it)
    FileKeyStore(state / "keys").ensure()
    LifecycleStore(state).transition(Phase.ENROLLED)
    owned = [state / "keys", state / "keys" / "signing.key", state / "keys" / "tls.key"]
    owned += [state / "lifecycle.json", state / ".lifecycle.lock"]
    assert {p.name: p.stat().st_uid for p in owned} == {p.name: 65534 for p in owned}
