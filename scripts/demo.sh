#!/usr/bin/env bash
# Demo on a fresh Debian/Ubuntu machine: installs mosquitto if missing, builds fieldrelay,
# starts a simulated Modbus device and the gateway on config/example.yaml, and prints the
# values arriving at the broker. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin"

scripts/test-deps.sh
cargo build --locked --quiet
bin=target/debug/fieldrelay

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

# The shipped example keeps its queue in /var/lib/fieldrelay (the packaged service's state
# directory); the demo uses a scratch directory instead so it needs no root.
sed "s#data_dir: .*#data_dir: $work/data#" config/example.yaml >"$work/config.yaml"
$bin check --config "$work/config.yaml"

if ! (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null; then
  echo "starting mosquitto on 127.0.0.1:1883"
  printf 'listener 1883 127.0.0.1\nallow_anonymous true\n' >"$work/mosquitto.conf"
  mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
  pids+=($!)
  # mosquitto needs a moment to listen; subscribing before that fails with "connection refused".
  for _ in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null && break
    sleep 0.1
  done
  if ! (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null; then
    echo "mosquitto did not start; its log:" >&2
    cat "$work/mosquitto.log" >&2
    exit 1
  fi
fi

$bin simulate --config "$work/config.yaml" 2>"$work/simulator.log" &
pids+=($!)
RUST_LOG=${RUST_LOG:-info} $bin run --config "$work/config.yaml" 2>"$work/gateway.log" &
pids+=($!)

echo "gateway running; values arriving at the broker (Ctrl-C to stop):"
mosquitto_sub -h 127.0.0.1 -p 1883 -v -t 'fieldrelay/#' ${DEMO_COUNT:+-C "$DEMO_COUNT"}
