#!/usr/bin/env bash
# Demo on a fresh Debian/Ubuntu machine: installs mosquitto if missing, builds fieldrelay,
# starts a simulated Modbus device and the gateway on config/example.yaml, and prints the
# values arriving at the broker. Ctrl-C stops everything.
#
# Logs (gateway, simulator, mosquitto) and the demo's queue stay in target/demo/ after it ends;
# on any failure their last lines are printed with what went wrong.
#
#   DEMO_COUNT=5 scripts/demo.sh     # stop after 5 messages (CI)
#   DEMO_MODBUS_PORT=5021            # the simulated device's port, if 5020 is taken
#   DEMO_DIR=DIR                     # logs and queue elsewhere
#   DEMO_BIN=PATH                    # an already built fieldrelay (no cargo build)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin"

dir=${DEMO_DIR:-target/demo}
modbus_port=${DEMO_MODBUS_PORT:-5020}
broker_port=1883 # README's mosquitto_pub and mosquitto_sub use the default port
pids=()
finished=false

show_logs() {
  for log in "$dir"/gateway.log "$dir"/simulator.log "$dir"/mosquitto.log; do
    [ -s "$log" ] || continue
    echo "---- last lines of $log" >&2
    tail -n 15 "$log" >&2
  done
  echo "---- all logs are in $dir/" >&2
}
fail() {
  echo "demo: $*" >&2
  show_logs
  finished=true
  exit 1
}
cleanup() {
  local status=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$status" -ne 0 ] && ! $finished; then
    echo "demo: stopped (exit status $status)" >&2
    show_logs
  fi
}
trap cleanup EXIT
trap 'finished=true; exit 130' INT
trap 'exit 143' TERM
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
alive() { kill -0 "$1" 2>/dev/null; }

# Only what the demo needs: the broker and its command-line clients.
need=()
command -v mosquitto >/dev/null || need+=(mosquitto)
command -v mosquitto_sub >/dev/null || need+=(mosquitto-clients)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

if [ -n "${DEMO_BIN:-}" ]; then
  bin=$DEMO_BIN
else
  echo "building fieldrelay (the first build takes a few minutes)"
  cargo build --locked
  bin=target/debug/fieldrelay
fi

rm -rf "$dir"
mkdir -p "$dir"
echo "logs: $dir/gateway.log, $dir/simulator.log, $dir/mosquitto.log"

# The shipped example, with the demo's queue directory and port. It logs in anonymously (the
# package's login lines are off in the example), which the demo's broker allows.
sed -e "s#data_dir: .*#data_dir: $PWD/$dir/data#" \
  -e "s#port: 5020#port: $modbus_port#" \
  config/example.yaml >"$dir/config.yaml"
"$bin" check --config "$dir/config.yaml"

if listening "$modbus_port"; then
  owner=$(ss -ltnpH "sport = :$modbus_port" 2>/dev/null | grep -o 'users:(([^)]*))' | head -n 1 || true)
  fail "port $modbus_port, where the demo's simulated device listens, is already in use${owner:+ by $owner}.
Stop that program, or run the demo on another port: DEMO_MODBUS_PORT=5021 scripts/demo.sh"
fi

if listening "$broker_port"; then
  echo "using the MQTT broker already listening on 127.0.0.1:$broker_port"
else
  echo "starting mosquitto on 127.0.0.1:$broker_port"
  printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$broker_port" >"$dir/mosquitto.conf"
  mosquitto -c "$dir/mosquitto.conf" >"$dir/mosquitto.log" 2>&1 &
  mosquitto_pid=$!
  pids+=("$mosquitto_pid")
  for _ in $(seq 100); do
    listening "$broker_port" && break
    alive "$mosquitto_pid" || break
    sleep 0.1
  done
  listening "$broker_port" || fail "mosquitto did not start"
fi

"$bin" simulate --config "$dir/config.yaml" 2>"$dir/simulator.log" &
simulator=$!
pids+=("$simulator")
for _ in $(seq 100); do
  listening "$modbus_port" && break
  alive "$simulator" || fail "the simulated device did not start"
  sleep 0.1
done
listening "$modbus_port" || fail "the simulated device does not listen on $modbus_port"

RUST_LOG=${RUST_LOG:-info} "$bin" run --config "$dir/config.yaml" 2>"$dir/gateway.log" &
gateway=$!
pids+=("$gateway")
for _ in $(seq 300); do
  grep -q "uplink connected" "$dir/gateway.log" && break
  alive "$gateway" || fail "the gateway stopped"
  sleep 0.1
done
if ! grep -q "uplink connected" "$dir/gateway.log"; then
  hint=""
  grep -q "NotAuthorized\|BadUserNamePassword" "$dir/gateway.log" &&
    hint=" (the broker on $broker_port refuses anonymous clients, as the package's on-site broker does: stop it, or allow anonymous clients on 127.0.0.1)"
  fail "the gateway could not connect to the broker within 30 s$hint"
fi

echo "gateway running; values arriving at the broker (Ctrl-C to stop):"
if [ -n "${DEMO_COUNT:-}" ]; then
  mosquitto_sub -h 127.0.0.1 -p "$broker_port" -v -t 'fieldrelay/#' -C "$DEMO_COUNT" -W 60 ||
    fail "fewer than $DEMO_COUNT messages arrived within 60 s"
  finished=true
else
  mosquitto_sub -h 127.0.0.1 -p "$broker_port" -v -t 'fieldrelay/#'
fi
