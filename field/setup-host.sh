#!/usr/bin/env bash
# Installs the host tools the field tier needs, only when missing (idempotent; needs root):
#   mmdebstrap (Debian roots), systemd-container (systemd-nspawn), and for foreign architectures
#   qemu-user-static, binfmt-support and arch-test.
#
#   field/setup-host.sh [ARCH...]     e.g. field/setup-host.sh amd64 arm64
#
# Prints nothing when everything is there. Exit 1 with a reason when it cannot install.
set -euo pipefail
host_arch=$(dpkg --print-architecture)
need=()
command -v mmdebstrap >/dev/null 2>&1 || need+=(mmdebstrap)
command -v systemd-nspawn >/dev/null 2>&1 || need+=(systemd-container)
command -v nsenter >/dev/null 2>&1 || need+=(util-linux)
for arch in "$@"; do
    [ "$arch" = "$host_arch" ] && continue
    [ -x /usr/bin/qemu-aarch64-static ] || need+=(qemu-user-static)
    command -v update-binfmts >/dev/null 2>&1 || need+=(binfmt-support)
    # mmdebstrap only Recommends arch-test, which --no-install-recommends leaves out, and
    # refuses a foreign --arch without it ("install arch-test for foreign architecture support").
    command -v arch-test >/dev/null 2>&1 || need+=(arch-test)
done
[ ${#need[@]} -eq 0 ] && exit 0
mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
if [ "$(id -u)" -ne 0 ]; then
    echo "setup-host.sh: missing ${need[*]}; run as root" >&2
    exit 1
fi
echo "setup-host.sh: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
