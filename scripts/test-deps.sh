#!/usr/bin/env bash
# Installs what the test suite needs on Debian/Ubuntu: a real mosquitto broker and its clients,
# socat (serial pseudo-terminal pairs), script (a terminal for the progress bar), and pymodbus
# 3.7.4 (a Modbus RTU slave we did not write) in a Python virtual environment, with pysparkplug
# 0.6.1; Node.js with npm sparkplug-payload 1.0.3 (Sparkplug peers); Debian's chromium and
# Playwright for Python 1.65.2 (the web console's browser test drives the system chromium; no
# browser is downloaded). Idempotent; uses sudo when not root.
set -euo pipefail

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_sub >/dev/null 2>&1 || need+=(mosquitto-clients)
command -v socat >/dev/null 2>&1 || need+=(socat)
command -v python3 >/dev/null 2>&1 || need+=(python3)
# script(1) gives a test a pseudo-terminal (the progress bar); essential on Debian, not in every image.
command -v script >/dev/null 2>&1 || need+=(bsdutils)
# The web console's browser test runs Debian's chromium (/usr/bin/chromium).
[ -x /usr/bin/chromium ] || need+=(chromium)

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

# pysparkplug 0.6.1 (a Sparkplug B codec and client we did not write; the test host application
# is built on it) with its MQTT client paho-mqtt 1.6.1, in the same virtual environment.
if ! "$pyenv/bin/python" -c 'import pysparkplug, paho.mqtt; assert pysparkplug.__version__ == "0.6.1"' >/dev/null 2>&1; then
  "$pyenv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "pysparkplug==0.6.1" "paho-mqtt==1.6.1" "protobuf==7.36.2"
fi

# Playwright for Python 1.65.2 (drives /usr/bin/chromium for the console's browser test; its own
# browser download is never run), in the same virtual environment.
if ! "$pyenv/bin/python" -c 'import importlib.metadata as m; assert m.version("playwright") == "1.65.2"' >/dev/null 2>&1; then
  "$pyenv/bin/python" -m pip install --quiet --disable-pip-version-check "playwright==1.65.2"
fi

# npm sparkplug-payload 1.0.3 (Eclipse Tahu's JavaScript codec: a second Sparkplug decoder), from
# tests/peers/package-lock.json, in a cache the tests find (FIELDRELAY_NODE_MODULES).
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || apt_install nodejs npm
nodedir="${FIELDRELAY_NODE:-$HOME/.cache/fieldrelay/node}"
peers="$(cd "$(dirname "$0")/../tests/peers" && pwd)"
if ! cmp -s "$peers/package-lock.json" "$nodedir/package-lock.json" \
  || [ ! -f "$nodedir/node_modules/sparkplug-payload/package.json" ]; then
  mkdir -p "$nodedir"
  cp "$peers/package.json" "$peers/package-lock.json" "$nodedir/"
  (cd "$nodedir" && npm ci --no-audit --no-fund --silent)
fi

# Debian installs mosquitto in /usr/sbin, which is not on every user's PATH.
command -v mosquitto >/dev/null 2>&1 || echo "note: add /usr/sbin to PATH for mosquitto" >&2
echo "test dependencies present: mosquitto, mosquitto-clients, socat, chromium, pymodbus 3.7.4, pysparkplug 0.6.1 and playwright 1.65.2 ($pyenv), sparkplug-payload 1.0.3 ($nodedir)"
