#!/usr/bin/env bash
# Makes foreign-architecture binaries run on this host through qemu-user-static.
#
#   field/binfmt.sh arm64
#
# Mounts binfmt_misc when it is not mounted (a container or minimal VM often lacks it) and
# enables the qemu handler. qemu-user-static registers it with the F (fix-binary) flag, so the
# interpreter is opened once here and works inside any chroot or container, which holds no qemu.
# Exits 0 only when a foreign binary can actually be executed; needs root.
set -euo pipefail
ARCH=${1:?usage: binfmt.sh ARCH}
case "$ARCH" in
    arm64) qemu=aarch64 ;;
    armhf) qemu=arm ;;
    *) echo "binfmt.sh: no qemu handler known for $ARCH" >&2; exit 2 ;;
esac
die() { echo "binfmt.sh: $*" >&2; exit 1; }
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
        || die "cannot mount binfmt_misc (no privilege, or the kernel lacks CONFIG_BINFMT_MISC)"
fi
if [ ! -e "/proc/sys/fs/binfmt_misc/qemu-$qemu" ]; then
    command -v update-binfmts >/dev/null 2>&1 || die "update-binfmts missing (binfmt-support)"
    update-binfmts --enable "qemu-$qemu" >/dev/null || die "update-binfmts --enable qemu-$qemu failed"
fi
grep -qx enabled "/proc/sys/fs/binfmt_misc/qemu-$qemu" || die "qemu-$qemu handler is disabled"
grep -q '^flags: .*F' "/proc/sys/fs/binfmt_misc/qemu-$qemu" \
    || echo "binfmt.sh: warning: qemu-$qemu has no F flag; containers need qemu inside" >&2
