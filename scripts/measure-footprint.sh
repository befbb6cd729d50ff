#!/usr/bin/env bash
# Binary size and resident memory of fieldrelay builds, measured in one run so they compare.
#
#   scripts/measure-footprint.sh BASELINE_BINARY [OTHER_BINARY ...]
#
# Each binary runs the shipped example config (2 devices, 7 points, 1 s polls; `unit:` keys
# removed so older builds accept it) against the
# simulator (served by the first binary) and a local mosquitto on free ports, for SETTLE seconds;
# then VmRSS (and its anonymous and file-backed parts) is read from /proc. A binary that has the metrics endpoint also runs
# with `metrics.listen` set and is scraped SCRAPES times before the reading; one that has the web
# console runs a third time with the console on the same address (nobody watching). Figures are
# printed as ratios to the first binary. Needs mosquitto (scripts/test-deps.sh installs it).
set -euo pipefail
[ $# -ge 1 ] || { sed -n 2,10p "$0"; exit 2; }
SETTLE=${SETTLE:-10}
SCRAPES=${SCRAPES:-200}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
kib() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status"; }

sim_port=$(free_port)
broker_port=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$broker_port" >"$work/mosquitto.conf"
mosquitto -c "$work/mosquitto.conf" >/dev/null 2>&1 &
pids+=($!)
sed -e "s#port: 5020#port: $sim_port#" -e "s#mqtt://127.0.0.1:1883#mqtt://127.0.0.1:$broker_port#" \
  -e "s#/var/lib/fieldrelay#$work/sim-data#" -e '/^ *unit: /d' "$root/config/example.yaml" >"$work/sim.yaml"
"$1" simulate --config "$work/sim.yaml" >/dev/null 2>&1 &
pids+=($!)
sleep 1

printf '%-40s %9s %9s %9s %9s %9s\n' binary "size KiB" stripped "RSS KiB" "anon KiB" "file KiB"
base_size="" base_rss=""
run() { # binary label extra-config
  local bin=$1 label=$2 extra=$3 n=${#pids[@]}
  local dir="$work/run$n"
  mkdir -p "$dir"
  sed -e "s#port: 5020#port: $sim_port#" -e "s#mqtt://127.0.0.1:1883#mqtt://127.0.0.1:$broker_port#" \
    -e "s#/var/lib/fieldrelay#$dir/data#" -e "s#client_id: plant1-gw01#client_id: gw$n#" -e '/^ *unit: /d' \
    "$root/config/example.yaml" >"$dir/gw.yaml"
  printf '%s' "$extra" >>"$dir/gw.yaml"
  "$bin" run --config "$dir/gw.yaml" >"$dir/log" 2>&1 &
  local pid=$!
  pids+=($pid)
  sleep "$SETTLE"
  kill -0 "$pid" 2>/dev/null || { echo "$label exited:"; cat "$dir/log"; exit 1; }
  if [ -n "$extra" ]; then
    local port=${extra##*:}
    for _ in $(seq "$SCRAPES"); do curl -sf "http://127.0.0.1:${port%$'\n'}/metrics" >/dev/null; done
  fi
  local rss anon file size stripped
  rss=$(kib "$pid" VmRSS) anon=$(kib "$pid" RssAnon) file=$(kib "$pid" RssFile)
  size=$(($(stat -c %s "$bin") / 1024))
  strip -o "$dir/stripped" "$bin" && stripped=$(($(stat -c %s "$dir/stripped") / 1024))
  kill "$pid"
  [ -n "$base_size" ] || { base_size=$stripped base_rss=$rss; }
  printf '%-40s %9s %9s %9s %9s %9s   x%s size, x%s RSS\n' "$label" "$size" "$stripped" "$rss" "$anon" "$file" \
    "$(awk -v a="$stripped" -v b="$base_size" 'BEGIN{printf "%.3f", a/b}')" \
    "$(awk -v a="$rss" -v b="$base_rss" 'BEGIN{printf "%.3f", a/b}')"
}

for bin in "$@"; do
  run "$bin" "$bin" ""
  if grep -q fieldrelay_build_info "$bin"; then
    run "$bin" "$bin (metrics on, $SCRAPES scrapes)" $'\nmetrics:\n  listen: 127.0.0.1:'"$(free_port)"$'\n'
  fi
  if grep -q console-user "$bin"; then
    # The web console on the metrics' address, nobody watching (scripts/measure-console.sh
    # measures open consoles).
    port=$(free_port)
    run "$bin" "$bin (console + metrics, $SCRAPES scrapes)" \
      $'\nmetrics:\n  listen: 127.0.0.1:'"$port"$'\nconsole:\n  listen: 127.0.0.1:'"$port"$'\n'
  fi
done
