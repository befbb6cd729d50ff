#!/usr/bin/env bash
# What the web console costs, measured in one run so the figures compare.
#
#   scripts/measure-console.sh BINARY
#
# BINARY runs a gateway with 1,004 points (the example's two devices and a bank of 1,000
# holding registers, all served by `BINARY simulate`) against a local mosquitto, with the
# console on a free loopback port. Then, in Debian's chromium through Playwright (what
# scripts/test-deps.sh installs):
#   1. the devices page's load time at 1,004 points (LOADS fresh loads: median and worst);
#   2. the gateway's RSS with no console open, with three live consoles open (devices,
#      overview, log) for HOLD seconds, and after they closed, each the median of 5 readings.
# Figures are reported, not asserted. For the binary's size and RSS against another build, see
# scripts/measure-footprint.sh.
set -euo pipefail
[ $# -eq 1 ] || { sed -n 2,15p "$0"; exit 2; }
bin=$(realpath "$1")
SETTLE=${SETTLE:-15}
HOLD=${HOLD:-30}
LOADS=${LOADS:-5}
root=$(cd "$(dirname "$0")/.." && pwd)
python=${FIELDRELAY_PYTHON:-$HOME/.cache/fieldrelay/pyenv/bin/python}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_kib() { awk '$1 == "VmRSS:" {print $2}' "/proc/$1/status"; }
median_rss() { # pid: median of 5 readings a second apart
  for _ in 1 2 3 4 5; do rss_kib "$1"; sleep 1; done | sort -n | sed -n 3p
}

sim_port=$(free_port) broker_port=$(free_port) web=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$broker_port" >"$work/mosquitto.conf"
/usr/sbin/mosquitto -c "$work/mosquitto.conf" >/dev/null 2>&1 &
pids+=($!)
{
  sed -e "s#port: 5020#port: $sim_port#" -e "s#mqtt://127.0.0.1:1883#mqtt://127.0.0.1:$broker_port#" \
    -e "s#/var/lib/fieldrelay#$work/data#" "$root/config/example.yaml"
  printf '  - name: bank\n    bus: plc1\n    unit_id: 3\n    poll_interval: 1s\n    points:\n'
  for i in $(seq 0 999); do
    printf '      - {name: p%04d, table: holding, address: %d, type: u16}\n' "$i" $((100 + i))
  done
  printf 'console:\n  listen: 127.0.0.1:%s\n' "$web"
} >"$work/gw.yaml"
"$bin" check --config "$work/gw.yaml" >/dev/null
"$bin" simulate --config "$work/gw.yaml" >"$work/sim.log" 2>&1 &
pids+=($!)
sleep 1
"$bin" run --config "$work/gw.yaml" >"$work/gw.log" 2>&1 &
gw=$!
pids+=($gw)
sleep "$SETTLE"
kill -0 "$gw" || { cat "$work/gw.log"; exit 1; }

echo "devices page at 1,004 points, $LOADS loads in chromium:"
"$python" "$root/scripts/measure-console.py" render "http://127.0.0.1:$web" "$LOADS"
sleep 5
none=$(median_rss "$gw")
mkfifo "$work/hold"
"$python" "$root/scripts/measure-console.py" hold "http://127.0.0.1:$web" "$HOLD" 3 >"$work/hold" &
holder=$!
pids+=($holder)
read -r line <"$work/hold"
[ "$line" = open ] || { echo "browser: $line"; exit 1; }
sleep 10
three=$(median_rss "$gw")
wait "$holder"
sleep 5
after=$(median_rss "$gw")
awk -v n="$none" -v t="$three" -v a="$after" 'BEGIN {
  printf "gateway RSS: no console %d KiB; three live consoles %d KiB (%+d KiB, x%.3f); after they closed %d KiB (%+d KiB)\n",
    n, t, t - n, t / n, a, a - n }'
