"""The throwaway rig PKI: chains, names, usages, file modes, idempotence and the key loaders."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mlkem, x25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from gateway.errors import ProvisioningError, SealError
from gateway.seal.keys import (
    load_gateway_public_key,
    load_provider_mlkem_private,
    load_provider_mlkem_public,
    load_provider_x25519_private,
    load_provider_x25519_public,
    load_signing_key,
)
from rig.pki import PROVIDER_CN, RigPki, create_rig_pki

GATEWAYS = ("gw-alpha", "gw-beta")


@pytest.fixture
def pki(tmp_path: Path) -> RigPki:
    return create_rig_pki(tmp_path / "pki", gateway_ids=GATEWAYS)


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _leaves(pki: RigPki) -> list[Path]:
    gateways = [pki.gateway(gw).client_cert for gw in GATEWAYS]
    return [pki.broker_cert, pki.provider_cert, *gateways]


def _eku(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def _cn(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def _snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def test_ca_is_a_self_signed_p256_ca_limited_to_signing_certs_and_crls(pki: RigPki) -> None:
    ca = _cert(pki.ca_cert)
    ca_key = ca.public_key()
    assert isinstance(ca_key, ec.EllipticCurvePublicKey)
    assert ca_key.curve.name == "secp256r1"
    ca.verify_directly_issued_by(ca)
    basic = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical
    assert basic.value.ca
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    assert usage.crl_sign
    assert not usage.digital_signature


def test_every_leaf_is_signed_by_the_ca_key(pki: RigPki) -> None:
    ca = _cert(pki.ca_cert)
    ca_key = ca.public_key()
    assert isinstance(ca_key, ec.EllipticCurvePublicKey)
    for path in _leaves(pki):
        leaf = _cert(path)
        assert leaf.issuer == ca.subject, path
        hash_alg = leaf.signature_hash_algorithm
        assert hash_alg is not None
        # Raises InvalidSignature if the CA did not sign exactly these TBS bytes.
        ca_key.verify(leaf.signature, leaf.tbs_certificate_bytes, ec.ECDSA(hash_alg))
        assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_a_leaf_from_another_rig_does_not_verify_against_this_ca(
    pki: RigPki, tmp_path: Path
) -> None:
    other = create_rig_pki(tmp_path / "other", gateway_ids=["gw-alpha"])
    # Every rig CA has the same name, so it is the signature check that tells them apart.
    with pytest.raises(InvalidSignature):
        _cert(other.gateway("gw-alpha").client_cert).verify_directly_issued_by(_cert(pki.ca_cert))


def test_broker_cert_names_every_host_with_the_right_san_type_and_is_server_only(
    tmp_path: Path,
) -> None:
    hosts = ["localhost", "127.0.0.1", "::1", "broker.rig.test"]
    pki = create_rig_pki(tmp_path / "pki", gateway_ids=GATEWAYS, broker_hosts=hosts)
    broker = _cert(pki.broker_cert)
    san = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "broker.rig.test"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert _eku(broker) == [ExtendedKeyUsageOID.SERVER_AUTH]
    # The path a TLS client builds (RFC 5280 + name matching), via cryptography's own verifier.
    verifier_for = PolicyBuilder().store(Store([_cert(pki.ca_cert)]))
    for name in (x509.DNSName("broker.rig.test"), x509.IPAddress(ipaddress.ip_address("::1"))):
        chain = verifier_for.build_server_verifier(name).verify(broker, [])
        assert chain[-1] == _cert(pki.ca_cert)


def test_client_certs_carry_the_gateway_id_as_cn_and_client_auth_only(pki: RigPki) -> None:
    for gw in GATEWAYS:
        cert = _cert(pki.gateway(gw).client_cert)
        assert _cn(cert) == gw
        assert _eku(cert) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    provider = _cert(pki.provider_cert)
    assert _cn(provider) == PROVIDER_CN == "provider-verifier"
    assert _eku(provider) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_private_keys_are_0600_in_0700_directories_and_public_files_are_not(
    pki: RigPki,
) -> None:
    gw = pki.gateway("gw-alpha")
    private = [pki.ca_key, pki.broker_key, pki.provider_key, pki.hpke_key]
    private += [gw.client_key, gw.identity_key]
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for path in (pki.ca_cert, pki.hpke_pub, gw.identity_pub, gw.client_cert):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    for directory in (pki.directory, pki.directory / "provider", gw.client_cert.parent):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory


def test_identity_and_hpke_files_are_matching_key_pairs(pki: RigPki) -> None:
    gw = pki.gateway("gw-beta")
    identity = load_signing_key(gw.identity_key)
    signature = identity.sign(b"record")
    load_gateway_public_key(gw.identity_pub).verify(signature, b"record")
    assert gw.identity_key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    hpke = load_provider_x25519_private(pki.hpke_key)
    assert load_provider_x25519_public(pki.hpke_pub) == hpke.public_key()
    assert pki.hpke_mlkem768_key is None  # only with pq=True


def test_pq_adds_an_mlkem768_pair_in_pkcs8_and_spki_pem(tmp_path: Path) -> None:
    pki = create_rig_pki(tmp_path / "pki", gateway_ids=GATEWAYS, pq=True)
    assert pki.hpke_mlkem768_key is not None
    assert pki.hpke_mlkem768_pub is not None
    assert pki.hpke_mlkem768_key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert pki.hpke_mlkem768_pub.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert stat.S_IMODE(pki.hpke_mlkem768_key.stat().st_mode) == 0o600
    private = load_provider_mlkem_private(pki.hpke_mlkem768_key)
    public = load_provider_mlkem_public(pki.hpke_mlkem768_pub)
    assert isinstance(private, mlkem.MLKEM768PrivateKey)
    shared, ciphertext = public.encapsulate()
    assert private.decapsulate(ciphertext) == shared


def test_second_call_reuses_every_file_unchanged(tmp_path: Path) -> None:
    directory = tmp_path / "pki"
    first = create_rig_pki(directory, gateway_ids=GATEWAYS, pq=True)
    before = _snapshot(directory)
    second = create_rig_pki(directory, gateway_ids=GATEWAYS, pq=True)
    assert _snapshot(directory) == before
    assert second == first


def test_adding_a_gateway_keeps_the_existing_ones_and_the_ca(pki: RigPki) -> None:
    before = _snapshot(pki.directory)
    bigger = create_rig_pki(pki.directory, gateway_ids=[*GATEWAYS, "gw-gamma"])
    after = _snapshot(pki.directory)
    assert {k: v for k, v in after.items() if k in before} == before
    assert set(after) - set(before) == {
        f"gateways/gw-gamma/{name}"
        for name in ("client.crt", "client.key", "identity.key", "identity.pub")
    }
    _cert(bigger.gateway("gw-gamma").client_cert).verify_directly_issued_by(_cert(pki.ca_cert))


def test_a_missing_broker_key_reissues_only_the_broker_cert(pki: RigPki) -> None:
    pki.broker_key.unlink()
    before = _snapshot(pki.directory)
    create_rig_pki(pki.directory, gateway_ids=GATEWAYS)
    after = _snapshot(pki.directory)
    changed = {k for k in after if before.get(k) != after[k]}
    assert changed == {"broker.crt", "broker.key"}


@pytest.mark.parametrize("bad", ["", "../evil", "a/b", "gw+", "gw#", "-lead", PROVIDER_CN])
def test_ids_that_would_escape_a_path_or_topic_level_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ProvisioningError, match="gateway id"):
        create_rig_pki(tmp_path / "pki", gateway_ids=[bad])


def test_unknown_gateway_lookup_is_a_key_error(pki: RigPki) -> None:
    with pytest.raises(KeyError, match="gw-nope"):
        pki.gateway("gw-nope")


def test_loaders_reject_the_wrong_key_type_naming_the_file(pki: RigPki) -> None:
    gw = pki.gateway("gw-alpha")
    cases = [
        (
            load_provider_x25519_private,
            gw.identity_key,
            "a Ed25519PrivateKey, not an X25519PrivateKey",
        ),
        (load_signing_key, pki.hpke_key, "a X25519PrivateKey, not an Ed25519PrivateKey"),
        (load_signing_key, gw.client_key, "a ECPrivateKey, not an Ed25519PrivateKey"),
        (load_gateway_public_key, pki.hpke_pub, "a X25519PublicKey, not an Ed25519PublicKey"),
        (
            load_provider_x25519_public,
            gw.identity_pub,
            "a Ed25519PublicKey, not an X25519PublicKey",
        ),
    ]
    for loader, path, found in cases:
        with pytest.raises(SealError) as caught:
            loader(path)
        assert str(path) in caught.value.message
        assert found in caught.value.message
        assert caught.value.fields["path"] == str(path)


def test_loaders_reject_a_private_key_where_a_public_one_belongs_without_echoing_it(
    pki: RigPki,
) -> None:
    key_file = pki.hpke_key
    with pytest.raises(SealError) as caught:
        load_provider_x25519_public(key_file)
    assert str(key_file) in caught.value.message
    assert "SubjectPublicKeyInfo" in caught.value.message
    # Not a byte of the key's base64 body may leak into the message.
    body = key_file.read_text().splitlines()[1]
    assert body[:16] not in caught.value.one_line()
    assert isinstance(load_provider_x25519_private(key_file), x25519.X25519PrivateKey)


def test_loaders_report_a_missing_or_unreadable_file_by_name(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "identity.key"
    with pytest.raises(
        SealError, match=r"identity \(signing\) key file .*nowhere/identity\.key is missing"
    ):
        load_signing_key(missing)
    with pytest.raises(SealError, match=r"provider HPKE public key file .* is missing"):
        load_provider_x25519_public(tmp_path / "hpke.pub")
    # A directory where the file should be: unreadable (works even when tests run as root).
    with pytest.raises(SealError, match=r"is unreadable"):
        load_gateway_public_key(tmp_path)


def test_loaders_return_the_expected_types(pki: RigPki) -> None:
    gw = pki.gateway("gw-alpha")
    assert isinstance(load_signing_key(gw.identity_key), ed25519.Ed25519PrivateKey)
    assert isinstance(load_gateway_public_key(gw.identity_pub), ed25519.Ed25519PublicKey)
    assert isinstance(load_provider_x25519_public(pki.hpke_pub), x25519.X25519PublicKey)
