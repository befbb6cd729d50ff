#!/usr/bin/env bash
# Installs what the test suite needs on Debian/Ubuntu: a real mosquitto broker and its clients,
# socat (serial pseudo-terminal pairs), script (a terminal for the progress bar), and pymodbus
# 3.7.4 (a Modbus RTU slave we did not write) in a Python virtual environment. Idempotent; uses
# sudo when not root.
set -euo pipefail

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_sub >/dev/null 2>&1 || need+=(mosquitto-clients)
command -v socat >/dev/null 2>&1 || need+=(socat)
command -v python3 >/dev/null 2>&1 || need+=(python3)
# script(1) gives a test a pseudo-terminal (the progress bar); essential on Debian, not in every image.
command -v script >/dev/null 2>&1 || need+=(bsdutils)

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
apt_install() {
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@"
}
[ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"

# pymodbus 3.7.4 (a Modbus RTU slave we did not write) in its own virtual environment: Debian's
# Python refuses system-wide pip installs. The tests find it through FIELDRELAY_PYTHON, this
# location, or python3 on the PATH.
pyenv="${FIELDRELAY_PYENV:-$HOME/.cache/fieldrelay/pyenv}"
if ! "$pyenv/bin/python" -c 'import pymodbus, serial; assert pymodbus.__version__ == "3.7.4"' >/dev/null 2>&1; then
  rm -rf "$pyenv"
  if ! python3 -m venv "$pyenv" >/dev/null 2>&1; then
    # Debian ships venv (with ensurepip) separately.
    rm -rf "$pyenv"
    apt_install python3-venv
    python3 -m venv "$pyenv"
  fi
  "$pyenv/bin/python" -m pip install --quiet --disable-pip-version-check "pymodbus[serial]==3.7.4"
fi

# Debian installs mosquitto in /usr/sbin, which is not on every user's PATH.
command -v mosquitto >/dev/null 2>&1 || echo "note: add /usr/sbin to PATH for mosquitto" >&2
echo "test dependencies present: mosquitto, mosquitto-clients, socat, pymodbus 3.7.4 ($pyenv)"
