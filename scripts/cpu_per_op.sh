#!/bin/bash
# Server CPU per operation, side by side in one run (issue 26, README: Benchmarks):
# redis-server (Debian's package, AOF appendfsync everysec) under redis-benchmark SET
# (60-byte values, 50 connections, pipeline 32, 100,000 keys) against a lone herdctl node
# under `herdctl bench` IAMAT (50 connections x 32 in flight, 100,000 client ids, every wire
# line logged). Each server's CPU time (user + system) is read from /proc/PID/stat before
# and after its load; the figure is that time over the operations acknowledged. Rounds
# alternate which goes first; compare the ratio within a round.
# Two figures per server: its own process (utime + stime, fields 14-15), and with its reaped
# children added (cutime + cstime, fields 16-17). Redis rewrites its AOF in a forked child
# (BGREWRITEAOF, when the file has grown by auto-aof-rewrite-percentage) and reaps it, so
# that child's CPU shows only in the second figure: the first undercounts Redis. A child
# still running when a round ends is counted in the round it is reaped in. A herdctl node
# forks nothing; its second figure is there for symmetry.
#
# Usage: scripts/cpu_per_op.sh [HERDCTL (default target/release/herdctl)] [ROUNDS (3)] [SECONDS (8)]
# Ports: 26300 (node), 27300 (its admin endpoint), 26379 (redis); REDIS_PORT and NODE_PORT
# move them. Installs redis-server and redis-tools with apt-get when missing (as root).
set -euo pipefail
H=$(realpath "${1:-target/release/herdctl}")
ROUNDS=${2:-3}
SECS=${3:-8}
RP=${REDIS_PORT:-26379}
NP=${NODE_PORT:-26300}
if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
  if [ "$(id -u)" != 0 ]; then
    echo "cpu_per_op.sh: redis-server is missing: run 'apt-get install -y redis-server redis-tools' as root" >&2
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server redis-tools >/dev/null
fi
OUT=$(mktemp -d)
RPID=; NPID=
cleanup() {
  [ -n "$RPID" ] && kill "$RPID" 2>/dev/null && wait "$RPID" 2>/dev/null
  [ -n "$NPID" ] && kill "$NPID" 2>/dev/null && wait "$NPID" 2>/dev/null
  rm -rf "$OUT"
}
trap cleanup EXIT
HZ=$(getconf CLK_TCK)
# utime + stime, fields 14 and 15 (neither command name holds a space); with_children adds
# cutime + cstime, fields 16 and 17 (the reaped children's).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
with_children() { awk '{print $14 + $15 + $16 + $17}' "/proc/$1/stat"; }
per_op() { awk -v t="$1" -v hz="$HZ" -v n="$2" 'BEGIN {printf "%.2f", t / hz * 1e6 / n}'; }
wait_port() {
  for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "cpu_per_op.sh: nothing listens on port $1" >&2; exit 1
}

mkdir -p "$OUT/redis" "$OUT/node"
redis-server --port "$RP" --bind 127.0.0.1 --dir "$OUT/redis" --appendonly yes \
  --appendfsync everysec --save "" --daemonize no --logfile "$OUT/redis/log" &
RPID=$!
cat > "$OUT/node/herd.yaml" <<Y
servers:
  Solo: { port: $NP }
log_dir: logs
data_dir: data
run_dir: run
logs: { rotation: never, max_file_bytes: 104857600, keep: 1 }
durability: relaxed
Y
"$H" --config "$OUT/node/herd.yaml" run Solo 2>"$OUT/node/stderr" &
NPID=$!
wait_port "$RP"; wait_port "$NP"
# The node fills its table once, so both servers run at their steady size.
"$H" --config "$OUT/node/herd.yaml" bench --target Solo --duration 2 --id-prefix c --json >/dev/null
redis-benchmark -p "$RP" -t set -d 60 -c 50 -P 32 -r 100000 -n 500000 -q >/dev/null

redis_round() {
  local n=$1 before after before_all after_all
  before=$(cpu_ticks "$RPID"); before_all=$(with_children "$RPID")
  rate=$(redis-benchmark -p "$RP" -t set -d 60 -c 50 -P 32 -r 100000 -n "$n" --csv -q \
    | awk -F'"' '/SET/ {print $4}')
  after=$(cpu_ticks "$RPID"); after_all=$(with_children "$RPID")
  redis_us=$(per_op $((after - before)) "$n")
  redis_all_us=$(per_op $((after_all - before_all)) "$n")
  redis_rate=$rate
}
node_round() {
  local before after before_all after_all json ops
  before=$(cpu_ticks "$NPID"); before_all=$(with_children "$NPID")
  json=$("$H" --config "$OUT/node/herd.yaml" bench --target Solo --duration "$SECS" \
    --connections 50 --window 32 --id-prefix c --json)
  after=$(cpu_ticks "$NPID"); after_all=$(with_children "$NPID")
  ops=$(sed 's/.*"ops":\([0-9]*\).*/\1/' <<<"$json")
  node_rate=$(sed 's/.*"ops_per_s":\([0-9.]*\).*/\1/' <<<"$json")
  node_us=$(per_op $((after - before)) "$ops")
  node_all_us=$(per_op $((after_all - before_all)) "$ops")
}

echo "load: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores"
echo "us CPU: the server process alone, then with its reaped children (Redis's AOF rewrites)"
printf '%-6s %11s %10s %10s %11s %10s %10s %7s %7s\n' round "SET/s" "us/SET" "+children" \
  "IAMAT/s" "us/IAMAT" "+children" ratio "ratio+c"
for round in $(seq 1 "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then
    node_round
    # About as many SETs as the node took IAMATs, so both runs last about as long.
    redis_round "$(awk -v r="$node_rate" -v s="$SECS" 'BEGIN {n = int(r * s); print (n < 100000 ? 100000 : n)}')"
  else
    redis_round "$(awk -v r="${node_rate:-300000}" -v s="$SECS" 'BEGIN {n = int(r * s); print (n < 100000 ? 100000 : n)}')"
    node_round
  fi
  printf '%-6s %11s %10s %10s %11s %10s %10s %7s %7s\n' "$round" "$redis_rate" "$redis_us" \
    "$redis_all_us" "$node_rate" "$node_us" "$node_all_us" \
    "$(awk -v a="$node_us" -v b="$redis_us" 'BEGIN {printf "%.2fx", a / b}')" \
    "$(awk -v a="$node_all_us" -v b="$redis_all_us" 'BEGIN {printf "%.2fx", a / b}')"
done
