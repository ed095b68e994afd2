"""Where the gateway's private keys live: a small interface and the file implementation.

Two keys, both generated on the router and never exported:
- the record-signing key (Ed25519) that signs every sealed record, and
- the TLS client key (ECDSA P-256) whose certificate EST issues and the broker checks.

``FileKeyStore`` keeps them as 0600 PKCS8 files in ``<state_dir>/keys`` (0700), owned by the
service user. A TPM 2.0 or PKCS#11 store can replace it: the rest of provisioning only asks for a
signer, the public keys, a CSR signature and ``destroy()``. (``tls_key_path`` exists because
OpenSSL via Python's ssl module loads client keys from files; a PKCS#11 store would return a
provider URI there instead.)
"""

from __future__ import annotations

from pathlib import Path, PurePath
from typing import Protocol

import structlog
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from provisioning.errors import KeyStoreError
from provisioning.safepath import SafeTree, UnsafePathError
from provisioning.state import private_dir

log = structlog.get_logger("provisioning.keystore")

SIGNING_KEY = "signing.key"
TLS_KEY = "tls.key"


class KeyStore(Protocol):
    def ensure(self) -> bool:
        """Create the keys that are missing; True if any key was created."""
        ...

    def present(self) -> list[str]:
        """Names of the keys that exist (for the return report and the erase check)."""
        ...

    def signing_key(self) -> ed25519.Ed25519PrivateKey: ...

    def signing_key_path(self) -> Path: ...

    def tls_public_key(self) -> ec.EllipticCurvePublicKey: ...

    def tls_key_path(self) -> Path: ...

    def sign_csr(
        self, builder: x509.CertificateSigningRequestBuilder
    ) -> x509.CertificateSigningRequest:
        """Sign a PKCS#10 request with the TLS key (the key itself never leaves the store)."""
        ...

    def destroy(self) -> list[str]:
        """Destroy every key; idempotent; returns the names destroyed now."""
        ...


class FileKeyStore:
    def __init__(self, directory: Path, *, signing: bool = True) -> None:
        self.directory = directory
        # signing=False: the TLS key only (the identity key lives in a token: pkcs11store)
        self._names = (SIGNING_KEY, TLS_KEY) if signing else (TLS_KEY,)
        # Every file operation goes through the state directory's SafeTree: gatewayctl runs this
        # as root in a directory the service account owns (provisioning.safepath).
        self._tree = SafeTree(directory.parent)

    def _path(self, name: str) -> Path:
        return self.directory / name

    def _rel(self, name: str) -> PurePath:
        return PurePath(self.directory.name, name)

    def signing_key_path(self) -> Path:
        return self._path(SIGNING_KEY)

    def tls_key_path(self) -> Path:
        return self._path(TLS_KEY)

    def ensure(self) -> bool:
        try:
            private_dir(self.directory)
            created = False
            if SIGNING_KEY in self._names and self._load(
                SIGNING_KEY, ed25519.Ed25519PrivateKey, missing_ok=True
            ) is None:
                self._store(SIGNING_KEY, ed25519.Ed25519PrivateKey.generate())
                created = True
            if self._load(TLS_KEY, ec.EllipticCurvePrivateKey, missing_ok=True) is None:
                self._store(TLS_KEY, ec.generate_private_key(ec.SECP256R1()))
                created = True
        except OSError as exc:
            raise KeyStoreError(
                f"cannot create keys in {self.directory}: {exc.strerror}", path=str(self.directory)
            ) from None
        if created:
            log.info("keystore.keys_created", directory=str(self.directory))
        return created

    def _store(
        self, name: str, key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
    ) -> None:
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        self._tree.atomic_write(self._rel(name), pem, 0o600)

    def _load(self, name: str, kind: type, *, missing_ok: bool = False) -> object | None:
        try:
            data = self._tree.read_bytes(self._rel(name))
        except FileNotFoundError:
            if missing_ok:
                return None
            raise KeyStoreError(f"the key {name} is missing from {self.directory}") from None
        except UnsafePathError:
            raise
        except OSError as exc:
            raise KeyStoreError(f"the key {name} cannot be read: {exc.strerror}") from None
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            key = None  # never pass the library's message on: it could quote the file
        if not isinstance(key, kind):
            if missing_ok:
                # A half-written key cannot exist (atomic_write); a damaged one is replaced, as
                # nothing was ever certified or signed with a key we cannot read.
                log.warning("keystore.key_unreadable", key=name)
                return None
            raise KeyStoreError(f"the key {name} in {self.directory} is damaged")
        return key

    def present(self) -> list[str]:
        return [n for n in self._names if self._tree.exists(self._rel(n))]

    def signing_key(self) -> ed25519.Ed25519PrivateKey:
        key = self._load(SIGNING_KEY, ed25519.Ed25519PrivateKey)
        assert isinstance(key, ed25519.Ed25519PrivateKey)  # _load checked the type
        return key

    def _tls_key(self) -> ec.EllipticCurvePrivateKey:
        key = self._load(TLS_KEY, ec.EllipticCurvePrivateKey)
        assert isinstance(key, ec.EllipticCurvePrivateKey)  # _load checked the type
        return key

    def tls_public_key(self) -> ec.EllipticCurvePublicKey:
        return self._tls_key().public_key()

    def sign_csr(
        self, builder: x509.CertificateSigningRequestBuilder
    ) -> x509.CertificateSigningRequest:
        return builder.sign(self._tls_key(), hashes.SHA256())

    def destroy(self) -> list[str]:
        """Overwrite, fsync and unlink each key file, then fsync the directory.

        On flash storage an overwrite is not a guarantee that no copy survives in the FTL; the
        records these keys protected are encrypted to the provider (HPKE) and deleted too, and a
        TPM store (non-exportable keys) is the real answer - hence this interface.
        """
        destroyed = []
        leftovers = self._tree.listdir(self.directory.name)
        for name in dict.fromkeys((SIGNING_KEY, TLS_KEY, *leftovers)):
            try:
                if not self._tree.destroy_file(self._rel(name)):
                    continue
            except UnsafePathError:
                # A link, FIFO or hardlinked file planted under keys/ is never opened for writing
                # (root would overwrite whatever it points at): its entry alone is removed.
                self._tree.remove(self._rel(name))
                log.warning("keystore.unsafe_entry_removed", entry=name)
                continue
            except OSError as exc:
                raise KeyStoreError(f"cannot destroy the key {name}: {exc.strerror}") from None
            destroyed.append(name)
        if destroyed:
            log.info("keystore.keys_destroyed", keys=destroyed)
        return destroyed
