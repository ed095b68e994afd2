"""Certificate renewal with EST ``simplereenroll`` (RFC 7030 4.2.2), well before expiry.

Renewal is due once two thirds of the certificate's lifetime have passed (10 days before the
end of a 30-day certificate), which leaves days of retries for a router that is offline for a
while. The key stays (renewal, not rekey); only the certificate file is replaced, atomically,
and the uplink picks it up on its next connection.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.errors import GatewayError
from provisioning.enrol import current_certificate
from provisioning.est import ClientCert, EstClient, build_csr
from provisioning.keystore import KeyStore
from provisioning.layout import StateLayout
from provisioning.safepath import SafeTree

log = structlog.get_logger("provisioning.renewal")

RENEW_AFTER_FRACTION = 2 / 3
CHECK_INTERVAL_S = 3600.0


def renewal_due(cert: x509.Certificate, now: datetime) -> bool:
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return now >= start + (end - start) * RENEW_AFTER_FRACTION


def renew_if_due(
    layout: StateLayout,
    store: KeyStore,
    client: EstClient,
    gateway_id: str,
    now: datetime | None = None,
) -> x509.Certificate | None:
    """Return the new certificate if one was issued, None if none was due."""
    cert = current_certificate(layout, store)
    if cert is None or not renewal_due(cert, now or datetime.now(UTC)):
        return None
    certs = client.simplereenroll(
        build_csr(store, gateway_id), ClientCert(layout.client_cert, store.tls_key_path())
    )
    SafeTree(layout.state_dir).atomic_write(
        layout.client_cert,
        b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs),
        0o644,
    )
    log.info(
        "provisioning.certificate_renewed",
        serial=hex(certs[0].serial_number),
        not_after=certs[0].not_valid_after_utc.isoformat(),
    )
    return certs[0]


async def renewal_loop(
    layout: StateLayout, store: KeyStore, client: EstClient, gateway_id: str
) -> None:
    """The daemon's task: check hourly; a failure is logged and retried at the next check."""
    while True:
        try:
            await asyncio.to_thread(renew_if_due, layout, store, client, gateway_id)
        except GatewayError as exc:
            log.warning("provisioning.renewal_failed", error=exc.one_line())
        await asyncio.sleep(CHECK_INTERVAL_S)
