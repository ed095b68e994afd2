"""Rig profiles: the shipped ones load, mistakes name their key, capabilities follow the file.

PYTEST_DONT_REWRITE: failure messages are the explicit ones (no reprs of readings).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hil.profile import RIGS_DIR, Capability, ProfileError, load, range_devices, resolve

PKI_FILES = ("provider-ca.crt", "hil-verifier.crt", "hil-verifier.key",
             "provider-hpke-test.key", "gw-bench-0003.pub")


@pytest.fixture
def real(tmp_path: Path) -> Path:
    """The example real profile with placeholder files where it names them."""
    (tmp_path / "pki").mkdir()
    for name in PKI_FILES:
        (tmp_path / "pki" / name).write_text("placeholder\n")
    return Path(shutil.copy(RIGS_DIR / "example-real.toml", tmp_path / "rig.toml"))


def edited(path: Path, old: str, new: str) -> Path:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))
    return path


def test_sim_profile_is_the_default_and_has_every_capability() -> None:
    assert resolve("sim") == RIGS_DIR / "sim.toml"
    profile = load("sim")
    assert profile.simulated
    assert {c: profile.missing(c) for c in Capability} == dict.fromkeys(Capability)
    assert set(range_devices(profile)) == {"crp", "ble-glucose"}


def test_example_real_profile_loads_with_its_controls(real: Path) -> None:
    profile = load(str(real))
    assert not profile.simulated
    assert profile.gatewayctl[-1] == "gatewayctl"
    assert profile.controls.power_cut == ("usbrelay", "HILPWR_1=1")
    assert [d.name for d in profile.patient_ble] == ["thermometer", "bp-cuff", "glucose-meter"]
    assert profile.ble_devices[1].passkey == 246810
    assert set(range_devices(profile)) == {"glucose-meter", "crp"}
    # Every capability but re-enrolment: the suite cannot have a real provider issue tokens yet.
    assert {c for c in Capability if profile.missing(c)} == {Capability.ENROLMENT}


def test_a_real_rig_skips_re_enrolment_naming_what_is_missing(real: Path) -> None:
    reason = load(str(real)).missing(Capability.ENROLMENT)
    assert reason is not None
    assert "provider.est_url" in reason
    edited(real, "# est_url", "est_url")
    reason = load(str(real)).missing(Capability.ENROLMENT)
    assert reason is not None
    assert "https://est.provider.example/.well-known/est" in reason
    assert "one-time enrolment token" in reason


def test_a_rig_without_a_power_relay_skips_the_power_cut_with_the_reason(real: Path) -> None:
    edited(real, 'power_cut = ["usbrelay", "HILPWR_1=1"]', "")
    edited(real, 'power_restore = ["usbrelay", "HILPWR_1=0"]', "")
    reason = load(str(real)).missing(Capability.POWER_CUT)
    assert reason is not None
    assert "controls.power_cut" in reason


def test_an_est_only_provider_cannot_verify_delivery_yet(real: Path) -> None:
    edited(real, 'client_cert = "pki/hil-verifier.crt"', "")
    edited(real, 'client_key = "pki/hil-verifier.key"', "")
    edited(real, "# est_url", "est_url")
    reason = load(str(real)).missing(Capability.DELIVERY)
    assert reason is not None
    assert "EST" in reason


MISTAKES = [
    ('address = "00:09:1F:8A:11:02"', 'address = "00:09:1F"', "ble.devices[0].address"),
    ('profile = "glucose"', 'profile = "ketone"', "ble.devices[2].profile"),
    ("passkey = 246810", "passkey = 1234567", "ble.devices[1].passkey"),
    ('protocol = "nonin"', 'protocl = "nonin"', "serial.ports[1].protocl"),
    ('power_restore = ["usbrelay", "HILPWR_1=0"]', "", "controls.power_restore"),
    ('back_in_range = ["hil-box", "open"]', "", "ble.devices[2].back_in_range"),
    ('ca_file = "pki/provider-ca.crt"', 'ca_file = "pki/nope.crt"', "provider.ca_file"),
    ('gatewayctl = ["ssh"', 'gatewayctl = [] #', "gateway.gatewayctl"),
    ('kind = "real"', 'kind = "virtual"', "rig.kind"),
]


@pytest.mark.parametrize(("old", "new", "key"), [pytest.param(*m, id=m[2]) for m in MISTAKES])
def test_a_mistake_names_its_key(real: Path, old: str, new: str, key: str) -> None:
    edited(real, old, new)
    with pytest.raises(ProfileError) as err:
        load(str(real))
    assert err.value.key == key, str(err.value)


def test_the_sim_rig_refuses_commands_it_would_ignore(tmp_path: Path) -> None:
    sim = Path(shutil.copy(RIGS_DIR / "sim.toml", tmp_path / "sim.toml"))
    controls = '\n[controls]\npower_cut = ["true"]\npower_restore = ["true"]\n'
    sim.write_text(sim.read_text() + controls)
    with pytest.raises(ProfileError) as err:
        load(str(sim))
    assert err.value.key == "controls.power_cut"


def test_a_missing_profile_says_how_to_name_one(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="RIG=sim or RIG=path"):
        load(str(tmp_path / "nope.toml"))
