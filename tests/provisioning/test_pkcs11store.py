"""The PKCS#11 key store against SoftHSM2 (Debian softhsm2): the identity key is made in the
token, cannot be exported, signs there, and the return's crypto-erase destroys the key object.

SoftHSM2 reads SOFTHSM2_CONF and its tokens once, when the module is first initialised in a
process, so the tokens are made up front and every test takes one of its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from provisioning.errors import KeyStoreError
from provisioning.est import build_csr, signing_key_of
from provisioning.keystore import TLS_KEY, FileKeyStore

MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")
PIN = "4711-test"

pytestmark = pytest.mark.skipif(
    not MODULE.exists() or shutil.which("softhsm2-util") is None,
    reason="needs softhsm2 (make sysdeps installs it)",
)

TOKENS = 8  # at least one per test below


@pytest.fixture(scope="module")
def labels() -> Iterator[list[str]]:
    base = Path(tempfile.mkdtemp(prefix="softhsm-"))
    (base / "tokens").mkdir()
    conf = base / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {base / 'tokens'}\nobjectstore.backend = file\n")
    old = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    free = [f"gw-{uuid.uuid4().hex[:8]}" for _ in range(TOKENS)]
    for label in free:
        subprocess.run(
            ["softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", "12345678",
             "--pin", PIN],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
    yield free
    if old is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = old
    shutil.rmtree(base)


@pytest.fixture
def store(tmp_path: Path, labels: list[str]) -> Iterator[object]:
    from provisioning.pkcs11store import Pkcs11KeyStore  # noqa: PLC0415 - needs the env first

    s = Pkcs11KeyStore(MODULE, labels.pop(), PIN, FileKeyStore(tmp_path / "keys", signing=False))
    yield s
    s.close()


def test_the_identity_key_is_made_in_the_token_and_signs_there(store: object) -> None:
    from provisioning.pkcs11store import TOKEN_KEY_NAME, Pkcs11KeyStore  # noqa: PLC0415

    assert isinstance(store, Pkcs11KeyStore)
    assert store.ensure()
    assert not store.ensure()  # made once
    key = store.signing_key()
    signature = key.sign(b"record")
    key.public_key().verify(signature, b"record")
    with pytest.raises(InvalidSignature):
        key.public_key().verify(signature, b"another record")
    assert sorted(store.present()) == sorted([TOKEN_KEY_NAME, TLS_KEY])
    # No identity key file on flash: only the TLS key (Python's ssl needs a file for it).
    assert sorted(p.name for p in store.tls.directory.iterdir()) == [TLS_KEY]


def test_the_identity_key_cannot_be_exported(store: object) -> None:
    from pkcs11 import Attribute, KeyType, ObjectClass  # noqa: PLC0415
    from pkcs11.exceptions import AttributeSensitive  # noqa: PLC0415

    from provisioning.pkcs11store import SIGNING_LABEL, Pkcs11KeyStore  # noqa: PLC0415

    assert isinstance(store, Pkcs11KeyStore)
    store.ensure()
    with pytest.raises(KeyStoreError, match="cannot be exported"):
        store.signing_key().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    raw = store._session.get_key(
        object_class=ObjectClass.PRIVATE_KEY, key_type=KeyType.EC_EDWARDS, label=SIGNING_LABEL
    )
    assert raw[Attribute.SENSITIVE] is True
    assert raw[Attribute.EXTRACTABLE] is False
    with pytest.raises(AttributeSensitive):
        raw[Attribute.VALUE]


def test_the_csr_carries_the_token_key_and_is_signed_by_the_tls_key(store: object) -> None:
    from provisioning.pkcs11store import Pkcs11KeyStore  # noqa: PLC0415

    assert isinstance(store, Pkcs11KeyStore)
    store.ensure()
    csr = x509.load_der_x509_csr(build_csr(store, "gw-1"))
    assert csr.is_signature_valid
    spki = store.signing_key().public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert signing_key_of(csr) == spki


def test_crypto_erase_destroys_the_key_object(store: object) -> None:
    from provisioning.pkcs11store import TOKEN_KEY_NAME, Pkcs11KeyStore  # noqa: PLC0415

    assert isinstance(store, Pkcs11KeyStore)
    store.ensure()
    key = store.signing_key()
    assert sorted(store.destroy()) == sorted([TOKEN_KEY_NAME, TLS_KEY])
    assert store.present() == []
    with pytest.raises(KeyStoreError, match="missing from the token"):
        key.sign(b"after the return")  # the object itself is gone, not just a file name
    assert store.destroy() == []  # idempotent


def test_a_wrong_pin_is_a_typed_error(tmp_path: Path, labels: list[str]) -> None:
    from provisioning.pkcs11store import Pkcs11KeyStore  # noqa: PLC0415

    with pytest.raises(KeyStoreError, match="cannot open the key token"):
        Pkcs11KeyStore(MODULE, labels.pop(), "wrong", FileKeyStore(tmp_path / "k", signing=False))
