"""Provider side: open what a gateway uploaded, prove it authentic and complete.

For every batch: split it, and for every record check the signature against the gateway's public
key, decrypt it with the provider's private key, check it came in on that gateway's own topic,
feed the hash chain, and decode the plaintext (FHIR Bundle -> Measurements for observation
records). Failures are counted by reason and reported with the record's sequence number; one bad
record never hides the good ones next to it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.errors import VerifyError
from gateway.model import Measurement
from gateway.seal import cjson, staged, wire
from gateway.seal.sealing import ProviderPrivateKey, SuiteName, open_record
from provider import fhir_read
from provider.chain import ChainTracker


@dataclass(frozen=True, slots=True)
class VerifiedRecord:
    header: wire.RecordHeader
    duplicate: bool
    body: Any  # decoded JSON plaintext
    measurements: tuple[Measurement, ...] = ()


@dataclass(slots=True)
class BatchResult:
    records: list[VerifiedRecord] = field(default_factory=list)
    failures: list[VerifyError] = field(default_factory=list)


def gateway_id_from_topic(topic: str) -> str | None:
    """``<prefix>/gw/<gateway id>/records`` -> gateway id."""
    parts = topic.split("/")
    if len(parts) >= 3 and parts[-3] == "gw":
        return parts[-2]
    return None


def _topic_leaf(topic: str | None) -> str | None:
    """``records`` or ``health`` (or whatever else the topic ends with); None without a topic."""
    return None if topic is None else topic.rsplit("/", 1)[-1]


class Verifier:
    def __init__(
        self,
        provider_key: ProviderPrivateKey,
        gateway_keys: Mapping[str, ed25519.Ed25519PublicKey],
    ) -> None:
        self._provider_key = provider_key
        self._gateway_keys = dict(gateway_keys)
        self.chain = ChainTracker()
        self.failures: Counter[str] = Counter()
        self.records_ok = 0
        self.readings_ok = 0
        self.test_readings = 0  # readings labelled HTEST (test / demo data, never clinical)
        # Per (gateway, epoch): True for a test episode's chain, False for a clinical one, from
        # its first observation record. Test and clinical data never share a chain.
        self._test_chain: dict[tuple[str, int], bool] = {}

    def trust(self, gateway_id: str, key: ed25519.Ed25519PublicKey) -> None:
        """A gateway (re-)enrolled with a new record-signing key (from its EST certificate)."""
        self._gateway_keys[gateway_id] = key

    def accept_batch(self, payload: bytes, topic: str | None = None) -> BatchResult:
        result = BatchResult()
        try:
            records = wire.decode_batch(payload)
        except VerifyError as exc:
            self.failures[exc.reason] += 1
            result.failures.append(exc)
            return result
        topic_gw = gateway_id_from_topic(topic) if topic is not None else None
        leaf = _topic_leaf(topic)
        for record in records:
            try:
                result.records.append(self.accept_record(record, topic_gw, leaf))
            except VerifyError as exc:
                self.failures[exc.reason] += 1
                result.failures.append(exc)
        return result

    def accept_record(
        self, record: bytes, topic_gateway: str | None = None, topic_leaf: str | None = None
    ) -> VerifiedRecord:
        """Check and open one record; ``topic_leaf`` is the topic's last level (records/health)."""
        parts = wire.parse_record(record)
        gid = parts.header.gateway_id
        if topic_gateway is not None and topic_gateway != gid:
            raise VerifyError(
                f"record of gateway {gid} arrived on the topic of {topic_gateway}",
                reason="topic-mismatch",
                seq=parts.header.seq,
            )
        if topic_leaf is not None:
            expected = "health" if parts.header.kind is wire.RecordKind.HEALTH else "records"
            if topic_leaf != expected:
                raise VerifyError(
                    f"a {parts.header.kind.name.lower()} record of gateway {gid} arrived on"
                    f" .../{topic_leaf}; it belongs on .../{expected}",
                    reason="topic-mismatch",
                    seq=parts.header.seq,
                )
        key = self._gateway_keys.get(gid)
        if key is None:
            raise VerifyError(
                f"unknown gateway {gid}", reason="unknown-gateway", seq=parts.header.seq
            )
        opened = open_record(record, self._provider_key, key)
        hdr = opened.header
        try:
            body = cjson.loads(opened.plaintext)
        except ValueError:
            raise VerifyError(
                f"record {hdr.seq} plaintext is not JSON", reason="malformed-plaintext", seq=hdr.seq
            ) from None
        measurements: tuple[Measurement, ...] = ()
        test_readings = 0
        if hdr.kind is wire.RecordKind.OBSERVATIONS:
            measurements = tuple(fhir_read.measurements_from_bundle(body))
            self._check_episode_kind(hdr, fhir_read.is_test_episode(body))
            test_readings = fhir_read.test_labelled(body)
        elif hdr.kind is wire.RecordKind.STAGED_CHUNK:
            for bundle in self._staged_bundles(body, hdr):  # one reading each
                measurements += tuple(fhir_read.measurements_from_bundle(bundle))
                self._check_episode_kind(hdr, fhir_read.is_test_episode(bundle))
                test_readings += fhir_read.test_labelled(bundle)
        fresh = self.chain.add(hdr, opened.record_hash)
        if fresh:
            self.records_ok += 1
            self.readings_ok += len(measurements)
            self.test_readings += test_readings
        return VerifiedRecord(header=hdr, duplicate=not fresh, body=body, measurements=measurements)

    def _staged_bundles(self, body: Any, hdr: wire.RecordHeader) -> list[Any]:
        """A chunk recovered after an unclean stop: unwrap its key, open every row (AEAD), and
        parse each row's one-reading Bundle (docs/wire-format.md section 6.4)."""
        if not isinstance(body, dict):
            raise VerifyError(
                f"record {hdr.seq}: staged chunk is not an object", reason="staged-chunk",
                seq=hdr.seq,
            )
        suite = (
            SuiteName.MLKEM768_X25519
            if isinstance(self._provider_key, hpke.MLKEM768X25519PrivateKey)
            else SuiteName.X25519
        )
        out: list[Any] = []
        for n, row in enumerate(
            staged.open_rows(body, self._provider_key, suite, hdr.gateway_id, hdr.seq)
        ):
            try:
                out.append(cjson.loads(row))
            except ValueError:  # the row decrypted but is not JSON
                raise VerifyError(
                    f"record {hdr.seq}: staged row {n} is not JSON",
                    reason="staged-chunk",
                    seq=hdr.seq,
                ) from None
        return out

    def _check_episode_kind(self, hdr: wire.RecordHeader, test: bool) -> None:
        key = (hdr.gateway_id, hdr.epoch)
        kind = self._test_chain.setdefault(key, test)
        if kind != test:
            chain_kind, record_kind = ("test", "clinical") if kind else ("clinical", "test")
            raise VerifyError(
                f"record {hdr.seq} of gateway {hdr.gateway_id} epoch {hdr.epoch} holds"
                f" {record_kind} data in a {chain_kind} chain; check the gateway's enrolment"
                " bundle (test_episode) or its [gateway] test_episode",
                reason="test-clinical-mix",
                gateway_id=hdr.gateway_id,
                seq=hdr.seq,
            )

    @property
    def signature_failures(self) -> int:
        return self.failures["bad-signature"]

    def summary(self) -> dict[str, Any]:
        missing = self.chain.all_missing()
        return {
            "records": self.records_ok,
            "readings": self.readings_ok,
            "duplicates": self.chain.duplicates,
            "missing": sum(len(v) for v in missing.values()),
            "missing_seqs": {f"{gw}/{epoch}": seqs for (gw, epoch), seqs in missing.items()},
            "chain_breaks": len(self.chain.breaks),
            "signature_failures": self.signature_failures,
            "failures": dict(self.failures),
            "test_readings": self.test_readings,
        }
