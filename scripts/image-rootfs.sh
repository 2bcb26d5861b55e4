#!/usr/bin/env bash
# Builds the root filesystem of the Shoal image from binaries cargo built on
# this machine: the three binaries plus exactly the shared libraries they
# link (found with ldd), so the image can be `FROM scratch` and needs no
# registry. Usage: scripts/image-rootfs.sh BIN_DIR OUT_DIR
set -euo pipefail
bin_dir=$1
out=$2
rm -rf "$out"
mkdir -p "$out/usr/local/bin" "$out/data" "$out/tmp" "$out/etc"
chmod 1777 "$out/tmp"
for bin in kv-server shard-manager shoal; do
  cp "$bin_dir/$bin" "$out/usr/local/bin/$bin"
  # Line tables make the dev binaries ~200 MB each; an image needs none.
  if command -v strip >/dev/null 2>&1; then strip --strip-debug "$out/usr/local/bin/$bin"; fi
  # ldd lines: "libx.so => /path (addr)" or "/lib64/ld-linux... (addr)".
  ldd "$bin_dir/$bin" | awk '/=> \//{print $3} /^[ \t]*\//{print $1}' | while read -r lib; do
    mkdir -p "$out$(dirname "$lib")"
    cp -L "$lib" "$out$lib"
  done
done
# Name resolution for the compose network's service names.
echo "hosts: files dns" > "$out/etc/nsswitch.conf"
echo "root:x:0:0:root:/:/usr/local/bin/shoal" > "$out/etc/passwd"
