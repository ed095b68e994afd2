"""The provider profile: what it may set, what gateway.toml enrolment composes from it."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from provisioning.errors import ProfileMissingError
from provisioning.profile import GENERATED_MARK, compose, enrolment_config


@pytest.fixture
def etc(tmp_path: Path) -> Path:
    d = tmp_path / "etc"
    (d / "profile").mkdir(parents=True)
    (d / "profile" / "est-ca.crt").write_text("x")
    (d / "profile" / "bundle-signing.pub").write_text("x")
    (d / "provider.toml").write_text(
        f'[gateway]\nstate_dir = "{tmp_path / "state"}"\n\n'
        '[provisioning]\nest_url = "https://est.example/.well-known/est"\n'
        'est_ca_file = "profile/est-ca.crt"\nbundle_signing_key = "profile/bundle-signing.pub"\n'
        '\n[uplink]\nvpn_interface = "wg0"\nwan_interfaces = ["wwan0"]\nkeepalive_s = 20\n'
    )
    return d


def test_composed_file_names_the_router_and_resolves_the_profile_s_paths(etc: Path) -> None:
    text = compose(etc / "provider.toml", "gw-0421")
    assert text.startswith(GENERATED_MARK)
    data = tomllib.loads(text)
    assert data["gateway"]["id"] == "gw-0421"
    assert data["provisioning"]["est_ca_file"] == str(etc / "profile" / "est-ca.crt")
    assert data["uplink"] == {
        "vpn_interface": "wg0",
        "wan_interfaces": ["wwan0"],
        "keepalive_s": 20,
    }


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ('\n[identity]\nsigning_key = "k"\n', "identity: a provider profile holds only"),
        ('\n[gateway]\nid = "gw-x"\n', None),  # a second [gateway] table: not valid TOML
        ("port = 1883\n", "uplink.port: comes from the signed episode bundle"),
        ('ca_file = "x.crt"\n', "uplink.ca_file: comes from the signed episode bundle"),
        ("topic_prefix = {a = 1}\n", "uplink.topic_prefix: only strings"),
    ],
)
def test_a_profile_may_not_set_what_is_per_router_or_per_episode(
    etc: Path, extra: str, expected: str | None
) -> None:
    profile = etc / "provider.toml"
    profile.write_text(profile.read_text() + extra)
    with pytest.raises(ConfigError) as err:
        enrolment_config(etc / "gateway.toml")
    assert expected is None or expected in str(err.value), str(err.value)
    assert not (etc / "gateway.toml").exists()


def test_gateway_id_in_the_profile_is_refused(etc: Path) -> None:
    profile = etc / "provider.toml"
    profile.write_text(profile.read_text().replace("[gateway]\n", '[gateway]\nid = "gw-x"\n'))
    with pytest.raises(ConfigError, match=r"gateway\.id: comes from"):
        compose(profile, "gw-0421")


def test_a_hand_written_configuration_is_used_as_it_is(etc: Path, tmp_path: Path) -> None:
    config = etc / "gateway.toml"
    composed = enrolment_config(config)
    assert composed.write
    config.write_text(composed.text)
    assert not enrolment_config(config).write  # unchanged profile: nothing to rewrite
    config.write_text(composed.text.split("\n", 1)[1])  # the first line gone: a person's file
    again = enrolment_config(config)
    assert not again.write
    assert again.config.gateway_id != ""


def test_no_profile_and_no_configuration(tmp_path: Path) -> None:
    with pytest.raises(ProfileMissingError, match="knows no care provider"):
        enrolment_config(tmp_path / "gateway.toml")
