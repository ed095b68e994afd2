"""gatewayctl enrol against the EST test service: refused bundles and resuming (no broker)."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.config.settings import load
from provider.est import EstAuthority, EstService
from provisioning.bundle import EnrolmentBundle
from provisioning.enrol import token_from_text
from provisioning.profile import router_id
from provisioning.state import LifecycleStore, Phase
from rig.pki import create_rig_pki
from tests.provisioning.helpers import GATEWAY, THERMO, bundle_key

pytestmark = pytest.mark.integration


class Desk:
    """The provider's logistics desk with its EST service, and gatewayctl on the router."""

    def __init__(self, base: Path) -> None:
        self.pki = create_rig_pki(base / "pki", gateway_ids=["unused"])
        self.authority = EstAuthority(self.pki, base / "crl.pem")
        self.service = EstService(self.authority)
        self.base = base
        self.key, pub = bundle_key(base)
        self.state = base / "state"
        self.config = base / "gateway.toml"
        self.service.start()
        self.config.write_text(
            f'[gateway]\nid = "{GATEWAY}"\nstate_dir = "{self.state}"\n\n'
            f'[provisioning]\nest_url = "{self.service.url}"\nest_ca_file = "{self.pki.ca_cert}"\n'
            f'bundle_signing_key = "{pub}"\nauth = "basic"\n\n'
            f'[control]\nsocket = "{base / "ctl.sock"}"\n'
        )

    def bundle(
        self,
        *,
        gateway: str = GATEWAY,
        key: ed25519.Ed25519PrivateKey | None = None,
        days: float = 2,
        bundle_for: str = GATEWAY,
    ) -> None:
        now = datetime.now(UTC)
        b = EnrolmentBundle(
            gateway_id=gateway,
            episode_id="ep-9",
            not_before=now - timedelta(days=5),
            not_after=now + timedelta(days=days),
            broker_host="127.0.0.1",
            broker_port=8883,
            broker_ca_pem=self.pki.ca_cert.read_text(),
            provider_hpke_public_pem=self.pki.hpke_pub.read_text(),
            devices=(THERMO,),
        )
        self.authority.offer_bundle(bundle_for, b, key or self.key)

    def enrol(self, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
        """gatewayctl enrol; ``token`` goes to ``--token-file -`` (never on the command line)."""
        if token is not None:
            args = (*args, "--token-file", "-")
        return subprocess.run(
            [sys.executable, "-m", "gateway.cli.main", "enrol", *args, "--config",
            str(self.config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ},
            input=token if token is not None else "",
        )

    def phase(self) -> Phase:
        return LifecycleStore(self.state).load().phase


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[Desk]:
    d = Desk(tmp_path)
    try:
        yield d
    finally:
        d.service.stop()


def test_refused_bundles_leave_the_router_enrolled_and_a_good_one_binds_without_a_new_token(
    desk: Desk,
) -> None:
    token = desk.authority.new_token(GATEWAY)
    cases = [
        (
            {"key": ed25519.Ed25519PrivateKey.generate()},
            "[P-BUNDLE-SIGNATURE]",
            "not signed by the provider",
        ),
        ({"gateway": "gw-prov-0002"}, "[P-BUNDLE-GATEWAY]", "for router gw-prov-0002"),
        ({"days": -1}, "[P-BUNDLE-EXPIRED]", "expired on"),
    ]
    for i, (kwargs, code, words) in enumerate(cases):
        desk.bundle(**kwargs)  # type: ignore[arg-type]
        # The first run spends the token on the certificate; later runs need none.
        run = desk.enrol(token=token) if i == 0 else desk.enrol()
        assert run.returncode == 1, run.stdout + run.stderr
        assert code in run.stderr
        assert words in run.stderr
        assert desk.phase() is Phase.ENROLLED
        assert not (desk.state / "episode" / "bundle.json").exists()
    desk.bundle()
    run = desk.enrol()
    assert run.returncode == 0, run.stderr
    assert "episode ep-9, 1 device(s) bound" in run.stdout
    assert desk.phase() is Phase.BOUND
    again = desk.enrol()
    assert again.returncode == 1
    assert "[P-STATE]" in again.stderr
    assert "already enrolled" in again.stderr


def test_a_wrong_token_changes_nothing_and_says_what_to_do(desk: Desk) -> None:
    desk.bundle()
    run = desk.enrol(token="WRONG-TOKEN-1234")
    assert run.returncode == 1
    assert "[P-TOKEN] the provider refused the enrolment token" in run.stderr
    assert "delivery note" in run.stderr
    assert desk.phase() is Phase.FACTORY


def test_a_qr_code_for_another_router_is_refused_before_the_token_is_spent(desk: Desk) -> None:
    token = desk.authority.new_token(GATEWAY)
    run = desk.enrol(token=f"homecare-enrol:?gw=gw-other&token={token}")
    assert run.returncode == 1
    assert "this enrolment code is for router gw-other" in run.stderr
    assert token in desk.authority.tokens  # still unspent


def test_no_token_on_a_factory_router_is_explained(desk: Desk) -> None:
    run = desk.enrol()
    assert run.returncode == 1
    assert "needs the one-time token" in run.stderr


def test_a_token_on_the_command_line_is_refused_and_not_spent(desk: Desk) -> None:
    desk.bundle()
    token = desk.authority.new_token(GATEWAY)
    run = desk.enrol(f"--token={token}")
    assert run.returncode == 1
    assert "[P-TOKEN] a token on the command line is readable" in run.stderr
    assert "--token-file" in run.stderr
    assert token not in run.stdout + run.stderr
    assert token in desk.authority.tokens  # still unspent
    assert desk.phase() is Phase.FACTORY


def test_a_token_typed_in_lower_case_with_spaces_is_accepted(desk: Desk) -> None:
    desk.bundle()
    token = desk.authority.new_token(GATEWAY)
    run = desk.enrol(token=" " + token.lower().replace("-", " ") + "\n")
    assert run.returncode == 0, run.stderr
    assert desk.phase() is Phase.BOUND


def test_the_token_again_after_the_certificate_says_rerun_without_it(desk: Desk) -> None:
    token = desk.authority.new_token(GATEWAY)
    first = desk.enrol(token=token)  # no bundle yet: the certificate is issued, then it stops
    assert first.returncode == 1
    assert "[P-BUNDLE-MISSING] the provider has no episode bundle" in first.stderr
    assert "no new token needed" in first.stderr
    assert desk.phase() is Phase.ENROLLED
    desk.bundle()
    again = desk.enrol(token=token)
    assert again.returncode == 1
    assert "[P-TOKEN]" in again.stderr
    assert "rerun without the token" in again.stderr
    assert desk.enrol().returncode == 0
    assert desk.phase() is Phase.BOUND


@pytest.mark.parametrize(
    ("typed", "canonical"),
    [
        ("k7qx-m2pd-9htw-rb4e-zc6n", "K7QX-M2PD-9HTW-RB4E-ZC6N"),
        ("K7QX M2PD 9HTW RB4E ZC6N", "K7QX-M2PD-9HTW-RB4E-ZC6N"),
        ("k7qxm2pd9htwrb4ezc6n", "K7QX-M2PD-9HTW-RB4E-ZC6N"),
        ("K7QX--M2PD - 9HTW-RB4E-ZC6N", "K7QX-M2PD-9HTW-RB4E-ZC6N"),
        # Not the delivery-note form (0, 1 and lower case are meaningful there): kept as given.
        ("abc0-def1-ghi2", "abc0-def1-ghi2"),
        ("Opaque.Token_01", "Opaque.Token_01"),
    ],
)
def test_token_normalisation(typed: str, canonical: str) -> None:
    assert token_from_text(typed, GATEWAY) == canonical


# --- a fresh install: only the provider profile, enrolment writes gateway.toml -----------------


class FreshRouter:
    """/etc/homecare-gateway as the .deb and the provider's profile package leave it."""

    def __init__(self, desk: Desk, base: Path) -> None:
        self.desk = desk
        self.etc = base / "etc"
        self.etc.mkdir()
        self.config = self.etc / "gateway.toml"
        self.gateway = router_id()
        pub = desk.base / "bundle-signing.pub"
        self.profile = self.etc / "provider.toml"
        self.profile.write_text(
            f'[gateway]\nstate_dir = "{desk.state}"\n\n'
            f'[provisioning]\nest_url = "{desk.service.url}"\nest_ca_file = "{desk.pki.ca_cert}"\n'
            f'bundle_signing_key = "{pub}"\nauth = "basic"\n\n'
            '[uplink]\nvpn_interface = "wg0"\n'
        )

    def enrol(self, token: str | None = None) -> subprocess.CompletedProcess[str]:
        self.desk.config = self.config
        return self.desk.enrol(token=token)


def test_fresh_install_enrolment_writes_gateway_toml_from_the_provider_profile(
    desk: Desk, tmp_path: Path
) -> None:
    fresh = FreshRouter(desk, tmp_path)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", fresh.gateway):
        pytest.skip(f"this machine's host name {fresh.gateway!r} is not a router id")
    desk.bundle(gateway=fresh.gateway, bundle_for=fresh.gateway)
    token = desk.authority.new_token(fresh.gateway)
    run = fresh.enrol(token=token)
    assert run.returncode == 0, run.stderr
    assert f"enrolled: router {fresh.gateway}, episode ep-9" in run.stdout
    assert stat.S_IMODE(fresh.config.stat().st_mode) == 0o640
    cfg = load(fresh.config)
    assert cfg.gateway_id == fresh.gateway
    assert cfg.vpn_interface == "wg0"
    assert cfg.provisioning is not None
    assert cfg.provisioning.est_url == desk.service.url
    assert cfg.state_dir == desk.state
    assert token not in fresh.config.read_text()
    assert desk.phase() is Phase.BOUND
    # Later commands read the written file; a hand edit is never overwritten by enrolment.
    again = fresh.enrol()
    assert "[P-STATE]" in again.stderr


def test_a_profile_that_sets_the_broker_is_refused_and_nothing_is_written(
    desk: Desk, tmp_path: Path
) -> None:
    fresh = FreshRouter(desk, tmp_path)
    fresh.profile.write_text(fresh.profile.read_text() + 'host = "broker.elsewhere.example"\n')
    token = desk.authority.new_token(GATEWAY)
    run = fresh.enrol(token=token)
    assert run.returncode == 2, run.stderr
    assert "uplink.host: comes from the signed episode bundle" in run.stderr
    assert not fresh.config.exists()
    assert token in desk.authority.tokens


def test_no_profile_and_no_configuration_is_its_own_message(desk: Desk, tmp_path: Path) -> None:
    fresh = FreshRouter(desk, tmp_path)
    fresh.profile.unlink()
    run = fresh.enrol(token="K7QX-M2PD-9HTW-RB4E-ZC6N")
    assert run.returncode == 1
    assert "[P-PROFILE] this router knows no care provider" in run.stderr
    assert "profile package" in run.stderr


def test_a_previous_episodes_bundle_is_refused_after_a_return(desk: Desk) -> None:
    """Wrong-patient replay (issue 16): the last episode's bundle - genuinely signed, for this
    router, still valid - must not bind the router again once its keys were renewed."""
    desk.bundle()
    first = desk.enrol(token=desk.authority.new_token(GATEWAY))
    assert first.returncode == 0, first.stderr
    old = (desk.state / "episode" / "bundle.json").read_bytes()
    # The equipment return, as far as enrolment is concerned: keys, certificate and episode
    # erased, phase back to factory; the lifecycle and bundle.generation stay.
    store = LifecycleStore(desk.state)
    store.transition(Phase.RETURNING)
    store.transition(Phase.FACTORY)
    for name in ("keys", "identity", "episode"):
        shutil.rmtree(desk.state / name)
    desk.authority.offers.clear()
    desk.authority.bundles[GATEWAY] = old  # the old bundle served again
    replay = desk.enrol(token=desk.authority.new_token(GATEWAY))
    assert replay.returncode == 1, replay.stdout + replay.stderr
    assert "[P-BUNDLE-BINDING]" in replay.stderr
    assert "another certificate" in replay.stderr
    assert desk.phase() is Phase.ENROLLED
    assert not (desk.state / "episode").exists() or not any((desk.state / "episode").iterdir())
    desk.bundle()  # the desk issues the new episode's bundle: bound to the new key, generation 2
    fresh = desk.enrol()
    assert fresh.returncode == 0, fresh.stderr
    assert (desk.state / "bundle.generation").read_text().strip() == "2"
