#!/usr/bin/env bash
# Builds the fieldrelay .deb for amd64, arm64 (Raspberry Pi 3/4/5 and most gateway boxes on a
# 64-bit OS) and armhf (ARMv7, 32-bit Raspberry Pi OS on Pi 2/3/4) into target/packages/.
#
#   scripts/build-packages.sh              # all three
#   scripts/build-packages.sh arm64 armhf  # some
#
# Cross builds use rustup's targets and Debian's cross gcc (linker and the C compiler for the
# bundled SQLite); the glibc floor is the cross sysroot's (Debian 12: 2.36, as Raspberry Pi OS
# Bookworm). Installs what is missing (apt-get, rustup target add, cargo-deb) — as root, or with
# sudo for apt. Each target is a full release build: ~3-8 min per target on 2 cores.
# scripts/qemu-smoke.sh then runs the arm binaries under qemu-user.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:$HOME/.cargo/bin"

CARGO_DEB_VERSION=3.8.0
OUT=target/packages
arches=("$@")
[ ${#arches[@]} -gt 0 ] || arches=(amd64 arm64 armhf)

# Debian architecture -> Rust target, cross gcc prefix, Debian packages for that gcc.
target_of() {
  case "$1" in
    amd64) echo x86_64-unknown-linux-gnu ;;
    arm64) echo aarch64-unknown-linux-gnu ;;
    armhf) echo armv7-unknown-linux-gnueabihf ;;
    *) echo "unknown architecture: $1 (amd64, arm64, armhf)" >&2; exit 64 ;;
  esac
}
gcc_prefix_of() {
  case "$1" in
    arm64) echo aarch64-linux-gnu ;;
    armhf) echo arm-linux-gnueabihf ;;
  esac
}
apt_packages_of() {
  case "$1" in
    arm64) echo gcc-aarch64-linux-gnu libc6-dev-arm64-cross ;;
    armhf) echo gcc-arm-linux-gnueabihf libc6-dev-armhf-cross ;;
  esac
}

host=$(dpkg --print-architecture)
need_apt=()
for arch in "${arches[@]}"; do
  target_of "$arch" >/dev/null
  [ "$arch" = "$host" ] && continue
  if ! command -v "$(gcc_prefix_of "$arch")-gcc" >/dev/null; then
    read -r -a pkgs <<<"$(apt_packages_of "$arch")"
    need_apt+=("${pkgs[@]}")
  fi
done
if [ ${#need_apt[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi
if ! cargo deb --version 2>/dev/null | grep -qx "cargo-deb $CARGO_DEB_VERSION"; then
  cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked
fi

# Man pages and shell completions (the same for every architecture), from the command line's
# definition: a host build of the example, then packaged as assets by every `cargo deb`.
cargo run --locked --quiet --example package_assets -- target/assets

mkdir -p "$OUT"
for arch in "${arches[@]}"; do
  target=$(target_of "$arch")
  echo "== $arch ($target)"
  start=$SECONDS
  if [ "$arch" = "$host" ]; then
    deb=$(cargo deb --locked --output "$OUT" | tail -n 1)
  else
    rustup target list --installed | grep -qx "$target" || rustup target add "$target"
    prefix=$(gcc_prefix_of "$arch")
    env_target=$(echo "$target" | tr 'a-z-' 'A-Z_')
    # Linker for rustc, C compiler and archiver for rusqlite's bundled SQLite (cc crate).
    deb=$(env "CARGO_TARGET_${env_target}_LINKER=$prefix-gcc" \
      "CC_${target//-/_}=$prefix-gcc" "AR_${target//-/_}=$prefix-ar" \
      cargo deb --locked --target "$target" --output "$OUT" | tail -n 1)
  fi
  echo "$deb ($(du -k "$deb" | cut -f1) KiB, $((SECONDS - start)) s)"
done
ls -l "$OUT"/*.deb
