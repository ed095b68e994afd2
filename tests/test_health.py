"""Health reports: silent devices, certificate expiry, outbox state; JSON-ready, no clinical."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from buffer.outbox import Outbox
from gateway.pipeline.dbthread import DatabaseThread
from gateway.pipeline.health import DeviceHealth, HealthReporter
from gateway.pipeline.ingest import IngestWriter
from gateway.seal import cjson, wire
from gateway.seal.sealing import RecordSealer
from provider.verifier import Verifier
from rig.pki import create_rig_pki
from tests.factories import make_gateway_info

GW = make_gateway_info()


class Devices:
    def health(self) -> list[DeviceHealth]:
        now = datetime.now(UTC)
        return [
            DeviceHealth(
                "btmac:C0:FF:EE:00:00:01", "ble", "streaming", now, 2.0, 10, 80, duplicates=3
            ),
            DeviceHealth(
                "btmac:C0:FF:EE:00:00:02", "sim", "waiting", now - timedelta(hours=1), 60.0, 1
            ),
            DeviceHealth("btmac:C0:FF:EE:00:00:03", "sim", "waiting", None, None, 0),
        ]


class Uplink:
    state = "backoff"
    last_error: str | None = "cannot reach broker"
    delivered_records = 7


def test_device_is_silent_after_three_expected_intervals() -> None:
    now = datetime.now(UTC)
    d = DeviceHealth("x", "sim", "streaming", now - timedelta(seconds=7), 2.0, 1)
    assert d.silent(now)
    assert not d.silent(now - timedelta(seconds=2))
    assert not DeviceHealth("x", "sim", "idle", None, None, 0).silent(now)  # no expectation


async def test_report_is_sealed_into_the_outbox_and_opens_at_the_provider(tmp_path: Path) -> None:
    pki = create_rig_pki(tmp_path / "pki", gateway_ids=[GW.gateway_id], valid_days=10)
    signing, provider = ed25519.Ed25519PrivateKey.generate(), x25519.X25519PrivateKey.generate()
    db = DatabaseThread()
    outbox = await db.run(Outbox, tmp_path / "o.db")
    writer = IngestWriter(
        outbox, RecordSealer(GW.gateway_id, signing, provider.public_key()), GW, db
    )
    task = asyncio.create_task(writer.run())
    reporter = HealthReporter(
        gateway_id=GW.gateway_id,
        episode_id=GW.episode_id,
        writer=writer,
        outbox=outbox,
        db=db,
        uplink=Uplink(),
        devices=[Devices()],
        cert_file=pki.gateway(GW.gateway_id).client_cert,
        interval_s=60,
        clock_probe=lambda: {"source": "chrony", "synchronised": True, "offset_ms": 0.25},
    )
    seq = await reporter.report_once()
    (rec,) = await db.run(outbox.lease, 10, 10**6)
    assert rec.seq == seq
    assert rec.lane == 3
    opened = Verifier(provider, {GW.gateway_id: signing.public_key()}).accept_record(rec.record)
    body = opened.body
    assert opened.header.kind is wire.RecordKind.HEALTH
    assert body["uplink"] == {
        "state": "backoff",
        "delivered_records": 7,
        "last_error": "cannot reach broker",
        "last_tls_alert": None,
    }
    assert [d["silent"] for d in body["devices"]] == [False, True, False]
    # BLE de-duplications (PHD IG: equal readings in one device second are one) are counted.
    assert [d["duplicates"] for d in body["devices"]] == [3, None, None]
    assert body["alarms"] == ["device-silent:btmac:C0:FF:EE:00:00:02", "certificate-expires-soon"]
    assert 9 < body["certificate"]["days_left"] <= 10
    assert str(body["clock"]["offset_ms"]) == "0.25"
    assert body["outbox"]["depth"] == 0  # counted before the report itself was committed
    assert body["outbox"]["last_seq"] == 0  # not counting the report's own record (seq 1)
    assert seq == 1
    assert cjson.loads(cjson.dumps(body)) == body
    task.cancel()
    db.shutdown()
