"""Loading the gateway's own keys and the provider's public keys from PEM files.

Errors name the file and what is wrong with it - never a byte of the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, mlkem, x25519

from gateway.errors import SealError


def _load(path: Path, what: str, expected: Any, *, private: bool) -> Any:
    """Read one PEM key file; every failure names the file and never echoes its content."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SealError(f"{what} file {path} is missing", path=str(path)) from None
    except OSError as exc:
        raise SealError(
            f"{what} file {path} is unreadable: {exc.strerror}", path=str(path)
        ) from None
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


# Each cast below is checked: _load has just verified isinstance(key, expected).
def load_signing_key(path: Path) -> ed25519.Ed25519PrivateKey:
    key = _load(path, "identity (signing) key", ed25519.Ed25519PrivateKey, private=True)
    return cast(ed25519.Ed25519PrivateKey, key)


def load_gateway_public_key(path: Path) -> ed25519.Ed25519PublicKey:
    key = _load(path, "gateway identity public key", ed25519.Ed25519PublicKey, private=False)
    return cast(ed25519.Ed25519PublicKey, key)


def load_provider_x25519_public(path: Path) -> x25519.X25519PublicKey:
    key = _load(path, "provider HPKE public key", x25519.X25519PublicKey, private=False)
    return cast(x25519.X25519PublicKey, key)


def load_provider_x25519_private(path: Path) -> x25519.X25519PrivateKey:
    key = _load(path, "provider HPKE private key", x25519.X25519PrivateKey, private=True)
    return cast(x25519.X25519PrivateKey, key)


def load_provider_mlkem_public(path: Path) -> mlkem.MLKEM768PublicKey:
    key = _load(path, "provider ML-KEM-768 public key", mlkem.MLKEM768PublicKey, private=False)
    return cast(mlkem.MLKEM768PublicKey, key)


def load_provider_mlkem_private(path: Path) -> mlkem.MLKEM768PrivateKey:
    key = _load(path, "provider ML-KEM-768 private key", mlkem.MLKEM768PrivateKey, private=True)
    return cast(mlkem.MLKEM768PrivateKey, key)


def private_pem(
    key: ed25519.Ed25519PrivateKey | x25519.X25519PrivateKey | mlkem.MLKEM768PrivateKey,
) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_pem(
    key: ed25519.Ed25519PublicKey | x25519.X25519PublicKey | mlkem.MLKEM768PublicKey,
) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
