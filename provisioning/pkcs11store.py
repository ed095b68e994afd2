"""A PKCS#11 key store: the record-signing identity key is made in a token and never leaves it.

With a TPM (tpm2-pkcs11) or a secure element behind a PKCS#11 module, the Ed25519 identity key
is generated on the token with ``CKA_SENSITIVE=TRUE, CKA_EXTRACTABLE=FALSE``: no read of the
flash, no root shell and no core dump can copy it. Signing happens in the token (``CKM_EDDSA``).
``destroy()`` is a crypto-erase: ``C_DestroyObject`` on the key object. For a TPM that key is
wrapped under the TPM's storage hierarchy, so what may remain in flash blocks is ciphertext under
a key that never left the chip; the records it signed are encrypted to the provider anyway.

The TLS client key stays in the file store (``tls``) for now: Python's ssl module loads client keys
from files, and an OpenSSL PKCS#11 provider for the uplink and EST is future work
(docs/security.md, residual risks). Tested against SoftHSM2 (tests/provisioning/
test_pkcs11store.py), which implements the same interface in software.

Dependency: python-pkcs11 (MIT): a typed, object-level PKCS#11 binding (templates, EdDSA,
``KeyType.EC_EDWARDS``) with wheels for x86-64 and ARM64 - PyKCS11 is the thinner SWIG
binding and would leave the template and DER plumbing to us. Optional (extra ``pkcs11``): the file
store needs nothing of it.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pkcs11
import structlog
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.exceptions import NoSuchKey, PKCS11Error
from pkcs11.util.ec import encode_named_curve_parameters

from provisioning.errors import KeyStoreError
from provisioning.keystore import SIGNING_KEY, FileKeyStore

log = structlog.get_logger("provisioning.pkcs11")

SIGNING_LABEL = "homecare-gateway-signing"
ED25519_OID = "1.3.101.112"  # RFC 8410
TOKEN_KEY_NAME = f"pkcs11:{SIGNING_KEY}"  # as the return report lists it


def _octet_string(der: bytes) -> bytes:
    """CKA_EC_POINT of an Edwards key: a DER OCTET STRING around the 32-byte point."""
    if len(der) == 34 and der[:2] == b"\x04\x20":
        return der[2:]
    if len(der) == 32:  # some tokens return the raw point
        return der
    raise KeyStoreError("the token returned an Ed25519 public key of an unknown form")


class TokenEd25519Key(ed25519.Ed25519PrivateKey):
    """An Ed25519 private key the token holds: signs there, never exports."""

    def __init__(self, store: Pkcs11KeyStore, public: ed25519.Ed25519PublicKey) -> None:
        self._store = store
        self._public = public

    def sign(self, data: bytes | bytearray | memoryview) -> bytes:
        return self._store.sign_eddsa(bytes(data))

    def public_key(self) -> ed25519.Ed25519PublicKey:
        return self._public

    def private_bytes(self, *args: Any, **kwargs: Any) -> bytes:
        raise KeyStoreError("the identity key lives in the token and cannot be exported")

    def private_bytes_raw(self) -> bytes:
        raise KeyStoreError("the identity key lives in the token and cannot be exported")

    def __copy__(self) -> TokenEd25519Key:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> TokenEd25519Key:
        return self


class Pkcs11KeyStore:
    """The identity key in a PKCS#11 token; the TLS key in ``tls`` (a FileKeyStore made with
    ``signing=False``, so no identity key file is ever written)."""

    def __init__(self, module: Path, token_label: str, pin: str, tls: FileKeyStore) -> None:
        self.tls = tls
        self._lock = threading.Lock()  # one session, used from the sealing threads in turn
        try:
            token = pkcs11.lib(str(module)).get_token(token_label=token_label)
            self._session = token.open(rw=True, user_pin=pin)
        except PKCS11Error as exc:
            raise KeyStoreError(
                f"cannot open the key token {token_label!r} ({type(exc).__name__})",
                hint="check the token is present and its PIN in the configuration",
            ) from None

    def close(self) -> None:
        with self._lock:
            self._session.close()

    def _private(self) -> Any | None:
        try:
            return self._session.get_key(
                object_class=ObjectClass.PRIVATE_KEY, key_type=KeyType.EC_EDWARDS,
                label=SIGNING_LABEL,
            )  # fmt: skip
        except NoSuchKey:
            return None

    def _public(self) -> ed25519.Ed25519PublicKey | None:
        try:
            key = self._session.get_key(
                object_class=ObjectClass.PUBLIC_KEY, key_type=KeyType.EC_EDWARDS,
                label=SIGNING_LABEL,
            )  # fmt: skip
        except NoSuchKey:
            return None
        return ed25519.Ed25519PublicKey.from_public_bytes(_octet_string(key[Attribute.EC_POINT]))

    def ensure(self) -> bool:
        created = self.tls.ensure()
        with self._lock:
            if self._private() is None:
                self._generate()
                created = True
                log.info("keystore.token_key_created", label=SIGNING_LABEL)
        return created

    def _generate(self) -> None:
        try:
            params = self._session.create_domain_parameters(
                KeyType.EC_EDWARDS,
                {Attribute.EC_PARAMS: encode_named_curve_parameters(ED25519_OID)},
                local=True,
            )
            params.generate_keypair(
                store=True,
                label=SIGNING_LABEL,
                mechanism=Mechanism.EC_EDWARDS_KEY_PAIR_GEN,
                private_template={
                    Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False,
                    Attribute.PRIVATE: True,
                },
            )
        except PKCS11Error as exc:
            raise KeyStoreError(
                f"the token could not make the identity key ({type(exc).__name__})"
            ) from None

    def present(self) -> list[str]:
        with self._lock:
            here = [TOKEN_KEY_NAME] if self._private() is not None else []
        return here + self.tls.present()

    def signing_key(self) -> ed25519.Ed25519PrivateKey:
        with self._lock:
            public = self._public()
        if public is None:
            raise KeyStoreError("the identity key is missing from the token")
        return TokenEd25519Key(self, public)

    def sign_eddsa(self, data: bytes) -> bytes:
        with self._lock:
            key = self._private()
            if key is None:
                raise KeyStoreError("the identity key is missing from the token (erased?)")
            try:
                return bytes(key.sign(data, mechanism=Mechanism.EDDSA))
            except PKCS11Error as exc:
                raise KeyStoreError(f"the token refused to sign ({type(exc).__name__})") from None

    def signing_key_path(self) -> Path:
        raise KeyStoreError(
            "the identity key lives in the token: there is no file to load",
            hint="the daemon takes it from the key store (see provisioning/pkcs11store.py)",
        )

    def tls_public_key(self) -> ec.EllipticCurvePublicKey:
        return self.tls.tls_public_key()

    def tls_key_path(self) -> Path:
        return self.tls.tls_key_path()

    def sign_csr(
        self, builder: x509.CertificateSigningRequestBuilder
    ) -> x509.CertificateSigningRequest:
        return self.tls.sign_csr(builder)

    def destroy(self) -> list[str]:
        """Crypto-erase: destroy the token's key objects, then the file store's keys."""
        destroyed = []
        with self._lock:
            for cls in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY):
                for obj in list(self._session.get_objects({Attribute.CLASS: cls,
                                                           Attribute.LABEL: SIGNING_LABEL})):
                    try:
                        obj.destroy()
                    except PKCS11Error as exc:
                        raise KeyStoreError(
                            f"the token did not destroy the identity key ({type(exc).__name__})"
                        ) from None
                    if cls is ObjectClass.PRIVATE_KEY:
                        destroyed.append(TOKEN_KEY_NAME)
        destroyed += self.tls.destroy()
        if destroyed:
            log.info("keystore.keys_destroyed", keys=destroyed)
        return destroyed
