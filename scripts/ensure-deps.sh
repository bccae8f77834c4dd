#!/usr/bin/env bash
# Installs what Kiln needs on a fresh Debian 12 machine: Debian packages (only those missing) and npm modules.
# Idempotent: a second run does nothing but check.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(docker.io mmdebstrap e2fsprogs dosfstools mtools syslinux syslinux-common fdisk qemu-utils qemu-system-x86
      ovmf systemd-boot-efi openssh-server openssh-client zstd xorriso squashfs-tools isolinux iptables iproute2 attr)
if [ "${KILN_WITH_TEST_DEPS:-0}" = 1 ]; then PKGS+=(postgresql chromium); fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "ensure-deps: installing ${missing[*]}"
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# npm ci only when node_modules is older than the lock file (or missing).
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
