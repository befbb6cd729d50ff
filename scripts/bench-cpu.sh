#!/usr/bin/env bash
# CPU at 1,000 points/s, one QoS 1 message per sample (goal 4 of the uplink benchmarks), against
# Node-RED + node-red-contrib-modbus doing the same reads and publishes, measured in one run:
#
#   scripts/bench-cpu.sh [OTHER_BINARY ...]   # WINDOW=60 WARMUP=15 ROUNDS=1
#
# Each round runs this build, then each OTHER_BINARY (an experiment's build, say), then Node-RED
# (the order reversed every other round).
# Both read the same simulator (`fieldrelay simulate`: 10 units x 100 holding registers, u16
# counters that change every second) with one 100-register read per unit per second, and publish
# one QoS 1 message per register per read (topic <prefix>/<device>/p<i>, JSON value + ts) to the
# same loopback mosquitto, one after the other. fieldrelay commits every sample to queue.db
# (store.sync: full) before publishing it; Node-RED keeps nothing on disk. A mosquitto_sub counts
# what arrives, so a row shows that each really delivered 1,000 messages/s. CPU is utime + stime
# from /proc/<pid>/stat over WINDOW seconds after WARMUP, scaled to CPU-seconds per minute.
#
# Node-RED 4.1 and node-red-contrib-modbus 5.23.3 are installed from npm once, into
# $FR_CACHE/node-red (default ~/.cache/fieldrelay/node-red). 5.23.3 is the newest release that
# runs on Debian's Node.js 20 and whose dependencies all come from the npm registry (5.45 pulls a
# fork of modbus-serial from another host; 5.60 and Node-RED 5 need Node.js 22).
# Needs mosquitto and mosquitto-clients (scripts/test-deps.sh), node and npm.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
WINDOW=${WINDOW:-60}
WARMUP=${WARMUP:-15}
ROUNDS=${ROUNDS:-1}
UNITS=10
POINTS=100
cache=${FR_CACHE:-$HOME/.cache/fieldrelay}/node-red
export PATH="$PATH:/usr/sbin"

if [ ! -f "$cache/node_modules/node-red/red.js" ] ||
  [ ! -d "$cache/node_modules/node-red-contrib-modbus" ]; then
  echo "installing Node-RED and node-red-contrib-modbus into $cache" >&2
  mkdir -p "$cache"
  (cd "$cache" && npm install --no-audit --no-fund --loglevel=error \
    node-red@4.1.8 node-red-contrib-modbus@5.23.3 >&2)
fi
bin=${FR_BIN:-}
if [ -z "$bin" ]; then
  (cd "$root" && cargo build --release --locked --bin fieldrelay >&2)
  bin=$root/target/release/fieldrelay
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/fieldrelay-bench-cpu.XXXXXX")
chmod 755 "$work" # mosquitto started as root runs as `mosquitto`
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${FR_BENCH_KEEP:-}" ] && echo "kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# utime + stime in clock ticks (fields 14 and 15; the name in parentheses may hold spaces).
ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
rss_kib() { awk '$1 == "VmRSS:" {print $2}' "/proc/$1/status"; }
hz=$(getconf CLK_TCK)

broker_port=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\n' "$broker_port" \
  >"$work/mosquitto.conf"
mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
pids+=($!)

sim_port=$(free_port)
{
  printf 'simulator:\n  tick: 1s\n  endpoints:\n    - type: tcp\n      port: %s\n  units:\n' "$sim_port"
  for u in $(seq 1 $UNITS); do
    printf '    - unit_id: %d\n      registers:\n' "$u"
    for i in $(seq 0 $((POINTS - 1))); do
      printf '        - {table: holding, address: %d, type: u16, counter: {start: %d, step: 1}}\n' "$i" "$i"
    done
  done
} >"$work/simulator.yaml"
"$bin" simulate --config "$work/simulator.yaml" >"$work/simulator.log" 2>&1 &
pids+=($!)

# One subscriber for both, printing topics only.
sleep 1
mosquitto_sub -p "$broker_port" -q 1 -t 'fieldrelay/#' -F '%t' >"$work/arrivals.txt" 2>/dev/null &
pids+=($!)

gateway_config() { # data_dir
  printf 'gateway:\n  id: cpu-gw\n  data_dir: %s\n' "$1"
  printf 'uplink:\n  url: mqtt://127.0.0.1:%s\n  topic_prefix: fieldrelay/cpu\n  max_inflight: 64\n' "$broker_port"
  printf 'store:\n  sync: full\n'
  printf 'buses:\n  - name: sim\n    type: tcp\n    host: 127.0.0.1\n    port: %s\n' "$sim_port"
  printf 'devices:\n'
  for u in $(seq 1 $UNITS); do
    printf '  - name: d%02d\n    bus: sim\n    unit_id: %d\n    poll_interval: 1s\n    points:\n' "$u" "$u"
    for i in $(seq 0 $((POINTS - 1))); do
      printf '      - {name: p%d, table: holding, address: %d, type: u16, qos: 1, publish: every_poll}\n' "$i" "$i"
    done
  done
}

# measure PID PREFIX -> "cpu_s_per_min msgs_per_s rss_kib"
measure() {
  local pid=$1 prefix=$2
  sleep "$WARMUP"
  kill -0 "$pid" 2>/dev/null || { echo "process $pid exited during warm-up" >&2; return 1; }
  local c0 m0 t0 c1 m1 t1
  c0=$(ticks "$pid") m0=$(grep -c "^$prefix/" "$work/arrivals.txt" || true) t0=$(date +%s.%N)
  sleep "$WINDOW"
  c1=$(ticks "$pid") m1=$(grep -c "^$prefix/" "$work/arrivals.txt" || true) t1=$(date +%s.%N)
  awk -v c0="$c0" -v c1="$c1" -v m0="$m0" -v m1="$m1" -v t0="$t0" -v t1="$t1" -v hz="$hz" \
    -v rss="$(rss_kib "$pid")" \
    'BEGIN { d = t1 - t0; printf "%.3f %.0f %s\n", (c1 - c0) / hz / d * 60, (m1 - m0) / d, rss }'
}

# Measures PID, then stops it (these run in a subshell: the EXIT trap does not see its pids).
finish() { # pid log prefix
  local out status=0
  out=$(measure "$1" "$3") || status=$?
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  [ "$status" -eq 0 ] || { tail -20 "$2" >&2; return 1; }
  echo "$out"
}

run_fieldrelay() { # round binary
  local dir=$work/gw-$1-$(basename "$2")
  mkdir -p "$dir"
  gateway_config "$dir/data" >"$dir/gateway.yaml"
  "$2" run --config "$dir/gateway.yaml" >"$dir/log" 2>&1 &
  local pid=$!
  pids+=($pid)
  finish "$pid" "$dir/log" fieldrelay/cpu
}

run_nodered() { # round
  local dir=$work/nodered-$1
  mkdir -p "$dir"
  cp "$root/benches/cpu/nodered-flow.json" "$dir/flows.json"
  FR_MODBUS_PORT=$sim_port FR_MQTT_PORT=$broker_port FR_NODERED_PORT=$(free_port) \
    node "$cache/node_modules/node-red/red.js" --userDir "$dir" \
    --settings "$root/benches/cpu/nodered-settings.js" "$dir/flows.json" >"$dir/log" 2>&1 &
  local pid=$!
  pids+=($pid)
  finish "$pid" "$dir/log" fieldrelay/nodered
}

bins=("$bin" "$@")
declare -A ours
theirs=()
run_all() { # round
  for b in "${bins[@]}"; do ours[$b]+="$(run_fieldrelay "$1" "$b")"$'\n'; done
}
for round in $(seq 1 "$ROUNDS"); do
  # Alternate the order between rounds.
  if [ $((round % 2)) -eq 1 ]; then
    run_all "$round"
    theirs+=("$(run_nodered "$round")")
  else
    theirs+=("$(run_nodered "$round")")
    run_all "$round"
  fi
done

median() { printf '%s\n' "$@" | sort -g | awk 'NF {a[++n]=$1} END {print a[int((n+1)/2)]}'; }
span() { printf '%s\n' "$@" | sort -g | awk 'NF {a[++n]=$1} END {printf "%.3f-%.3f", a[1], a[n]}'; }
col() { local i=$1; shift; printf '%s\n' "$@" | awk -v i="$i" 'NF {print $i}'; }
tcpu=$(median $(col 1 "${theirs[@]}"))
echo "goal 4: CPU at $((UNITS * POINTS)) points/s, one QoS 1 message per sample, ${WINDOW}s window after ${WARMUP}s warm-up, $ROUNDS round(s), median and min-max"
printf '| %-58s | %12s | %13s | %10s | %9s | %11s |\n' case "CPU-s/min" "min-max" "msgs/s" "RSS MiB" "vs Node-RED"
printf '|%s|%s|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..60})" "$(printf -- '-%.0s' {1..14})" "$(printf -- '-%.0s' {1..15})" \
  "$(printf -- '-%.0s' {1..12})" "$(printf -- '-%.0s' {1..11})" "$(printf -- '-%.0s' {1..13})"
row() { # label cpu span msgs rss ratio
  printf '| %-58s | %12.3f | %13s | %10.0f | %9.1f | %10.2fx |\n' "$1" "$2" "$3" "$4" "$(awk -v k="$5" 'BEGIN{print k/1024}')" "$6"
}
for b in "${bins[@]}"; do
  runs=${ours[$b]}
  ocpu=$(median $(col 1 "$runs"))
  label="fieldrelay (sync full, committed before publish)"
  [ "$b" = "$bin" ] || label="fieldrelay $(basename "$b")"
  row "$label" "$ocpu" "$(span $(col 1 "$runs"))" "$(median $(col 2 "$runs"))" "$(median $(col 3 "$runs"))" \
    "$(awk -v a="$ocpu" -v b="$tcpu" 'BEGIN{print a/b}')"
done
row "Node-RED 4.1 + node-red-contrib-modbus (nothing on disk)" "$tcpu" "$(span $(col 1 "${theirs[@]}"))" \
  "$(median $(col 2 "${theirs[@]}"))" "$(median $(col 3 "${theirs[@]}"))" 1
echo "  goal: fieldrelay <= 0.6x Node-RED's CPU"
