#!/usr/bin/env bash
# Builds dist/homecare-gateway_<version>_<arch>.deb from this repository with dpkg-deb.
#
#   packaging/build-deb.sh [--out DIR] [--keep-staging] [--arch amd64|arm64]
#
# What goes in (packaging/README.md has the reasons):
#   /opt/homecare-gateway/releases/<version>   a virtualenv holding the app and every dependency,
#                                    built here at build time (dh-virtualenv style), so installing
#                                    needs no network, no pip and no compiler on the router; one
#                                    release of the A/B layout (software updates, gateway/updates):
#                                    postinst points /opt/homecare-gateway/current and .../updater
#                                    at it
#   /usr/bin/gatewayd, gatewayctl    symlinks through /opt/homecare-gateway/current
#   /lib/systemd/system/gatewayd.service, homecare-gateway-update{.path,.service,-boot.service}
#   /usr/lib/sysusers.d, /usr/lib/tmpfiles.d, /usr/lib/udev/rules.d
#   /usr/share/polkit-1/rules.d/50-homecare-gateway.rules   (power-off on a low UPS battery)
#   /etc/homecare-gateway/gateway.toml.example   (conffile; gateway.toml itself comes from enrolment)
#   /etc/dbus-1/system.d/homecare-gateway-bluez.conf   (conffile; BlueZ calls for root + service)
#   /usr/share/doc/homecare-gateway/             READMEs and the exact Python package list
#
# Environment:
#   OUT_DIR          where the .deb goes (default: <repo>/dist; --out wins)
#   TARGET_PYTHON    the router's interpreter the venv is bound to (default /usr/bin/python3; it
#                    is resolved to /usr/bin/pythonX.Y and the package depends on pythonX.Y)
#   BUILD_PYTHON     a Python whose pip (>= 22.3, for --python) drives the install (default python3)
#   CONSTRAINTS      a pip constraints file pinning every dependency (release builds should use one)
#   PIP_NO_INDEX=1 PIP_FIND_LINKS=/path/wheelhouse   build offline from a wheelhouse (pip reads these)
#   DEB_MAINTAINER   the Maintainer field
#   DEB_COMPRESSION  dpkg-deb compressor (default xz)
#   VERSION_OVERRIDE build this tree as another version (a test release of the field tier; the
#                    package metadata, the release directory and the .deb all carry it)
# Must run on the Debian release of the router image (the venv is bound to that release's
# Python). --arch builds for another CPU architecture (arm64 on amd64, for the usual provider
# router): pip then fetches that architecture's binary wheels (manylinux, glibc <= the release's)
# with --platform/--target instead of installing through the venv's own interpreter, and nothing
# built for the target is executed here (byte-code is architecture-independent). The result is
# only as good as its smoke test on that architecture: field/ runs it under qemu-user.
set -euo pipefail
umask 022

PKG=homecare-gateway
BASE=/opt/homecare-gateway
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT_DIR=${OUT_DIR:-$REPO/dist}
KEEP_STAGING=0
TARGET_ARCH=

while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT_DIR=$2; shift 2 ;;
        --out=*) OUT_DIR=${1#--out=}; shift ;;
        --keep-staging) KEEP_STAGING=1; shift ;;
        --arch) TARGET_ARCH=$2; shift 2 ;;
        --arch=*) TARGET_ARCH=${1#--arch=}; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "build-deb.sh: unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
done

die() { echo "build-deb.sh: $*" >&2; exit 1; }
for tool in dpkg-deb dpkg; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is missing (apt-get install dpkg)"
done

# --- the interpreter the venv is bound to --------------------------------------------------
TARGET_PYTHON=${TARGET_PYTHON:-/usr/bin/python3}
[ -x "$TARGET_PYTHON" ] || die "target interpreter $TARGET_PYTHON not found"
PYVER=$("$TARGET_PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
"$TARGET_PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "$TARGET_PYTHON is Python $PYVER; the daemon needs 3.11 or newer"
# Bind to the versioned binary: a later python3 -> 3.(N+1) switch must not orphan site-packages.
VENV_PYTHON=/usr/bin/python$PYVER
[ -x "$VENV_PYTHON" ] || die "$VENV_PYTHON not found (TARGET_PYTHON must be a distribution Python)"

BUILD_PYTHON=${BUILD_PYTHON:-python3}
"$BUILD_PYTHON" -m pip --version >/dev/null 2>&1 || die "$BUILD_PYTHON has no pip"
"$BUILD_PYTHON" - <<'EOF' || die "pip >= 22.3 is needed (for --python)"
import sys
from importlib.metadata import version
major, minor = (int(x) for x in version("pip").split(".")[:2])
sys.exit((major, minor) < (22, 3))
EOF

VERSION=$("$TARGET_PYTHON" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$REPO/pyproject.toml")
VERSION=${VERSION_OVERRIDE:-$VERSION}
# A release version is also a directory name under releases/ (gateway/updates/release.py).
[[ "$VERSION" =~ ^(0|[1-9][0-9]{0,5})(\.(0|[1-9][0-9]{0,5})){1,3}$ ]] \
    || die "version $VERSION is not 2-4 dotted numbers"
PREFIX=$BASE/releases/$VERSION
HOST_ARCH=$(dpkg --print-architecture)
ARCH=${TARGET_ARCH:-$HOST_ARCH}
case "$ARCH" in
    amd64) WHEEL_ARCH=x86_64 ;;
    arm64) WHEEL_ARCH=aarch64 ;;
    *) die "unsupported --arch $ARCH (amd64 or arm64)" ;;
esac
GLIBC_MINOR=$(getconf GNU_LIBC_VERSION | sed -n 's/^glibc 2\.\([0-9]*\).*/\1/p')
DEB_COMPRESSION=${DEB_COMPRESSION:-xz}
DEB_MAINTAINER=${DEB_MAINTAINER:-homecare-gateway maintainers <homecare-gateway@localhost>}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/hcg-deb.XXXXXX")
cleanup() {
    if [ "$KEEP_STAGING" = 1 ]; then echo "staging kept in $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
STAGE=$WORK/root
VENV=$STAGE$PREFIX
started=$(date +%s)
echo "building $PKG $VERSION for $ARCH (Python $PYVER) in $WORK"

# --- 1. a wheel of the project, from a clean copy (no build/ or egg-info left in the repo) ---
mkdir -p "$WORK/src" "$WORK/wheels"
tar -C "$REPO" --exclude=__pycache__ --exclude='*.pyc' \
    -cf - pyproject.toml README.md gateway drivers buffer provisioning | tar -C "$WORK/src" -xf -
# Only the router goes in: the simulated home (rig/) and the provider (provider/) are not copied,
# and the pyproject lines that name them (their command, plug-in and data) are marked for removal.
sed -i '/# not-on-router$/d' "$WORK/src/pyproject.toml"
sed -i "0,/^version = \"[^\"]*\"/s//version = \"$VERSION\"/" "$WORK/src/pyproject.toml"
sed -i "s/^__version__ = \"[^\"]*\"/__version__ = \"$VERSION\"/" "$WORK/src/gateway/__init__.py"
"$BUILD_PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$WORK/wheels" "$WORK/src"

# --- 2. the venv, created at its final path inside the staging root --------------------------
# The only absolute paths a venv holds are its interpreter symlinks (to /usr/bin/pythonX.Y, the
# same on the router), script shebangs and the informational `command` in pyvenv.cfg. The last
# two name the staging path and are rewritten in step 4; nothing else needs relocating.
"$VENV_PYTHON" -m venv --without-pip "$VENV"
pip_into_venv() { "$BUILD_PYTHON" -m pip --python "$VENV/bin/python" "$@"; }
constraints=()
if [ -n "${CONSTRAINTS:-}" ]; then constraints=(--constraint "$CONSTRAINTS"); fi
# Binary wheels only: the build never compiles anything, and what ships is what PyPI (or the
# given wheelhouse) published. --no-compile: byte-code is compiled in step 3 with final paths.
if [ "$ARCH" = "$HOST_ARCH" ]; then
    pip_into_venv install --quiet --no-compile --only-binary=:all: --disable-pip-version-check \
        "${constraints[@]}" "$WORK"/wheels/homecare_gateway-*.whl
else
    # Another architecture: pip cannot ask the venv's interpreter (this host's) for its tags, so
    # it is told them - CPython $PYVER, manylinux up to this release's glibc - and installs into
    # a plain directory that is then laid out as the venv's site-packages and bin.
    [ -n "$GLIBC_MINOR" ] || die "cannot tell this system's glibc version (getconf)"
    platforms=(--platform "manylinux2014_$WHEEL_ARCH")
    for minor in $(seq 17 "$GLIBC_MINOR"); do
        platforms+=(--platform "manylinux_2_${minor}_$WHEEL_ARCH")
    done
    CROSS=$WORK/cross
    "$BUILD_PYTHON" -m pip install --quiet --no-compile --only-binary=:all: \
        --disable-pip-version-check --target "$CROSS" "${platforms[@]}" --implementation cp \
        --python-version "$PYVER" --abi "cp${PYVER/./}" \
        "${constraints[@]}" "$WORK"/wheels/homecare_gateway-*.whl
    SITE=$VENV/lib/python$PYVER/site-packages
    mkdir -p "$SITE"
    find "$CROSS" -mindepth 1 -maxdepth 1 ! -name bin -exec mv -t "$SITE" {} +
    for script in "$CROSS"/bin/*; do
        # Console scripts name the interpreter that ran pip; the venv's is the right one.
        if head -1 "$script" | grep -q '^#!.*python'; then
            sed -i "1s@.*@#!$VENV/bin/python@" "$script"
        fi
        mv "$script" "$VENV/bin/"
    done
    # --target records scripts relative to its own lib/python; the venv's is one level deeper.
    sed -i 's@^\.\./\.\./bin/@../../../bin/@' "$SITE"/*.dist-info/RECORD
    # Every shared object must be built for the target: ELF e_machine (offset 18) 62 or 183.
    case "$ARCH" in amd64) machine=62 ;; arm64) machine=183 ;; esac
    while IFS= read -r -d '' so; do
        [ "$(od -An -tu2 -j18 -N2 "$so" | tr -d ' ')" = "$machine" ] \
            || die "$so is not an $ARCH binary"
    done < <(find "$SITE" -type f -name '*.so*' -print0)
fi
# pip records where the wheel came from (the temporary build dir): meaningless on the router.
for f in "$VENV"/lib/python"$PYVER"/site-packages/homecare_gateway-*.dist-info/direct_url.json; do
    [ -e "$f" ] || continue
    rm -f "$f"
    sed -i '/direct_url\.json,/d' "$(dirname "$f")/RECORD"
done

# --- 3. byte-code with the final paths in it; checked-hash stays valid whatever mtimes dpkg sets
"$VENV/bin/python" -m compileall -q -j 0 -s "$STAGE" -p / \
    --invalidation-mode checked-hash "$VENV/lib"

# --- 4. relocate: every remaining mention of the staging root becomes the final path ---------
grep -rlF --null "$STAGE" "$VENV" | xargs -0 -r sed -i "s#$STAGE##g"
if grep -rlF "$WORK" "$VENV" >/dev/null; then
    grep -rlF "$WORK" "$VENV" >&2
    die "files above still name the build directory"
fi
head -1 "$VENV/bin/gatewayd" | grep -qx "#!$PREFIX/bin/python" || die "unexpected shebang in gatewayd"

# What the updater must know of this tree without running it (gateway/updates/layout.py):
# version, architecture and the outbox schema facts (buffer/schema_facts.py: plain literals).
"$TARGET_PYTHON" - "$REPO/buffer/schema_facts.py" "$VERSION" "$ARCH" > "$VENV/release-info.json" <<'PY'
import json, runpy, sys
facts = runpy.run_path(sys.argv[1])
print(json.dumps({"version": sys.argv[2], "arch": sys.argv[3],
                  "outbox_schema": facts["OUTBOX_SCHEMA"],
                  "outbox_min_reader": facts["OUTBOX_MIN_READER"]}))
PY

mkdir -p "$STAGE/usr/share/doc/$PKG"
pip_into_venv list --format=freeze --disable-pip-version-check --exclude homecare-gateway \
    > "$STAGE/usr/share/doc/$PKG/python-packages.txt"

# --- 5. systemd, sysusers, tmpfiles, udev, commands -------------------------------------------
install -D -m 0644 "$REPO/systemd/gatewayd.service" "$STAGE/lib/systemd/system/gatewayd.service"
for unit in homecare-gateway-update.path homecare-gateway-update.service \
    homecare-gateway-update-boot.service; do
    install -D -m 0644 "$REPO/systemd/$unit" "$STAGE/lib/systemd/system/$unit"
done
install -D -m 0644 "$REPO/systemd/homecare-gateway.sysusers" "$STAGE/usr/lib/sysusers.d/$PKG.conf"
install -D -m 0644 "$REPO/systemd/homecare-gateway.tmpfiles" "$STAGE/usr/lib/tmpfiles.d/$PKG.conf"
install -D -m 0644 "$REPO/systemd/60-homecare-gateway.rules" \
    "$STAGE/usr/lib/udev/rules.d/60-homecare-gateway.rules"
# BlueZ operations on the patient's devices for root and the service only (read after BlueZ's
# own policy: /etc after /usr/share). dbus-daemon reloads policies by itself (inotify).
install -D -m 0644 "$REPO/systemd/homecare-gateway-bluez.conf" \
    "$STAGE/etc/dbus-1/system.d/homecare-gateway-bluez.conf"
# Power-off after the clean stop on a low UPS battery: polkit allows the service user that one action.
install -D -m 0644 "$REPO/packaging/polkit/50-homecare-gateway.rules" \
    "$STAGE/usr/share/polkit-1/rules.d/50-homecare-gateway.rules"
mkdir -p "$STAGE/usr/bin"
ln -s "$BASE/current/bin/gatewayd" "$STAGE/usr/bin/gatewayd"
ln -s "$BASE/current/bin/gatewayctl" "$STAGE/usr/bin/gatewayctl"
install -m 0644 "$REPO/systemd/README.md" "$STAGE/usr/share/doc/$PKG/README.systemd.md"
install -m 0644 "$REPO/packaging/README.md" "$STAGE/usr/share/doc/$PKG/README.packaging.md"
cat > "$STAGE/usr/share/doc/$PKG/copyright" <<EOF
homecare-gateway $VERSION - proprietary; see the licence agreement of the care provider.
The bundled Python packages keep their own licences: their metadata is under
$PREFIX/lib/python$PYVER/site-packages/*.dist-info/.
EOF

# --- 6. configuration skeleton (a conffile; no secrets; enrolment writes gateway.toml) ---------
install -d -m 0750 "$STAGE/etc/$PKG"
cat > "$STAGE/etc/$PKG/gateway.toml.example" <<'EOF'
# homecare-gateway configuration - skeleton of /etc/homecare-gateway/gateway.toml.
#
# On a router this file is NOT copied by hand: `gatewayctl enrol` writes gateway.toml from the
# care provider's profile (/etc/homecare-gateway/provider.toml, from the provider's own
# configuration package) and the router's id (its host name); keys and certificates are made by
# enrolment under /var/lib/homecare-gateway. The service does not start while gateway.toml is
# missing, nor before enrolment. Check a file with:
#     gatewayd --config /etc/homecare-gateway/gateway.toml --check-config
# Every table and key the gateway reads is below (tests/test_packaging.py checks it), shown with
# its default where it has one; commented-out lines are optional tables or keys. Unknown keys are
# errors (a typo must not fall back to a default silently). Relative paths are resolved against the directory
# of this file. Key files: owner root, group homecare-gateway, mode 0640 - never world-readable.

[gateway]
# The gateway's identity: 1-64 letters, digits, '.', '_' or '-'. It is also the MQTT client id,
# the CN of the client certificate, and part of the topic records are published on. Required.
id = "gw-EXAMPLE"
# Pseudonymous id of the care episode this router is bound to (never a name or a patient
# number): printable, 1-64 characters. Default "unbound".
episode = "unbound"
# Where the outbox lives. Must match the unit's StateDirectory= (/var/lib/homecare-gateway):
# the sandbox lets the daemon write nowhere else.
state_dir = "/var/lib/homecare-gateway"
# debug, info, warning or error. Logs never carry clinical values or key material at any level.
log_level = "info"
# true only for a test, demo or training episode: every Observation is labelled HTEST (test
# data). With [provisioning] the enrolment bundle decides instead.
test_episode = false

# Enrolment (docs/operations.md): with this table the router gets its keys, certificate, broker
# and episode by `gatewayctl enrol`, and [identity], [provider] and [uplink]'s host and TLS files
# are not needed (the daemon refuses to start before enrolment).
#     [provisioning]
#     est_url = "https://est.provider.example"         # the provider's EST enrolment service
#     est_ca_file = "provider/est-ca.crt"              # the CA of that service's certificate
#     bundle_signing_key = "provider/bundle-signing.pub" # Ed25519 key the episode bundle is signed with
#     auth = "bearer"                                  # how the token is sent: bearer or basic

[identity]
# Ed25519 private key (PKCS#8 PEM) that signs every record. Required; the file must exist.
signing_key = "keys/identity.key"

[provider]
# The provider's X25519 public key (SPKI PEM) every record is encrypted to. Required.
hpke_public_key = "provider/hpke.pub"
# HPKE suite: "x25519", or "mlkem768-x25519" (post-quantum hybrid), which also needs
#     mlkem_public_key = "provider/hpke-mlkem768.pub"
suite = "x25519"

[uplink]
# The provider's MQTT broker, reached through the VPN. host is required.
host = "broker.provider.example"
port = 8883
# TLS: the CA that signed the broker's certificate, and this gateway's client certificate and
# private key (mutual TLS). All three required; the files must exist.
ca_file = "tls/ca.crt"
cert_file = "tls/client.crt"
key_file = "tls/client.key"
# MQTT keepalive in seconds (5-3600); a silent broker is given up after 1.5 x keepalive.
keepalive_s = 30
# Topic levels before /gw/<id>/records; no wildcards.
topic_prefix = "homecare/v1"
# Upload batches: at most this many records (1-65535) and bytes (1 KiB - 16 MiB) per batch,
# and this many batches awaiting the broker's acknowledgement at once (1-64).
batch_max_records = 500
batch_max_bytes = 262144
inflight_batches = 4
# How long (0 s to 7 days) the broker keeps this gateway's session while it is offline.
session_expiry_s = 3600
# The VPN interface the route to the broker must leave through (checked by install-check and
# reported in health); the interfaces the tunnel may run over: the mobile modem's
# (wan_interfaces) and a broadband/LAN uplink (broadband_interfaces). Default: not checked.
#     vpn_interface = "wg0"
#     wan_interfaces = ["wwan0"]
#     broadband_interfaces = ["eth1"]

[outbox]
# The SQLite outbox file. Default: <state_dir>/outbox.db
#     path = "/var/lib/homecare-gateway/outbox.db"
# Group commit: readings arriving within this many milliseconds (0-1000) share one durable
# commit. A device is told "stored" only after that commit.
commit_window_ms = 2.0
# The outbox's disk quota (16 KiB - 1 TiB). Reached, new readings are counted in a sealed gap
# record instead of stored (nothing disappears silently).
quota_bytes = 268435456
# Continuous streams (oximetry, heart rate) are sealed in chunks of this many seconds (0-300;
# 0: each reading at once).
stream_chunk_s = 30.0
# While a chunk is open its readings are staged on disk, encrypted to the provider, at most this
# many seconds (0-10) after they arrive; a device is told "stored" only then. A power cut loses
# nothing staged (docs/wire-format.md 6.4). Longer saves flash writes, shorter loses less.
stage_interval_s = 1.0

[health]
# Seconds (1-3600) between health reports (link, outbox, devices, clock, power) to the provider.
interval_s = 60.0

[control]
# The local socket gatewayctl talks to (the unit's RuntimeDirectory=).
socket = "/run/homecare-gateway/control.sock"

# Bluetooth devices bound to the episode (with [provisioning]: from the bundle instead).
# profile: thermometer, blood-pressure, pulse-oximeter, pulse-oximeter-continuous, weight-scale,
# glucose, heart-rate or cgm.
#     [[ble_devices]]
#     address = "A4:C1:38:10:00:02"
#     profile = "blood-pressure"
#     name = "bp"                  # default "<profile>-<last 5 of the address>"
#     passkey = 246810             # the six digits the device shows, if it pairs with one
#     expected_interval_s = 43200  # "silent" in health reports after twice this
#     adapter = "hci0"             # default: BlueZ's default adapter

# Serial devices. kind: astm (laboratory analyser), nonin or cms50 (oximeters), modem (the 5G
# modem's AT port). path: a stable device path.
#     [[serial_devices]]
#     kind = "astm"
#     name = "crp"                 # default: the kind
#     path = "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A10KX3C2-if00-port0"
#     line = "9600 8N1"            # default: the kind's usual settings
#     flow = "none"                # none, rtscts, xonxoff or dsrdtr
#     device_tz = "Europe/Berlin"  # the analyser's clock zone (default UTC)
#     serial = "501234567"         # oximeters: the serial number on the label (required)
#     interval_s = 60.0            # oximeters: seconds between spot readings
#     desaturation_below_pct = 90  # oximeters: SpO2 below this starts a desaturation event
#     drop_points = 4              # oximeters: ... as does a fall of this many points
#     no_data_s = 10.0             # oximeters: "no data" after this many seconds without a frame
#     poll_interval_s = 30.0       # modem: seconds between registration and signal polls

# The UPS (battery backup), read from NUT's upsd. Without this table the health report says
# "power: unknown (no UPS configured)". With it: power cuts are reported, and when the battery
# runs low the gateway stops cleanly and powers the router off (systemd/README.md).
#     [power]
#     ups = "ups"                # the UPS's section name in /etc/nut/ups.conf
#     host = "127.0.0.1"
#     port = 3493
#     low_runtime_s = 300        # stop when less runtime is left (10-7200 s)
#     poll_interval_s = 5        # 0.2-60 s
#     confirm_s = 10             # a change of supply must last this long to count (0-600 s)
#     power_off = "logind"

# Software updates offered by the provider (docs/operations.md, "Software updates"). Without
# this table the router accepts no release. The key is the provider's release-signing public key
# (Ed25519, PEM); a new version must be READY and deliver a record within health_gate_s
# (20-3600 s), or the updater switches back to the previous one by itself.
#     [updates]
#     release_signing_key = "provider/release-signing.pub"
#     health_gate_s = 600

# Simulated devices, for demos, training and the simulated rig only - never on a patient's
# router. kind: thermometer, blood-pressure or pulse-oximeter; interval_s: 0.001-86400;
# count: stop after that many readings (default: forever); memory: a file that plays the
# device's own record memory (stored-records mode); stream: a continuous stream, not spot
# readings.
#     [[sim_devices]]
#     kind = "thermometer"
#     address = "C0:FF:EE:00:00:01"
#     interval_s = 5.0
#     count = 10
#     memory = "sim-memory.json"
#     stream = false
EOF
chmod 0644 "$STAGE/etc/$PKG/gateway.toml.example"

# --- 7. DEBIAN/ -----------------------------------------------------------------------------
DEBIAN=$STAGE/DEBIAN
mkdir -p "$DEBIAN"
installed_kb=$(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
cat > "$DEBIAN/control" <<EOF
Package: $PKG
Version: $VERSION
Architecture: $ARCH
Maintainer: $DEB_MAINTAINER
Installed-Size: $installed_kb
Depends: python$PYVER, systemd | adduser
Recommends: bluez, udev, polkitd | policykit-1, nut-server
Section: misc
Priority: optional
Homepage: https://homecare-gateway.invalid/
Description: hospital-at-home edge gateway agent
 Runs on the provider-owned router in a patient's home: reads the medical
 devices over Bluetooth Low Energy and serial links, seals every reading
 (signed, end-to-end encrypted), keeps it in a durable outbox through power
 and network outages and uploads it to the care provider over MQTT and TLS.
 .
 The application and its Python dependencies live in their own virtual
 environment under $PREFIX. The service starts once enrolment has
 written /etc/homecare-gateway/gateway.toml.
EOF
printf '%s\n' "/etc/$PKG/gateway.toml.example" "/etc/dbus-1/system.d/$PKG-bluez.conf" \
    > "$DEBIAN/conffiles"

# Maintainer scripts. They honour DPKG_ROOT (dpkg --root with --force-script-chrootless, as
# image builders use) and call every tool by name, so tests can stand stubs in for them.
cat > "$DEBIAN/postinst" <<'EOF'
#!/bin/sh
# homecare-gateway postinst: user, directories, udev rules, release links, enable; start only
# when enrolled.
set -e
PKG=homecare-gateway
UNIT=gatewayd.service
VERSION=@VERSION@
# The updater: its boot unit (finishes an interrupted switch before gatewayd) and the path
# unit that starts it when the daemon drops a release offer (systemd/README.md).
UPDATE_UNITS="homecare-gateway-update-boot.service homecare-gateway-update.path"
root=${DPKG_ROOT:-}

have() { command -v "$1" >/dev/null 2>&1; }
# Only a running systemd may be told to (re)start anything; an image build has none.
systemd_running() { [ -z "$root" ] && [ -d /run/systemd/system ]; }

create_user() {
    if have systemd-sysusers; then
        systemd-sysusers ${root:+--root="$root"} "$PKG.conf"
    elif [ -z "$root" ] && have adduser; then
        # Same result as usr/lib/sysusers.d/homecare-gateway.conf on systems without sysusers.
        getent group bluetooth >/dev/null || addgroup --quiet --system bluetooth
        getent passwd "$PKG" >/dev/null || adduser --quiet --system --group \
            --no-create-home --home /nonexistent --gecos "homecare-gateway edge agent" "$PKG"
    else
        echo "$PKG: neither systemd-sysusers nor adduser: user $PKG not created" >&2
        return 1
    fi
}

create_dirs() {
    if have systemd-tmpfiles; then
        systemd-tmpfiles --create ${root:+--root="$root"} "$PKG.conf"
    else
        # Same as usr/lib/tmpfiles.d/homecare-gateway.conf, for systems without tmpfiles.
        install -d -m 0750 -o root -g "$PKG" "$root/etc/$PKG"
        install -d -m 0750 -o "$PKG" -g "$PKG" "$root/var/lib/$PKG" "$root/var/log/$PKG"
    fi
}

reload_udev() {
    # New rules take effect for adapters already plugged in; in an image build there is no udev.
    if [ -z "$root" ] && have udevadm && [ -d /run/udev ]; then
        udevadm control --reload-rules || true
        udevadm trigger --action=change --subsystem-match=tty || true
    fi
}

point_links() {
    # A/B layout (gateway/updates): current (what gatewayd and /usr/bin run) and updater (the
    # package's own release, which the updater runs from) name this package's release, each
    # switched by rename(2) so a power cut leaves the old link or the new one, never none.
    # Installing a package is the administrator's choice: it wins over an offered release.
    opt="$root/opt/$PKG"
    if [ ! -d "$opt/releases/$VERSION" ]; then
        echo "$PKG: $opt/releases/$VERSION is missing: links not changed" >&2
        return 0
    fi
    for link in current updater; do
        rm -f "$opt/$link.new"
        ln -s "releases/$VERSION" "$opt/$link.new"
        mv -T "$opt/$link.new" "$opt/$link"
    done
    # An update the updater was gating is void now: it sees current name neither of its
    # releases and records that (gateway/updates/updater.py, recover).
}

enable_unit() {
    if have deb-systemd-helper; then
        # Removes only a mask deb-systemd-helper itself set when the package was removed.
        deb-systemd-helper unmask "$UNIT" >/dev/null || true
        # was-enabled is true on a first install: enable then; on upgrade keep the admin's choice.
        if deb-systemd-helper --quiet was-enabled "$UNIT"; then
            deb-systemd-helper enable "$UNIT" >/dev/null || true
        else
            deb-systemd-helper update-state "$UNIT" >/dev/null || true
        fi
    elif have systemctl; then
        # Works offline too (only creates the symlinks).
        systemctl ${root:+--root="$root"} enable "$UNIT" >/dev/null || true
    fi
    # The updater's units follow the package, whatever the administrator chose for gatewayd:
    # without them a half-done switch would not be finished at boot.
    for u in $UPDATE_UNITS; do
        if have deb-systemd-helper; then
            deb-systemd-helper unmask "$u" >/dev/null || true
            deb-systemd-helper enable "$u" >/dev/null || true
        elif have systemctl; then
            systemctl ${root:+--root="$root"} enable "$u" >/dev/null || true
        fi
    done
}

start_if_enrolled() {
    systemd_running || return 0
    systemctl --system daemon-reload >/dev/null || true
    # The updater's watch is harmless before enrolment (the daemon offers nothing then).
    if have deb-systemd-invoke; then
        deb-systemd-invoke start homecare-gateway-update.path >/dev/null || true
    else
        systemctl start homecare-gateway-update.path >/dev/null || true
    fi
    if [ ! -f /etc/$PKG/gateway.toml ]; then
        echo "$PKG: installed; not started (no /etc/$PKG/gateway.toml yet: enrol the router)"
        return 0
    fi
    if have deb-systemd-invoke; then
        deb-systemd-invoke restart "$UNIT" >/dev/null || true
    else
        systemctl restart "$UNIT" >/dev/null || true
    fi
}

case "$1" in
    configure)
        create_user
        create_dirs
        point_links
        reload_udev
        enable_unit
        start_if_enrolled
        ;;
    abort-upgrade|abort-remove|abort-deconfigure)
        enable_unit
        start_if_enrolled
        ;;
    *)
        echo "postinst called with unknown argument '$1'" >&2
        exit 1
        ;;
esac
exit 0
EOF

cat > "$DEBIAN/prerm" <<'EOF'
#!/bin/sh
# homecare-gateway prerm: stop the daemon before its files are replaced or removed. SIGTERM
# makes it commit what it holds to the outbox, which survives the upgrade untouched.
set -e
UNIT=gatewayd.service
root=${DPKG_ROOT:-}
case "$1" in
    remove|upgrade|deconfigure|failed-upgrade)
        if [ -z "$root" ] && [ -d /run/systemd/system ]; then
            # The updater first: a health gate must not switch a release dpkg is replacing.
            for u in homecare-gateway-update.path homecare-gateway-update.service "$UNIT"; do
                if command -v deb-systemd-invoke >/dev/null 2>&1; then
                    deb-systemd-invoke stop "$u" >/dev/null || true
                else
                    systemctl stop "$u" >/dev/null || true
                fi
            done
        fi
        ;;
esac
exit 0
EOF

cat > "$DEBIAN/postrm" <<'EOF'
#!/bin/sh
# homecare-gateway postrm. remove: the unit is masked/disabled, configuration and state stay.
# purge: everything the package or the daemon ever created goes - configuration and keys,
# the outbox, logs, the user. Upgrades never reach the purge branch.
set -e
PKG=homecare-gateway
UNIT=gatewayd.service
root=${DPKG_ROOT:-}
have() { command -v "$1" >/dev/null 2>&1; }

case "$1" in
    remove)
        if [ -z "$root" ] && [ -d /run/systemd/system ]; then
            systemctl --system daemon-reload >/dev/null || true
        fi
        for u in "$UNIT" homecare-gateway-update-boot.service homecare-gateway-update.path; do
            if have deb-systemd-helper; then
                deb-systemd-helper mask "$u" >/dev/null || true
            elif have systemctl; then
                systemctl ${root:+--root="$root"} disable "$u" >/dev/null 2>&1 || true
            fi
        done
        # Byte-code or anything else dpkg did not install under the venv.
        rm -rf "$root/opt/homecare-gateway"
        ;;
    purge)
        if have deb-systemd-helper; then
            for u in "$UNIT" homecare-gateway-update-boot.service homecare-gateway-update.path; do
                deb-systemd-helper purge "$u" >/dev/null || true
                deb-systemd-helper unmask "$u" >/dev/null || true
            done
        fi
        # Literal paths: nothing here may ever expand to a parent directory.
        rm -rf "$root/opt/homecare-gateway" "$root/var/lib/homecare-gateway" \
            "$root/var/lib/homecare-gateway-update" \
            "$root/var/log/homecare-gateway" "$root/run/homecare-gateway"
        # The provider profile (provider.toml, profile/) belongs to the care provider's own
        # configuration package when one installed it: that package removes it, not this one.
        etc="$root/etc/homecare-gateway"
        if [ -z "$root" ] && [ -e "$etc/provider.toml" ] \
            && dpkg-query -S "$etc/provider.toml" >/dev/null 2>&1; then
            find "$etc" -mindepth 1 -maxdepth 1 ! -name provider.toml ! -name profile \
                -exec rm -rf {} +
        else
            rm -rf "$etc"
        fi
        # Everything the account owned is gone above, so its uid can be freed without leaving
        # files that a later account with the same uid would inherit.
        if grep -q "^$PKG:" "$root/etc/passwd" 2>/dev/null; then
            userdel ${root:+--root "$root"} "$PKG" >/dev/null 2>&1 \
                || echo "$PKG: could not remove user $PKG" >&2
        fi
        # userdel drops the user's own group where USERGROUPS_ENAB is set; otherwise do it here.
        if grep -q "^$PKG:" "$root/etc/group" 2>/dev/null; then
            groupdel ${root:+--root "$root"} "$PKG" >/dev/null 2>&1 || true
        fi
        ;;
    upgrade|failed-upgrade|abort-install|abort-upgrade|disappear)
        ;;
    *)
        echo "postrm called with unknown argument '$1'" >&2
        exit 1
        ;;
esac
exit 0
EOF
sed -i "s/@VERSION@/$VERSION/" "$DEBIAN/postinst"
chmod 0755 "$DEBIAN/postinst" "$DEBIAN/prerm" "$DEBIAN/postrm"

# --- 8. normalise modes and build --------------------------------------------------------------
find "$STAGE" -path "$DEBIAN" -prune -o -type d ! -path "$STAGE/etc/$PKG" -exec chmod 0755 {} +
find "$VENV" -type f ! -perm -u+x -exec chmod 0644 {} +
find "$VENV" -type f -perm -u+x -exec chmod 0755 {} +

mkdir -p "$OUT_DIR"
DEB=$OUT_DIR/${PKG}_${VERSION}_${ARCH}.deb
dpkg-deb --root-owner-group -Z"$DEB_COMPRESSION" --build "$STAGE" "$DEB" >/dev/null
echo "built $DEB ($(du -h "$DEB" | cut -f1), $(( $(date +%s) - started )) s)"
