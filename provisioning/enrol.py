"""``gatewayctl enrol``: identity by EST, then the signed episode bundle; resumable at each step.

factory --(keys on the router, CSR, simpleenroll with the one-time token)--> enrolled
enrolled --(bundle over mutual TLS, verified, episode files written)--> bound

A power cut anywhere repeats at most the current step: the certificate is kept once issued (the
token is spent by then, so it must not be needed again), and a refused bundle leaves the router
enrolled, so the next ``gatewayctl enrol`` only fetches the (corrected) bundle - no new token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from gateway.config.settings import Config, ProvisioningConfig
from provisioning.binding import binding_for, record_generation
from provisioning.bundle import EnrolmentBundle, verify_bundle
from provisioning.errors import (
    BundleInvalidError,
    KeyStoreError,
    TokenRejectedError,
    WrongStateError,
)
from provisioning.est import AuthKind, ClientCert, EstClient, EstServer, build_csr
from provisioning.keystore import FileKeyStore, KeyStore
from provisioning.layout import StateLayout
from provisioning.safepath import SafeTree
from provisioning.state import LifecycleStore, Phase, private_dir

log = structlog.get_logger("provisioning.enrol")

QR_PREFIX = "homecare-enrol:"


@dataclass(frozen=True, slots=True)
class EnrolResult:
    gateway_id: str
    episode_id: str
    devices: int
    certificate_expires: datetime


# The delivery note's form: groups of four from an alphabet without 0/O or 1/I/l, so case,
# spaces and dashes carry no information and people may type them as they like.
NOTE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
NOTE_GROUP = 4
_TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]{8,256}")


def normalise_token(text: str) -> str:
    """The token in its canonical form: a delivery-note token in upper case, in dash-separated
    groups of four (``k7qx m2pd-9htw...`` -> ``K7QX-M2PD-9HTW...``); any other token as given,
    without the spaces people type into it (a space is never part of a token)."""
    compact = re.sub(r"\s+", "", text)
    letters = compact.replace("-", "").upper()
    if (
        len(letters) >= 2 * NOTE_GROUP
        and len(letters) % NOTE_GROUP == 0
        and all(ch in NOTE_ALPHABET for ch in letters)
    ):
        groups = [letters[i : i + NOTE_GROUP] for i in range(0, len(letters), NOTE_GROUP)]
        return "-".join(groups)
    return compact


def token_from_text(text: str, gateway_id: str) -> str:
    """A token as typed, or the text of the QR code on the delivery note.

    QR form: ``homecare-enrol:?gw=<gateway id>&token=<token>`` - the gateway id lets us refuse a
    note that belongs to another router before the token is spent.
    """
    text = text.strip()
    if text.startswith(QR_PREFIX):
        query = parse_qs(urlsplit(text[len(QR_PREFIX) :]).query)
        gw, token = query.get("gw", [""])[0], query.get("token", [""])[0]
        if gw != gateway_id:
            raise TokenRejectedError(
                f"this enrolment code is for router {gw or '?'}, this is router {gateway_id}",
                hint="use the delivery note that belongs to this router (compare the label)",
            )
        text = token
    text = normalise_token(text)
    if not _TOKEN.fullmatch(text):
        raise TokenRejectedError(
            "that does not look like an enrolment token (8-256 letters/digits)"
        )
    return text


def est_client(cfg: Config) -> EstClient:
    prov = _prov(cfg)
    auth: AuthKind = "basic" if prov.est_auth == "basic" else "bearer"
    return EstClient(EstServer(prov.est_url, prov.est_ca_file, auth), cfg.gateway_id)


def _prov(cfg: Config) -> ProvisioningConfig:
    if cfg.provisioning is None:
        raise WrongStateError(
            "this router is not set up for enrolment (no [provisioning] in its configuration)",
            hint="call support: the router's configuration package is incomplete",
        )
    return cfg.provisioning


def bundle_signer(cfg: Config) -> ed25519.Ed25519PublicKey:
    path = _prov(cfg).bundle_signing_key
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise KeyStoreError(
            f"the provider's bundle-signing key {path} is unreadable: {exc}"
        ) from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise KeyStoreError(f"the provider's bundle-signing key {path} is not an Ed25519 key")
    return key


def current_certificate(layout: StateLayout, store: KeyStore) -> x509.Certificate | None:
    """The issued certificate if it belongs to the TLS key and is not expired; else None."""
    try:
        issued = SafeTree(layout.state_dir).read_bytes(layout.client_cert)
        cert = x509.load_pem_x509_certificate(issued)
    except (OSError, ValueError):
        return None
    pem = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(*pem) != store.tls_public_key().public_bytes(*pem):
        return None
    if cert.not_valid_after_utc <= datetime.now(UTC):
        return None
    return cert


def enrol(
    cfg: Config,
    token: str | None,
    *,
    store: KeyStore | None = None,
    client: EstClient | None = None,
) -> EnrolResult:
    layout = StateLayout(cfg.state_dir)
    lifecycle = LifecycleStore(cfg.state_dir)
    store = store or FileKeyStore(layout.keys_dir)
    client = client or est_client(cfg)
    signer = bundle_signer(cfg)
    lc = lifecycle.load()
    if lc.phase is Phase.RETURNING:
        raise WrongStateError(
            "an equipment return is in progress on this router",
            hint="finish it first: gatewayctl return",
        )
    if token and lc.phase is Phase.ENROLLED:
        # The token was spent when this router got its certificate; sending it again would only
        # earn "refused" from the provider and send people looking for a new one.
        raise TokenRejectedError(
            "this router already used its token (its certificate is issued): "
            "rerun without the token",
            hint="run 'gatewayctl enrol' with no token; 'gatewayctl lifecycle' shows the state",
        )
    if lc.phase is Phase.BOUND:
        raise WrongStateError(
            f"this router is already enrolled for episode {lc.episode_id}",
            hint="a router serves one episode: return it (gatewayctl return), then enrol again",
        )
    if lc.phase is Phase.FACTORY:
        store.ensure()
        cert = current_certificate(layout, store)
        if cert is None:
            if not token:
                raise TokenRejectedError(
                    "enrolment needs the one-time token from the delivery note"
                )
            certs = client.simpleenroll(build_csr(store, cfg.gateway_id), token)
            pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
            private_dir(layout.identity_dir)
            SafeTree(layout.state_dir).atomic_write(layout.client_cert, pem, 0o644)
            cert = certs[0]
        lifecycle.transition(Phase.ENROLLED, detail={"certificate_serial": hex(cert.serial_number)})
    cert = current_certificate(layout, store)
    if cert is None:
        raise KeyStoreError(
            "the router's certificate is missing or expired",
            hint="call support: the router needs a depot reset",
        )
    raw = client.fetch_bundle(ClientCert(layout.client_cert, layout.tls_key))
    # Bound to this enrolment: the certified TLS key, no older generation (issue 16).
    bundle = verify_bundle(
        raw, signer, cfg.gateway_id, binding=binding_for(store, layout.state_dir)
    )
    _write_episode(layout, bundle, raw)
    record_generation(layout.state_dir, bundle.generation)
    lifecycle.transition(
        Phase.BOUND, episode_id=bundle.episode_id, detail={"devices": len(bundle.devices)}
    )
    log.info("provisioning.bound", episode=bundle.episode_id, devices=len(bundle.devices))
    return EnrolResult(
        cfg.gateway_id, bundle.episode_id, len(bundle.devices), cert.not_valid_after_utc
    )


def _write_episode(layout: StateLayout, bundle: EnrolmentBundle, raw: bytes) -> None:
    """Check the bundle's keys parse, then write them; bundle.json last (the daemon reads it)."""
    try:
        ca = x509.load_pem_x509_certificates(bundle.broker_ca_pem.encode())
        hpke = serialization.load_pem_public_key(bundle.provider_hpke_public_pem.encode())
    except ValueError as exc:
        raise BundleInvalidError(
            f"the bundle's broker CA or provider key is unusable: {exc}"
        ) from None
    if not ca or not isinstance(hpke, x25519.X25519PublicKey):
        raise BundleInvalidError("the bundle must carry a broker CA and an X25519 provider key")
    private_dir(layout.episode_dir)
    tree = SafeTree(layout.state_dir)  # root writes in the service account's tree: no links
    tree.atomic_write(layout.broker_ca, bundle.broker_ca_pem.encode(), 0o644)
    tree.atomic_write(layout.provider_hpke_pub, bundle.provider_hpke_public_pem.encode(), 0o644)
    tree.atomic_write(layout.bundle, raw, 0o600)  # device passkeys inside: service user only
