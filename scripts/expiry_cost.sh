#!/bin/bash
# The cost of client expiry on the IAMAT path (issue 24, README: Client data), side by side in
# one run: lone nodes loaded in turn by the same `herdctl bench` (closed loop, 50 connections x 32
# in flight, 100,000 client ids, every wire line logged, durability relaxed):
#   before  BEFORE's binary (the code before expiry existed), when given
#   off     this binary, clients.ttl_s unset (what every herd without a ttl pays)
#   ttl     this binary, clients.ttl_s: 30 (the check on every update, and the sweep each second)
# Rounds rotate which node goes first; compare the ratios within a round.
#
# Usage: scripts/expiry_cost.sh [HERDCTL (target/release/herdctl)] [ROUNDS (3)] [SECONDS (8)] [BEFORE]
# Ports: 26400-26402 and their admin ports 27400-27402 (BASE_PORT moves them).
set -euo pipefail
H=$(realpath "${1:-target/release/herdctl}")
ROUNDS=${2:-3}
SECS=${3:-8}
BEFORE=${4:+$(realpath "$4")}
BASE=${BASE_PORT:-26400}
OUT=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
  rm -rf "$OUT"
}
trap cleanup EXIT
wait_port() {
  for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "expiry_cost.sh: nothing listens on port $1" >&2; exit 1
}

# start NAME BINARY PORT EXTRA-YAML
start() {
  local name=$1 bin=$2 port=$3 extra=$4
  mkdir -p "$OUT/$name"
  cat > "$OUT/$name/herd.yaml" <<Y
servers:
  Solo: { port: $port }
log_dir: logs
data_dir: data
run_dir: run
logs: { rotation: never, max_file_bytes: 104857600, keep: 1 }
durability: relaxed
$extra
Y
  (cd "$OUT/$name" && exec "$bin" --config herd.yaml run Solo 2>stderr) &
  PIDS+=($!)
  wait_port "$port"
  # Fill the table once, so every node runs at its steady size.
  "$H" --config "$OUT/$name/herd.yaml" bench --target Solo --duration 2 --id-prefix c --json >/dev/null
}

NAMES=()
if [ -n "$BEFORE" ]; then start before "$BEFORE" "$BASE" ""; NAMES+=(before); fi
start off "$H" $((BASE + 1)) ""
NAMES+=(off)
start ttl "$H" $((BASE + 2)) "clients: { ttl_s: 30 }"
NAMES+=(ttl)

rate_of() {
  "$H" --config "$OUT/$1/herd.yaml" bench --target Solo --duration "$SECS" \
    --connections 50 --window 32 --id-prefix c --json \
    | sed 's/.*"ops_per_s":\([0-9.]*\).*/\1/'
}

echo "load: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores; $SECS s per node"
printf '%-6s' round; for n in "${NAMES[@]}"; do printf ' %12s' "$n/s"; done
printf ' %10s %10s\n' "ttl/off" "${BEFORE:+off/before}"
for round in $(seq 1 "$ROUNDS"); do
  declare -A rate=()
  k=${#NAMES[@]}
  for i in $(seq 0 $((k - 1))); do
    n=${NAMES[$(((i + round) % k))]}
    rate[$n]=$(rate_of "$n")
  done
  printf '%-6s' "$round"; for n in "${NAMES[@]}"; do printf ' %12.0f' "${rate[$n]}"; done
  printf ' %9.2fx' "$(awk -v a="${rate[ttl]}" -v b="${rate[off]}" 'BEGIN {print a / b}')"
  if [ -n "$BEFORE" ]; then
    printf ' %9.2fx' "$(awk -v a="${rate[off]}" -v b="${rate[before]}" 'BEGIN {print a / b}')"
  fi
  echo
  unset rate
done
