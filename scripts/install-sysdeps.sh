#!/usr/bin/env bash
# Installs the Debian packages the demo and the tests need, only when they are missing.
set -euo pipefail
need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v shellcheck >/dev/null 2>&1 || need+=(shellcheck)  # lints the package scripts
command -v dpkg-deb >/dev/null 2>&1 || need+=(dpkg)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)  # verify / security checks
# The VPN outage tests: a WireGuard tunnel (userspace) between namespaces, outages by iptables.
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v dbus-daemon >/dev/null 2>&1 || need+=(dbus)  # the simulated BlueZ runs on a private bus
command -v wireguard-go >/dev/null 2>&1 || need+=(wireguard-go)
command -v wg >/dev/null 2>&1 || need+=(wireguard-tools)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
# The PKCS#11 key store's tests: a software token with the interface of a TPM's tpm2-pkcs11.
[ -e /usr/lib/softhsm/libsofthsm2.so ] || need+=(softhsm2)
# The power tests: the real NUT upsd with the dummy-ups driver (scripted UPS states), upsc.
[ -x /lib/nut/dummy-ups ] || [ -x /usr/lib/nut/dummy-ups ] || need+=(nut-server)
command -v upsc >/dev/null 2>&1 || need+=(nut-client)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "missing system packages: ${need[*]} - run as root or: sudo apt-get install -y ${need[*]}" >&2
    exit 1
fi
echo "installing system packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# The demo and tests start their own broker on a private port; the packaged service is not used.
if command -v systemctl >/dev/null 2>&1 && systemctl is-system-running >/dev/null 2>&1; then
    systemctl disable --now mosquitto >/dev/null 2>&1 || true
    # Likewise NUT: the power tests start their own upsd and dummy-ups on a private port.
    systemctl disable --now nut-server nut-monitor nut-driver.target >/dev/null 2>&1 || true
fi
