#!/usr/bin/env bash
# Runs the arm64 and armhf binaries from target/packages/ (scripts/build-packages.sh) under
# qemu-user: `fieldrelay --version`, and `fieldrelay check` on the config the package installs
# (which exercises the YAML loader, not just start-up). Also prints the ELF header and the
# newest glibc symbol version the binary needs (the oldest OS it runs on).
# Installs qemu-user and the cross sysroots (libc6-*-cross) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=target/packages
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)

sysroot_of() {
  case "$1" in
    arm64) echo /usr/aarch64-linux-gnu ;;
    armhf) echo /usr/arm-linux-gnueabihf ;;
  esac
}
qemu_of() {
  case "$1" in
    arm64) echo qemu-aarch64 ;;
    armhf) echo qemu-arm ;;
  esac
}

need=()
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
[ -d /usr/aarch64-linux-gnu/lib ] || need+=(libc6-arm64-cross)
[ -d /usr/arm-linux-gnueabihf/lib ] || need+=(libc6-armhf-cross)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

passed=0
for arch in arm64 armhf; do
  deb=$(find "$OUT" -maxdepth 1 -name "fieldrelay_${version}-*_${arch}.deb" | sort | tail -n 1)
  if [ -z "$deb" ]; then
    echo "no $arch package in $OUT: run scripts/build-packages.sh $arch" >&2
    exit 1
  fi
  root="$work/$arch"
  dpkg-deb -x "$deb" "$root"
  bin="$root/usr/bin/fieldrelay"
  echo "== $arch: $deb"
  echo "Architecture: $(dpkg-deb -f "$deb" Architecture); Depends: $(dpkg-deb -f "$deb" Depends)"
  file -b "$bin" 2>/dev/null || readelf -h "$bin" | grep -E 'Class|Machine|Flags'
  glibc=$(readelf -W --dyn-syms "$bin" | grep -o 'GLIBC_[0-9.]*' | sort -t. -k1,1 -k2,2n -k3,3n -u | tail -n 1)
  echo "needs $glibc or newer"

  qemu=("$(qemu_of "$arch")" -L "$(sysroot_of "$arch")")
  got=$("${qemu[@]}" "$bin" --version)
  [ "$got" = "fieldrelay $version" ] || { echo "FAIL: --version printed '$got'" >&2; exit 1; }
  echo "ok: $got (under ${qemu[0]})"
  "${qemu[@]}" "$bin" check --config "$root/etc/fieldrelay/config.yaml"
  echo "ok: check on the packaged config"
  passed=$((passed + 2))
done
echo "qemu-smoke: $passed passed, 0 failed"
