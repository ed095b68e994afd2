#!/usr/bin/env bash
# Builds (once) and prints the path of a cached Debian 12 root for the field tests.
#
#   field/mkroot.sh [--arch amd64|arm64] [--print-key]
#
# The root is a plain directory, /var/cache/homecare-field/<arch>-<key>/root, where <key> is a
# hash of everything that decides its contents (suite, variant, package list, this script's
# recipe version). A root is built with mmdebstrap into a temporary directory and renamed into
# place only when complete, so an interrupted build is never mistaken for a cached one. Tests
# never boot the cached root itself: field/nspawn.py puts an overlay (or a copy) on top.
#
# Installs what it needs from apt when missing (field/setup-host.sh) and, for a foreign
# architecture, enables its qemu binfmt handler (field/binfmt.sh). Needs root.
#
# Environment: FIELD_CACHE (default /var/cache/homecare-field), FIELD_MIRROR (default: Debian's).
set -euo pipefail

ARCH=$(dpkg --print-architecture)
PRINT_KEY=0
while [ $# -gt 0 ]; do
    case "$1" in
        --arch) ARCH=$2; shift 2 ;;
        --arch=*) ARCH=${1#--arch=}; shift ;;
        --print-key) PRINT_KEY=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "mkroot.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done
die() { echo "mkroot.sh: $*" >&2; exit 1; }

SUITE=bookworm
VARIANT=apt
RECIPE=1  # bump when the customisation below changes
# What a router image holds around the package: systemd as PID 1 with D-Bus (BlueZ needs the
# system bus), the package's Depends (python3.11; systemd) and Recommends (bluez, udev) so that
# `apt-get install ./x.deb` needs no download, iproute2 and wireguard-tools (the daemon's link
# checks call `ip -j route get` and `wg show`), procps for the tests' own look-around.
# No broker client: the broker runs on the host.
PACKAGES=(systemd systemd-sysv dbus libpam-systemd python3 python3.11 python3-venv iproute2
          wireguard-tools bluez udev procps adduser ca-certificates)
CACHE=${FIELD_CACHE:-/var/cache/homecare-field}
MIRROR=${FIELD_MIRROR:-}

key=$(printf '%s\n' "$SUITE" "$VARIANT" "$RECIPE" "$ARCH" "$MIRROR" "${PACKAGES[@]}" \
    | sha256sum | cut -c1-12)
if [ "$PRINT_KEY" = 1 ]; then echo "$ARCH-$key"; exit 0; fi
DEST=$CACHE/$ARCH-$key
if [ -f "$DEST/complete" ]; then
    echo "$DEST/root"
    exit 0
fi

[ "$(id -u)" -eq 0 ] || die "must run as root (mmdebstrap in root mode, nspawn later)"

# --- host tools -------------------------------------------------------------------------------
"$(dirname "$0")/setup-host.sh" "$ARCH"
if [ "$ARCH" != "$(dpkg --print-architecture)" ]; then
    "$(dirname "$0")/binfmt.sh" "$ARCH" >&2
fi

# --- build -------------------------------------------------------------------------------------
mkdir -p "$CACHE"
TMP=$(mktemp -d "$CACHE/.build-$ARCH.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
started=$(date +%s)
echo "mkroot.sh: building the $SUITE $ARCH root ($DEST) ..." >&2
include=$(IFS=,; echo "${PACKAGES[*]}")
mirror_args=()
[ -n "$MIRROR" ] && mirror_args=("$MIRROR")
# Customisation, the same for every test run:
# - an empty machine-id: systemd creates one at the first boot (each run boots a fresh copy);
# - no getty on the console (nspawn --console=pipe has no terminal to give it);
# - the journal persistent is not needed; it stays volatile in /run (the default for a missing
#   /var/log/journal), which a run's teardown discards anyway.
# shellcheck disable=SC2016 # the hooks' "$1" is expanded by mmdebstrap, not here
mmdebstrap --quiet --variant="$VARIANT" --arch="$ARCH" --include="$include" \
    --customize-hook='echo -n > "$1/etc/machine-id"' \
    --customize-hook='echo homecare-field > "$1/etc/hostname"' \
    --customize-hook='chroot "$1" systemctl mask console-getty.service getty@tty1.service >/dev/null' \
    --customize-hook='rm -f "$1"/var/cache/apt/archives/*.deb' \
    "$SUITE" "$TMP/root" "${mirror_args[@]}" >&2
printf 'suite=%s arch=%s variant=%s recipe=%s\npackages=%s\nbuilt=%s seconds=%s\n' \
    "$SUITE" "$ARCH" "$VARIANT" "$RECIPE" "${PACKAGES[*]}" "$(date -u +%FT%TZ)" \
    "$(( $(date +%s) - started ))" > "$TMP/complete"
rm -rf "$DEST"
mv "$TMP" "$DEST"
trap - EXIT
echo "mkroot.sh: built $DEST in $(( $(date +%s) - started )) s" >&2
echo "$DEST/root"
