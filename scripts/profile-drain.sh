#!/usr/bin/env bash
# Where a drained row's cost goes, counted rather than timed (valgrind counts instructions, the
# same on a busy machine as on an idle one), for this build and any other fieldrelay binaries:
#
#   scripts/profile-drain.sh [OTHER_BINARY ...]     # ROWS=10000
#
# The uplink bench's drain (`cargo bench --bench uplink -- drain`: the real binary sends a
# committed QoS 1 backlog to a loopback mosquitto, 64 in flight) runs once with ROWS and once
# with 2 x ROWS rows under `valgrind --tool=callgrind`; the difference divided by ROWS is the
# instructions a drained row costs, start-up and shutdown cancelled out. Printed per binary, as
# a ratio to this build, with the inclusive instructions per row of the functions a row goes
# through (the larger run, divided by its rows). Then `strace -f -c` of this build's larger run:
# system calls per drained row. Outputs stay in target/profile-drain.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
ROWS=${ROWS:-10000}
out=$root/target/profile-drain
rm -rf "$out"
mkdir -p "$out"
compare=$(IFS=:; echo "$*")
export PATH="$PATH:/usr/sbin" FR_BENCH_BASELINES=0 FR_BENCH_RUNS=1 FR_BENCH_COMPARE="$compare"

for rows in "$ROWS" $((2 * ROWS)); do
  FR_BENCH_ROWS=$rows \
    FR_BENCH_WRAP="valgrind --tool=callgrind --callgrind-out-file=$out/cg-$rows.%p.out" \
    cargo bench --bench uplink -- drain >"$out/bench-$rows.log" 2>&1 ||
    { tail -20 "$out/bench-$rows.log"; exit 1; }
done

# The binary a callgrind file profiled, and its total instructions.
target() { sed -n "s/^cmd: *\([^ ]*\).*/\1/p" "$1"; }
total() { sed -n 's/^totals: *\([0-9]*\).*/\1/p' "$1"; }
# Inclusive instructions of the functions matching a pattern (the largest match).
inclusive() { # file pattern
  callgrind_annotate --inclusive=yes --threshold=100 "$1" 2>/dev/null |
    grep -E "$2" | head -1 | awk '{gsub(",", "", $1); print $1}'
}

printf '%-44s %12s %10s\n' "binary" "Ir per row" "vs first"
first=""
bins=("$root/target/release/fieldrelay" "$@")
for bin in "${bins[@]}"; do
  small="" large=""
  for f in "$out"/cg-"$ROWS".*.out; do [ "$(target "$f")" = "$bin" ] && small=$f; done
  for f in "$out"/cg-$((2 * ROWS)).*.out; do [ "$(target "$f")" = "$bin" ] && large=$f; done
  [ -n "$small" ] && [ -n "$large" ] || { echo "no profile of $bin" >&2; continue; }
  per=$(( ($(total "$large") - $(total "$small")) / ROWS ))
  [ -n "$first" ] || first=$per
  printf '%-44s %12s %9.2fx\n' "$(basename "$bin")" "$per" "$(awk -v a="$per" -v b="$first" 'BEGIN{print a/b}')"
  for fn in 'queue::writer::Writer::apply ' 'store::apply_writes ' 'store::fetch_queued ' \
    'store::decode_row ' 'Link::connected::' 'Link::on_packets::' 'Link::refill::' \
    'Link>::send_batch::' 'wire::Topics::sample ' 'wire::sample_payload ' 'codec::decode_row ' 'PacketWriter::write::' 'Writer::limits ' \
    'store::used_bytes ' 'store::oldest_ts ' 'sqlite3WalFrames' 'Packet::read '; do
    ir=$(inclusive "$large" "$fn" || true)
    [ -n "$ir" ] && printf '    %-40s %12s\n' "${fn% }" "$((ir / (2 * ROWS)))"
  done
done

FR_BENCH_COMPARE="" FR_BENCH_ROWS=$((2 * ROWS)) \
  FR_BENCH_WRAP="strace -f -c -o $out/strace.txt" \
  cargo bench --bench uplink -- drain >"$out/strace-bench.log" 2>&1 ||
  { tail -20 "$out/strace-bench.log"; exit 1; }
# strace writes its summary once the gateway it traced has exited.
for _ in $(seq 100); do [ -s "$out/strace.txt" ] && break; sleep 0.2; done
echo
echo "system calls per drained row (strace -f -c, this build, $((2 * ROWS)) rows)"
awk -v n=$((2 * ROWS)) '$NF ~ /^[a-z_0-9]+$/ && $4 ~ /^[0-9]+$/ && $NF != "total" {
    printf "    %-20s %8.3f\n", $NF, $4 / n }' "$out/strace.txt" | sort -k2 -gr | head -12
awk -v n=$((2 * ROWS)) '$NF == "total" { printf "    %-20s %8.3f\n", "all", $4 / n }' "$out/strace.txt"
