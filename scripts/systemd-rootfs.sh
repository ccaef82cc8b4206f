#!/usr/bin/env bash
# Builds (once) a minimal Debian 12 root filesystem that boots systemd, for the systemd boot
# test (tests/systemd_boot.rs) and for trying the exported units by hand:
#
#   scripts/systemd-rootfs.sh            # prints the folder; builds it on first use
#   sudo systemd-nspawn -b -D "$(scripts/systemd-rootfs.sh)" --ephemeral
#
# Needs root, debootstrap and Debian's package archive (HERD_DEBIAN_MIRROR, default
# deb.debian.org). The result is cached in ~/.cache/herdctl/rootfs-bookworm (or
# $HERD_ROOTFS); delete the folder to rebuild it. The build goes into a temporary folder
# renamed into place at the end, so an interrupted build never leaves a half root behind.
set -euo pipefail

suite=bookworm
cache="${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/herdctl"
root="${HERD_ROOTFS:-$cache/rootfs-$suite}"
mirror="${HERD_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if [ -x "$root/lib/systemd/systemd" ] && [ -e "$root/.herdctl-rootfs-done" ]; then
    echo "$root"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "systemd-rootfs.sh: building the root filesystem needs root (debootstrap)" >&2
    exit 1
fi
if ! command -v debootstrap >/dev/null 2>&1; then
    echo "systemd-rootfs.sh: debootstrap not found: apt-get install debootstrap" >&2
    exit 1
fi

mkdir -p "$(dirname "$root")"
work="$(mktemp -d "$root.partial.XXXXXX")"
trap 'rm -rf "$work"' EXIT
echo "systemd-rootfs.sh: debootstrapping Debian $suite from $mirror into $work" >&2
# minbase: no procps (so no /bin/kill), as on a minimal server; systemd-sysv gives /sbin/init.
debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus \
    "$suite" "$work" "$mirror" >&2
# A booted container needs no package cache, getty or network configuration from us.
rm -rf "$work"/var/cache/apt/archives/*.deb "$work"/var/lib/apt/lists/*
echo herd-boot >"$work/etc/hostname"
# Any root password would do; none is needed: the test talks to systemd through nsenter.
ln -sf /dev/null "$work/etc/systemd/system/console-getty.service"
ln -sf /dev/null "$work/etc/systemd/system/getty@.service"
touch "$work/.herdctl-rootfs-done"
rm -rf "$root"
mv "$work" "$root"
trap - EXIT
echo "$root"
