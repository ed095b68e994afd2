"""Test episodes: every Observation is labelled HTEST, and a receiver keeps test data out of
clinical chains (and clinical data out of test chains)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from gateway.config.settings import load
from gateway.errors import ConfigError
from gateway.fhir import observation as fhir
from gateway.fhir.vocab import HTEST, FhirMappingError
from gateway.model import MeasurementStatus
from gateway.seal import cjson, wire
from gateway.seal.sealing import RecordSealer
from provider import fhir_read
from provider.verifier import Verifier
from provisioning.bundle import EnrolmentBundle, sign_bundle, verify_bundle
from tests.factories import VALID_CONFIG, make_bp_measurement, make_gateway_info, make_measurement
from tests.factories import write_config as write

# PHD IG: test and demo data -> meta.security HTEST from HL7 v3 ActReason.
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
CLINICAL = make_gateway_info()
TEST = make_gateway_info(test_episode=True)


def test_the_htest_code_is_the_v3_act_reason_one() -> None:
    assert (HTEST["system"], HTEST["code"]) == (ACT_REASON, "HTEST")


def test_a_test_episode_labels_every_observation_and_its_bundle_htest() -> None:
    bundle = fhir.bundle([make_measurement(), make_bp_measurement()], TEST)
    observations = [e["resource"] for e in bundle["entry"]
                    if e["resource"]["resourceType"] == "Observation"]
    assert len(observations) == 2
    assert all(o["meta"]["security"] == [HTEST] for o in observations)
    assert bundle["meta"] == {"security": [HTEST]}
    assert fhir_read.is_test_episode(bundle)
    # The provider reads it back to the very same readings.
    back = fhir_read.measurements_from_bundle(cjson.loads(cjson.dumps(bundle)))
    assert back == [make_measurement(), make_bp_measurement()]


def test_a_clinical_episode_is_unchanged_and_labels_only_device_test_data() -> None:
    bundle = fhir.bundle(
        [make_measurement(), make_measurement(status=MeasurementStatus.TEST_DATA)], CLINICAL
    )
    assert "meta" not in bundle
    assert not fhir_read.is_test_episode(bundle)
    obs = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"]
    assert ["security" in o["meta"] for o in obs] == [False, True]
    assert len(fhir_read.measurements_from_bundle(bundle)) == 2


def test_an_observation_without_htest_in_a_test_bundle_is_refused() -> None:
    bundle = fhir.bundle([make_measurement()], TEST)
    obs = next(e["resource"] for e in bundle["entry"]
               if e["resource"]["resourceType"] == "Observation")
    del obs["meta"]["security"]
    with pytest.raises(FhirMappingError, match="test-data marking"):
        fhir_read.measurements_from_bundle(bundle)


SIGNING = ed25519.Ed25519PrivateKey.generate()
PROVIDER = x25519.X25519PrivateKey.generate()


def _record(gw_info: object, seq: int, prev: bytes, *, epoch: int = 1) -> bytes:
    assert isinstance(gw_info, fhir.GatewayInfo)
    plaintext = cjson.dumps(fhir.bundle([make_measurement()], gw_info))
    return RecordSealer(CLINICAL.gateway_id, SIGNING, PROVIDER.public_key()).seal(
        plaintext, kind=wire.RecordKind.OBSERVATIONS, lane=1, epoch=epoch, seq=seq,
        prev_hash=prev, created_ms=1_714_550_405_250 + seq,
    )


@pytest.mark.parametrize(("first", "second"), [(TEST, CLINICAL), (CLINICAL, TEST)])
def test_the_receiver_refuses_to_mix_test_and_clinical_data_in_one_chain(
    first: fhir.GatewayInfo, second: fhir.GatewayInfo
) -> None:
    verifier = Verifier(PROVIDER, {CLINICAL.gateway_id: SIGNING.public_key()})
    one = _record(first, 1, wire.GENESIS_HASH)
    two = _record(second, 2, wire.record_hash(one))
    verifier.accept_record(one)
    result = verifier.accept_batch(wire.encode_batch([two]))
    assert [f.reason for f in result.failures] == ["test-clinical-mix"]
    assert "check the gateway's enrolment bundle" in result.failures[0].message
    assert verifier.summary()["failures"] == {"test-clinical-mix": 1}
    # A new epoch is a new chain: it may be of the other kind.
    assert not verifier.accept_batch(wire.encode_batch([_record(second, 1, wire.GENESIS_HASH,
                                                                epoch=2)])).failures


def test_a_test_chain_accepts_test_records() -> None:
    verifier = Verifier(PROVIDER, {CLINICAL.gateway_id: SIGNING.public_key()})
    one = _record(TEST, 1, wire.GENESIS_HASH)
    two = _record(TEST, 2, wire.record_hash(one))
    assert not verifier.accept_batch(wire.encode_batch([one, two])).failures
    assert verifier.summary()["readings"] == 2
    assert verifier.summary()["test_readings"] == 2


def test_gateway_toml_sets_a_test_episode_for_an_unprovisioned_rig(files: Path) -> None:
    assert load(write(files, VALID_CONFIG)).test_episode is False
    text = VALID_CONFIG.replace('id = "gw-0001"', 'id = "gw-0001"\ntest_episode = true')
    assert load(write(files, text)).test_episode is True
    bad = VALID_CONFIG.replace('id = "gw-0001"', 'id = "gw-0001"\ntest_episode = "yes"')
    with pytest.raises(ConfigError, match=r"gateway.test_episode: must be true or false"):
        load(write(files, bad))


def _bundle(**changes: object) -> EnrolmentBundle:
    now = datetime.now(UTC)
    fields: dict[str, object] = {
        "gateway_id": "gw-1", "episode_id": "ep-42", "not_before": now - timedelta(hours=1),
        "not_after": now + timedelta(days=1), "broker_host": "broker.example",
        "broker_port": 8883, "broker_ca_pem": "ca", "provider_hpke_public_pem": "pub",
        "devices": (),
    }
    fields.update(changes)
    return EnrolmentBundle(**fields)  # type: ignore[arg-type]


def test_the_enrolment_bundle_carries_the_test_flag() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    test = verify_bundle(sign_bundle(_bundle(test_episode=True), key), key.public_key(), "gw-1")
    assert test.test_episode is True
    clinical = _bundle()
    assert "test_episode" not in clinical.payload_json()  # clinical bundles are unchanged
    assert verify_bundle(sign_bundle(clinical, key), key.public_key(), "gw-1").test_episode is False
