"""Loading the gateway's own keys and the provider's public keys from PEM files.

Errors name the file and what is wrong with it - never a byte of the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, mlkem, x25519

from gateway.errors import SealError

K = TypeVar("K")


def _load(path: Path, what: str, expected: type[K], *, private: bool) -> K:
    """Read one PEM key file; every failure names the file and never echoes its content."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SealError(f"{what} file {path} is missing", path=str(path)) from None
    except OSError as exc:
        raise SealError(f"{what} file {path} is unreadable: {exc.strerror}", path=str(path)) from None
    try:
        key: object = (
            serialization.load_pem_private_key(data, password=None)
            if private
            else serialization.load_pem_public_key(data)
        )
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # The library's message is not passed on: it could quote part of the file.
        form = "an unencrypted PKCS8 PEM private key" if private else "a SubjectPublicKeyInfo PEM"
        raise SealError(f"{what} file {path} is not {form}", path=str(path)) from None
    if not isinstance(key, expected):
        got, want = type(key).__name__, expected.__name__
        raise SealError(f"{what} file {path} holds a {got}, not an {want}", path=str(path))
    return key


def _private(path: Path, kind: type[K], what: str) -> K:
    return _load(path, what, kind, private=True)


def _public(path: Path, kind: type[K], what: str) -> K:
    return _load(path, what, kind, private=False)


def load_signing_key(path: Path) -> ed25519.Ed25519PrivateKey:
    return _private(path, ed25519.Ed25519PrivateKey, "identity (signing) key")


def load_gateway_public_key(path: Path) -> ed25519.Ed25519PublicKey:
    return _public(path, ed25519.Ed25519PublicKey, "gateway identity public key")


def load_provider_x25519_public(path: Path) -> x25519.X25519PublicKey:
    return _public(path, x25519.X25519PublicKey, "provider HPKE public key")


def load_provider_x25519_private(path: Path) -> x25519.X25519PrivateKey:
    return _private(path, x25519.X25519PrivateKey, "provider HPKE private key")


def load_provider_mlkem_public(path: Path) -> mlkem.MLKEM768PublicKey:
    return _public(path, mlkem.MLKEM768PublicKey, "provider ML-KEM-768 public key")


def load_provider_mlkem_private(path: Path) -> mlkem.MLKEM768PrivateKey:
    return _private(path, mlkem.MLKEM768PrivateKey, "provider ML-KEM-768 private key")


def private_pem(key: ed25519.Ed25519PrivateKey | x25519.X25519PrivateKey | mlkem.MLKEM768PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_pem(key: ed25519.Ed25519PublicKey | x25519.X25519PublicKey | mlkem.MLKEM768PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
