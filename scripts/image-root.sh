#!/usr/bin/env bash
# Lays out the container image's whole file system in target/image-root, from the release
# binary and this machine's copies of what it needs, so `docker build` needs no base image
# and no registry (the Dockerfile is FROM scratch):
#
#   cargo build --release --locked && scripts/image-root.sh && docker build -t herdctl .
#
# What goes in: herdctl; the shared libraries it links (ldd: the C library, libm, libgcc_s,
# the dynamic loader); CA certificates for the places providers' HTTPS; /etc/passwd and
# /etc/group naming the user it runs as (herd, 65532); nsswitch.conf; /var/lib/herd, the
# volume for its store and logs, owned by that user (Docker copies it into a new volume).
set -euo pipefail
cd "$(dirname "$0")/.."

# Arguments (for the tests): another binary, another folder.
binary="${1:-target/release/herdctl}"
root="${2:-target/image-root}"
uid=65532

if [ ! -x "$binary" ]; then
    echo "image-root.sh: $binary not found: cargo build --release --locked first" >&2
    exit 1
fi
rm -rf "$root"
mkdir -p "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/etc/herd" "$root/var/lib/herd" \
    "$root/tmp"
chmod 1777 "$root/tmp"
cp "$binary" "$root/usr/local/bin/herdctl"
# The release profile keeps line tables for panics' backtraces; the image does without.
strip --strip-debug "$root/usr/local/bin/herdctl" 2>/dev/null || true

# Every library the binary loads, at the path the loader looks for it, and the loader.
ldd "$binary" | awk '/=> \// { print $3 } /^\s*\/[^ ]+ \(/ { print $1 }' | while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
# The loader is also found through /lib64 on x86-64 (the path the binary names).
interpreter="$(readelf -l "$binary" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')"
if [ -n "$interpreter" ] && [ ! -e "$root$interpreter" ]; then
    mkdir -p "$root$(dirname "$interpreter")"
    cp -L "$interpreter" "$root$interpreter"
fi

certs=/etc/ssl/certs/ca-certificates.crt
if [ -r "$certs" ]; then
    cp "$certs" "$root$certs"
else
    echo "image-root.sh: no $certs (apt-get install ca-certificates): the image will trust no" \
        "HTTPS server (the google and x places providers need one)" >&2
fi
cat >"$root/etc/passwd" <<PASSWD
root:x:0:0:root:/root:/nonexistent
herd:x:$uid:$uid:herd:/var/lib/herd:/nonexistent
PASSWD
cat >"$root/etc/group" <<GROUP
root:x:0:
herd:x:$uid:
GROUP
echo "hosts: files dns" >"$root/etc/nsswitch.conf"
chown "$uid:$uid" "$root/var/lib/herd" 2>/dev/null || true
chmod 700 "$root/var/lib/herd"
echo "image-root.sh: $(du -sh "$root" | cut -f1) in $root"
