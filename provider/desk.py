"""The provider desk: a test provider to rehearse with (``homecare-provider`` subcommands).

One folder (``--desk``, default ``.desk`` or ``$HOMECARE_PROVIDER_DESK``) holds everything a
rehearsal, a training session or a real HIL rig needs from the hospital's side::

    pki/                 the test CA, the broker's and the verifier's certificates, the HPKE key
    bundle-signing.key   the Ed25519 key that signs enrolment bundles (.pub: for the router)
    desk.json            where serve-est listens (EST URL, broker host and port, its pid)
    router.toml          the [provisioning] table a router needs to enrol against this desk
    tokens.json          one-time tokens not yet used (token -> router)
    bundles/<id>.json    the signed episode bundle of each router (bound to the router's key
                         and the next generation when the router fetches it)
    generations.json     the last bundle generation handed to each router
    issued.json          certificates issued, revocations, each router's record-signing key
    crl.pem              the CRL the EST service writes and the broker reads
    routers.json         what ``receive`` saw of each router: last record, gaps, last health
    releases/<sha256>    release artifacts ``release offer`` published; serve-est serves them
                         to routers with a valid certificate (/homecare/v1/releases/<sha256>)

Commands (each a separate process; they share the folder, not memory):

- ``serve-est``   the EST service (test CA, one-time tokens, CRL) and the MQTT broker (mutual TLS,
                  refusing revoked certificates); prints where they listen and how to stop them
- ``issue-token`` a one-time enrolment token for one router (prints the token)
- ``sign-bundle`` the signed episode bundle for a router and its devices
- ``receive``     receive and verify what the routers send (provider/service.py)
- ``routers``     enrolled routers with their last record, gaps and health
- ``signing-key`` an enrolled router's record-signing public key (for a verifier elsewhere)

NOT a production provider: the CA key sits unencrypted in ``pki/`` (see rig/pki.py).
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import fcntl
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from gateway.atomicfile import atomic_write
from gateway.errors import GatewayError
from provider.broker import MosquittoBroker
from provider.bundle_tool import load_or_create_key, parse_device
from provider.commands import CommandCentre
from provider.est import EstAuthority, EstService, _Issued, make_token
from provisioning.bundle import EnrolmentBundle, sign_bundle, tls_key_sha256
from rig.pki import RigPki, create_rig_pki

DESK_ENV = "HOMECARE_PROVIDER_DESK"
DEFAULT_DESK = Path(".desk")
MAX_ROUTERS = 10_000  # routers.json and issued.json keep one entry per router: bounded by this
EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2


class DeskError(GatewayError):
    """The desk folder is missing something a command needs (the message says which command)."""


@dataclass(frozen=True, slots=True)
class Desk:
    root: Path

    @property
    def pki_dir(self) -> Path:
        return self.root / "pki"

    @property
    def signing_key(self) -> Path:
        return self.root / "bundle-signing.key"

    @property
    def signing_pub(self) -> Path:
        return self.root / "bundle-signing.key.pub"

    @property
    def state(self) -> Path:
        return self.root / "desk.json"

    @property
    def router_toml(self) -> Path:
        return self.root / "router.toml"

    @property
    def tokens(self) -> Path:
        return self.root / "tokens.json"

    @property
    def bundles(self) -> Path:
        return self.root / "bundles"

    @property
    def generations(self) -> Path:
        """Per router, the last bundle generation handed out (a router refuses older ones)."""
        return self.root / "generations.json"

    @property
    def issued(self) -> Path:
        return self.root / "issued.json"

    @property
    def crl(self) -> Path:
        return self.root / "crl.pem"

    @property
    def routers(self) -> Path:
        return self.root / "routers.json"

    @property
    def releases(self) -> Path:
        return self.root / "releases"

    def create(self) -> None:
        for d in (self.root, self.bundles):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o700)

    def pki(self, host: str = "127.0.0.1") -> RigPki:
        hosts = tuple(dict.fromkeys(("localhost", "127.0.0.1", host)))
        return create_rig_pki(self.pki_dir, gateway_ids=(), broker_hosts=hosts)

    def existing_pki(self) -> RigPki:
        if not (self.pki_dir / "ca.crt").exists():
            raise DeskError(
                f"no test CA in {self.pki_dir}",
                hint=f"start the desk first: homecare-provider serve-est --desk {self.root}",
            )
        return self.pki()

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Serialises read-modify-write of the desk's files between its processes."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("a") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def read(self, path: Path, default: Any) -> Any:
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return default
        except (OSError, ValueError) as exc:
            raise DeskError(f"{path} is unreadable ({exc}); remove it to start afresh") from None

    def write(self, path: Path, data: Any) -> None:
        atomic_write(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode(), 0o600)

    def listening(self) -> dict[str, Any]:
        info = self.read(self.state, None)
        if not isinstance(info, dict) or "broker_port" not in info:
            raise DeskError(
                f"the desk in {self.root} has not been started",
                hint=f"homecare-provider serve-est --desk {self.root}",
            )
        return info

    def bundle_path(self, gateway_id: str) -> Path:
        if "/" in gateway_id or gateway_id.startswith("."):
            raise DeskError(f"unusable router id {gateway_id!r}")
        return self.bundles / f"{gateway_id}.json"

    def signing_keys(self) -> dict[str, ed25519.Ed25519PublicKey]:
        """Each enrolled router's record-signing key, from the certificate the desk issued."""
        keys: dict[str, ed25519.Ed25519PublicKey] = {}
        for gw, b64 in self.read(self.issued, {}).get("signing_keys", {}).items():
            key = serialization.load_der_public_key(base64.b64decode(b64))
            if isinstance(key, ed25519.Ed25519PublicKey):
                keys[gw] = key
        return keys


@dataclass
class DeskAuthority(EstAuthority):
    """The EST authority with its book-keeping in the desk folder, so ``issue-token`` and
    ``sign-bundle`` (other processes) and a restarted ``serve-est`` see the same tokens,
    bundles, certificates and revocations."""

    desk: Desk = field(default_factory=lambda: Desk(DEFAULT_DESK))

    def __post_init__(self) -> None:
        saved = self.desk.read(self.desk.issued, {})
        for entry in saved.get("certificates", []):
            revoked = entry.get("revoked_at")
            self.issued.append(
                _Issued(
                    entry["gateway"],
                    int(entry["serial"]),
                    datetime.fromisoformat(revoked) if revoked else None,
                )
            )
        for gw, b64 in saved.get("signing_keys", {}).items():
            self.signing_keys[gw] = base64.b64decode(b64)
        super().__post_init__()

    def take_token(self, token: str, cn: str) -> str | None:
        with self.desk.locked():
            tokens = self.desk.read(self.desk.tokens, {})
            if tokens.get(token) != cn or not cn:
                return None
            del tokens[token]  # one time only, across restarts too
            self.desk.write(self.desk.tokens, tokens)
        return cn

    def bundle_for(self, gateway_id: str) -> bytes | None:
        try:
            return self.desk.bundle_path(gateway_id).read_bytes()
        except (OSError, DeskError):
            return None

    def bound_bundle(self, gateway_id: str, cert: x509.Certificate) -> bytes | None:
        """``sign-bundle`` left the episode in the desk folder; a router that fetches it gets
        it bound to its certified key and the next generation (issue 16), signed now."""
        stored = self.bundle_for(gateway_id)
        if stored is None:
            return None
        payload = base64.b64decode(json.loads(stored)["payload"])
        episode = EnrolmentBundle.from_payload(json.loads(payload))
        with self.desk.locked():
            generations = self.desk.read(self.desk.generations, {})
            generation = int(generations.get(gateway_id, 0)) + 1
            generations[gateway_id] = generation
            self.desk.write(self.desk.generations, generations)
        public = cert.public_key()
        assert isinstance(public, ec.EllipticCurvePublicKey)  # the CA issues P-256 keys only
        bound = dataclasses.replace(
            episode, tls_key_sha256=tls_key_sha256(public), generation=generation
        )
        return sign_bundle(bound, load_or_create_key(self.desk.signing_key, create=False))

    def saved(self) -> None:
        with self.lock:
            data = {
                "certificates": [
                    {
                        "gateway": i.gateway_id,
                        "serial": str(i.serial),
                        "revoked_at": i.revoked_at.isoformat() if i.revoked_at else None,
                    }
                    for i in self.issued
                ],
                "signing_keys": {
                    gw: base64.b64encode(spki).decode() for gw, spki in self.signing_keys.items()
                },
            }
        with self.desk.locked():
            self.desk.write(self.desk.issued, data)


def _desk(args: argparse.Namespace) -> Desk:
    return Desk(Path(args.desk).resolve())


def router_provisioning(desk: Desk, est_url: str, pki: RigPki) -> str:
    return (
        "# For the router's gateway.toml: enrol against the test provider desk in\n"
        f"# {desk.root} (NOT a production provider).\n"
        "[provisioning]\n"
        f'est_url = "{est_url}"\n'
        f'est_ca_file = "{pki.ca_cert}"\n'
        f'bundle_signing_key = "{desk.signing_pub}"\n'
    )


def cmd_serve_est(args: argparse.Namespace) -> int:
    desk = _desk(args)
    desk.create()
    pki = desk.pki(args.host)
    load_or_create_key(desk.signing_key, create=True)
    authority = DeskAuthority(pki, desk.crl, desk=desk, releases_dir=desk.releases)
    broker = MosquittoBroker(
        pki, desk.root / "broker", host=args.host, port=args.broker_port, crl_file=desk.crl
    )
    broker.start()
    # A revocation takes effect at the broker when it rereads the CRL (restart, same port).
    authority.on_revoke = broker.restart
    try:
        est = EstService(authority, args.host, args.port)
    except OSError as exc:
        broker.stop()
        raise DeskError(
            f"the EST service cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
            hint="choose another --port (0: any free one)",
        ) from None
    est.start()
    info = {
        "est_url": est.url,
        "broker_host": broker.host,
        "broker_port": broker.port,
        "ca_file": str(pki.ca_cert),
        "pid": os.getpid(),
    }
    desk.write(desk.state, info)
    atomic_write(desk.router_toml, router_provisioning(desk, est.url, pki).encode(), 0o644)
    print(f"desk: EST service (test CA, one-time tokens, CRL) at {est.url}")
    print(f"desk: MQTT broker (mutual TLS, revoked certificates refused) at "
          f"{broker.host}:{broker.port}")
    print(f"desk: a router enrols with the [provisioning] table in {desk.router_toml}")
    print(f"desk: files in {desk.root}; stop with Ctrl-C or: kill {os.getpid()}", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    deadline = time.monotonic() + args.seconds if args.seconds > 0 else None
    try:
        while not done.is_set() and (deadline is None or time.monotonic() < deadline):
            done.wait(0.5)
    finally:
        est.stop()
        broker.stop()
        desk.write(desk.state, {**info, "pid": None, "stopped": datetime.now(UTC).isoformat()})
        print("desk: stopped (tokens, bundles and certificates stay in the folder)", flush=True)
    return EXIT_OK


def cmd_issue_token(args: argparse.Namespace) -> int:
    desk = _desk(args)
    desk.create()
    token = make_token()
    with desk.locked():
        tokens = desk.read(desk.tokens, {})
        if len(tokens) >= MAX_ROUTERS:
            raise DeskError(
                f"{len(tokens)} tokens are unused; remove {desk.tokens} to start afresh"
            )
        tokens[token] = args.gateway
        desk.write(desk.tokens, tokens)
    if args.json:
        print(json.dumps({"gateway": args.gateway, "token": token}))
    else:
        print(token)
        print(
            f"one-time enrolment token for router {args.gateway} (on the router: "
            f"gatewayctl enrol --token {token})",
            file=sys.stderr,
        )
    return EXIT_OK


def cmd_sign_bundle(args: argparse.Namespace) -> int:
    desk = _desk(args)
    pki = desk.existing_pki()
    if args.broker:
        host, _, port_text = args.broker.rpartition(":")
        port = int(port_text)
    else:
        info = desk.listening()
        host, port = str(info["broker_host"]), int(info["broker_port"])
    now = datetime.now(UTC)
    bundle = EnrolmentBundle(
        gateway_id=args.gateway,
        episode_id=args.episode,
        not_before=now - timedelta(minutes=5),
        not_after=now + timedelta(days=args.valid_days),
        broker_host=host,
        broker_port=port,
        broker_ca_pem=pki.ca_cert.read_text(),
        provider_hpke_public_pem=pki.hpke_pub.read_text(),
        devices=tuple(args.device),
        test_episode=True,  # a test CA's episode is never clinical: every Observation is HTEST
        # The command key, once ``homecare-provider command keygen`` made one (issue 20).
        command_key=CommandCentre(desk.root).public_key(),
    )
    out = desk.bundle_path(args.gateway)
    desk.create()
    signed = sign_bundle(bundle, load_or_create_key(desk.signing_key, create=True))
    atomic_write(out, signed, 0o600)
    devices = ", ".join(f"{d.profile} {d.address}" for d in bundle.devices) or "no devices"
    print(
        f"signed bundle for router {args.gateway}, episode {args.episode} ({devices}), "
        f"valid until {bundle.not_after:%Y-%m-%d %H:%M} UTC: {out}"
    )
    return EXIT_OK


def _ago(iso: str | None) -> str:
    if not iso:
        return "never"
    seconds = (datetime.now(UTC) - datetime.fromisoformat(iso)).total_seconds()
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


def router_rows(desk: Desk) -> list[dict[str, Any]]:
    """One row per router the desk knows: issued a certificate, or seen by ``receive``."""
    issued = desk.read(desk.issued, {}).get("certificates", [])
    seen: dict[str, dict[str, Any]] = desk.read(desk.routers, {})
    names = list(dict.fromkeys([c["gateway"] for c in issued] + list(seen)))
    rows = []
    for gw in names[:MAX_ROUTERS]:
        certs = [c for c in issued if c["gateway"] == gw]
        live = [c for c in certs if not c.get("revoked_at")]
        s = seen.get(gw, {})
        rows.append(
            {
                "router": gw,
                "certificate": "valid" if live else ("revoked" if certs else "none"),
                "last_record": s.get("last_seq"),
                "last_record_kind": s.get("last_kind"),
                "last_record_at": s.get("last_at"),
                "records": s.get("records", 0),
                "missing": s.get("missing", 0),
                "rejected": s.get("rejected", 0),
                "health": s.get("health"),
            }
        )
    return rows


def _health_text(h: dict[str, Any] | None) -> str:
    if not h:
        return "no report yet"
    return (
        f"uplink {h.get('uplink')}, outbox {h.get('outbox')} waiting, "
        f"{h.get('devices')} devices ({h.get('silent')} silent), "
        f"alarms {', '.join(h.get('alarms') or []) or 'none'}"
    )


def cmd_routers(args: argparse.Namespace) -> int:
    rows = router_rows(_desk(args))
    if args.json:
        print(json.dumps(rows, sort_keys=True))
        return EXIT_OK
    if not rows:
        print("no router has enrolled with this desk yet")
        return EXIT_OK
    for r in rows:
        last = (
            "no record received"
            if r["last_record"] is None
            else f"last record {r['last_record']} ({r['last_record_kind']}, "
            f"{_ago(r['last_record_at'])})"
        )
        print(
            f"{r['router']}  certificate {r['certificate']}; {last}; {r['records']} records, "
            f"{r['missing']} missing, {r['rejected']} rejected; health: {_health_text(r['health'])}"
        )
    return EXIT_OK


def cmd_signing_key(args: argparse.Namespace) -> int:
    desk = _desk(args)
    key = desk.signing_keys().get(args.gateway)
    if key is None:
        raise DeskError(
            f"router {args.gateway} has no certificate from the desk in {desk.root}",
            hint="enrol it first (gatewayctl enrol on the router)",
        )
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if args.out is None:
        sys.stdout.write(pem.decode())
    else:
        atomic_write(args.out, pem, 0o644)
        print(f"record-signing key of router {args.gateway}: {args.out}")
    return EXIT_OK


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--desk",
        type=Path,
        default=Path(os.environ.get(DESK_ENV, str(DEFAULT_DESK))),
        help=f"the desk's folder (default: ${DESK_ENV} or {DEFAULT_DESK})",
    )


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], int], str, str]] = {
    "serve-est": (
        cmd_serve_est,
        "serve EST (test CA, one-time tokens, CRL) and the MQTT broker until stopped",
        "homecare-provider serve-est --desk .desk",
    ),
    "issue-token": (
        cmd_issue_token,
        "print a one-time enrolment token for a router",
        "homecare-provider issue-token --gateway gw-0421",
    ),
    "sign-bundle": (
        cmd_sign_bundle,
        "sign the episode bundle for a router and its devices",
        "homecare-provider sign-bundle --gateway gw-0421 --episode ep-7f3a "
        "--device ble,C0:FF:EE:00:00:01,thermometer,3600",
    ),
    "signing-key": (
        cmd_signing_key,
        "print an enrolled router's record-signing public key (PEM), from its certificate",
        "homecare-provider signing-key --gateway gw-0421 --out gw-0421.pub",
    ),
    "routers": (
        cmd_routers,
        "list enrolled routers: certificate, last record, gaps and health",
        "homecare-provider routers",
    ),
}


def build_parser(prog: str = "homecare-provider") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="The provider desk: a test provider to rehearse enrolment, install-check and "
        "return with, and the reference receiver (docs/operations.md, rehearsal).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n"
        + "".join(f"  {n:<12} {h}\n" for n, (_, h, _e) in COMMANDS.items())
        + "  receive      receive and verify what routers send (homecare-provider receive -h)\n"
        + "  command      sign and send commands to routers (homecare-provider command -h)\n",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text, example) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text,
                           epilog=f"example: {example}")
        _common(p)
        if name == "serve-est":
            p.add_argument("--host", default="127.0.0.1", help="address to listen on")
            p.add_argument("--port", type=int, default=0, help="EST port (0: any free port)")
            p.add_argument(
                "--broker-port", type=int, default=0, help="MQTT port (0: any free port)"
            )
            p.add_argument("--seconds", type=float, default=0, help="stop after N seconds")
        if name == "issue-token":
            p.add_argument("--gateway", required=True, help="the router's id (its label)")
            p.add_argument("--json", action="store_true")
        if name == "sign-bundle":
            p.add_argument("--gateway", required=True, help="the router's id")
            p.add_argument("--episode", required=True, help="the patient episode's id")
            p.add_argument(
                "--device",
                type=parse_device,
                action="append",
                default=[],
                help="transport,address,profile,interval_s[,passkey] (repeatable)",
            )
            p.add_argument("--valid-days", type=float, default=7.0)
            p.add_argument("--broker", help="host:port for the router (default: the desk's)")
        if name == "routers":
            p.add_argument("--json", action="store_true")
        if name == "signing-key":
            p.add_argument("--gateway", required=True, help="the router's id")
            p.add_argument("--out", type=Path, help="write it to this file (default: stdout)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command][0](args)
    except GatewayError as exc:
        print(f"homecare-provider: {exc.one_line()}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, DeskError) else EXIT_PROBLEM


if __name__ == "__main__":
    raise SystemExit(main())
