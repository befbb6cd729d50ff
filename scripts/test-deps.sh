#!/usr/bin/env bash
# Installs what the test suite needs on Debian/Ubuntu: a real mosquitto broker and its clients,
# and socat (serial pseudo-terminal pairs). Idempotent; uses sudo when not root.
set -euo pipefail

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_sub >/dev/null 2>&1 || need+=(mosquitto-clients)
command -v socat >/dev/null 2>&1 || need+=(socat)

if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
# Debian installs mosquitto in /usr/sbin, which is not on every user's PATH.
command -v mosquitto >/dev/null 2>&1 || echo "note: add /usr/sbin to PATH for mosquitto" >&2
echo "test dependencies present: mosquitto, mosquitto-clients, socat"
