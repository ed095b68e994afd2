"""Test configuration: coroutine tests run on a fresh event loop each (no plugin needed)."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from gateway.seal.keys import private_pem, public_pem


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    kwargs: dict[str, Any] = {name: pyfuncitem.funcargs[name] for name in names}
    asyncio.run(asyncio.wait_for(pyfuncitem.obj(**kwargs), timeout=60))
    return True


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """A folder with the key and certificate files VALID_CONFIG names (placeholders for TLS)."""
    (tmp_path / "identity.key").write_bytes(private_pem(ed25519.Ed25519PrivateKey.generate()))
    (tmp_path / "provider.pub").write_bytes(
        public_pem(x25519.X25519PrivateKey.generate().public_key())
    )
    for name in ("ca.crt", "client.crt", "client.key"):
        (tmp_path / name).write_text("placeholder")
    return tmp_path
