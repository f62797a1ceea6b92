#!/usr/bin/env bash
# Builds the vantage:latest image FROM scratch around a static binary.
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-gnu
RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --locked --target "$target"
root=target/docker-rootfs
rm -rf "$root"
mkdir -p "$root/etc/ssl/certs" "$root/etc/vantage" "$root/tmp" "$root/var/lib/vantage"
cp "target/$target/release/vantage" "$root/vantage"
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$root/etc/hosts"
chmod 1777 "$root/tmp"
chmod 0777 "$root/var/lib/vantage"
docker build -t "${IMAGE:-vantage:latest}" .
