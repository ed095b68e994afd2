"""EST client against the provider's EST test service (real HTTPS on loopback, test CA)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from provider.est import EstAuthority, EstService
from provisioning.errors import ProviderIdentityError, ProviderUnreachableError, TokenRejectedError
from provisioning.est import (
    ClientCert,
    EstClient,
    EstServer,
    build_csr,
    http_date,
    signing_key_of,
)
from provisioning.keystore import FileKeyStore
from provisioning.layout import StateLayout
from provisioning.renewal import renew_if_due, renewal_due
from rig.pki import create_rig_pki

GW = "gw-est-1"


@pytest.fixture
def service(tmp_path: Path) -> Iterator[EstService]:
    pki = create_rig_pki(tmp_path / "pki", gateway_ids=["unused"])
    svc = EstService(EstAuthority(pki, tmp_path / "crl.pem"))
    svc.start()
    try:
        yield svc
    finally:
        svc.stop()


def _client(svc: EstService, auth: str = "bearer", ca: Path | None = None) -> EstClient:
    server = EstServer(svc.url, ca or svc.authority.pki.ca_cert, auth)  # type: ignore[arg-type]
    return EstClient(server, GW)


def _store(tmp_path: Path) -> FileKeyStore:
    store = FileKeyStore(tmp_path / "keys")
    store.ensure()
    return store


@pytest.mark.parametrize("auth", ["bearer", "basic"])
def test_simpleenroll_issues_an_openssl_verifiable_client_certificate(
    service: EstService, tmp_path: Path, auth: str
) -> None:
    store = _store(tmp_path)
    token = service.authority.new_token(GW)
    (cert,) = _client(service, auth).simpleenroll(build_csr(store, GW), token)
    assert cert.subject.rfc4514_string() == f"CN={GW}"
    assert cert.public_key() == store.tls_public_key()
    spki = (
        store.signing_key()
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert signing_key_of(cert) == spki  # the provider learns the record-signing key from it
    pem = tmp_path / "c.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    ca = str(service.authority.pki.ca_cert)
    out = subprocess.run(
        ["openssl", "verify", "-purpose", "sslclient", "-CAfile", ca, str(pem)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr


def test_a_token_works_once_and_only_for_its_gateway(service: EstService, tmp_path: Path) -> None:
    store = _store(tmp_path)
    client = _client(service)
    other = service.authority.new_token("gw-someone-else")
    with pytest.raises(TokenRejectedError) as err:
        client.simpleenroll(build_csr(store, GW), other)
    assert err.value.one_line().startswith("[P-TOKEN]")
    assert other not in err.value.one_line()
    token = service.authority.new_token(GW)
    client.simpleenroll(build_csr(store, GW), token)
    with pytest.raises(TokenRejectedError):
        client.simpleenroll(build_csr(store, GW), token)


def test_a_server_outside_the_provider_ca_is_refused(service: EstService, tmp_path: Path) -> None:
    stranger = create_rig_pki(tmp_path / "other-pki", gateway_ids=["x"])
    with pytest.raises(ProviderIdentityError) as err:
        _client(service, ca=stranger.ca_cert).simpleenroll(b"", "token-token")
    assert "[P-PROVIDER-CERT]" in err.value.one_line()


def test_nobody_listening_is_unreachable_not_a_crash(tmp_path: Path) -> None:
    pki = create_rig_pki(tmp_path / "pki", gateway_ids=["x"])
    client = EstClient(EstServer("https://127.0.0.1:9", pki.ca_cert, timeout_s=2), GW)
    with pytest.raises(ProviderUnreachableError):
        client.provider_time()


def test_renewal_with_simplereenroll_keeps_the_key_and_revocation_ends_it(
    service: EstService, tmp_path: Path
) -> None:
    layout = StateLayout(tmp_path)
    store = FileKeyStore(layout.keys_dir)
    store.ensure()
    client = _client(service)
    (cert,) = client.simpleenroll(build_csr(store, GW), service.authority.new_token(GW))
    layout.identity_dir.mkdir()
    layout.client_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    assert not renewal_due(cert, datetime.now(UTC))
    assert renew_if_due(layout, store, client, GW) is None  # not due: nothing asked
    later = cert.not_valid_before_utc + (cert.not_valid_after_utc - cert.not_valid_before_utc) * 0.7
    renewed = renew_if_due(layout, store, client, GW, now=later)
    assert renewed is not None
    assert renewed.serial_number != cert.serial_number
    assert renewed.public_key() == cert.public_key()
    assert renewed.not_valid_after_utc > cert.not_valid_after_utc - timedelta(seconds=1)
    on_disk = x509.load_pem_x509_certificate(layout.client_cert.read_bytes())
    assert on_disk.serial_number == renewed.serial_number

    me = ClientCert(layout.client_cert, store.tls_key_path())
    client.request_revocation(me, "test")
    crl = x509.load_pem_x509_crl(service.authority.crl_path.read_bytes())
    assert {r.serial_number for r in crl} == {cert.serial_number, renewed.serial_number}
    with pytest.raises(TokenRejectedError):  # a revoked certificate cannot renew itself
        client.simplereenroll(build_csr(store, GW), me)
    client.request_revocation(me, "again")  # idempotent: a resumed return asks twice


@pytest.mark.parametrize(
    "header",
    [
        "garbage",
        "Mon, 99 Dec 2026 07:00:00 GMT",
        "Mon, 07 Dec 99999999999 07:00:00 GMT",
        "Mon, 07 Dec 2026 07:00:00 -0000",  # zone unknown: no time at all
        "x" * 10_000,
        "",
        None,
    ],
)
def test_a_malformed_date_header_is_no_time_not_an_exception(header: str | None) -> None:
    """Issue 16: parsedate_to_datetime raised out of the install check on a bad Date."""
    assert http_date(header) is None


def test_a_good_date_header_is_aware_utc() -> None:
    assert http_date("Mon, 07 Dec 2026 08:00:00 +0100") == datetime(2026, 12, 7, 7, tzinfo=UTC)
