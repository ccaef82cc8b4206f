#!/bin/bash
# The hot path's figures (README, Benchmarks: the "now" column) in one go, on ports 26000-26204.
# Usage: scripts/hot_path_figures.sh [HERDCTL (default target/release/herdctl)] [OUTDIR]
# Every result line is appended to OUTDIR/summary.txt. Needs python3.
SCRIPTS=$(cd "$(dirname "$0")" && pwd)
H=$(realpath "${1:-target/release/herdctl}"); OUT=${2:-/tmp/hot-path-figures}; rm -rf "$OUT"; mkdir -p "$OUT"; cd "$OUT"
mk() { # dir port durability
  mkdir -p $1; cat > $1/herd.yaml <<Y
servers:
  Alford: { port: $2 }
log_dir: logs
data_dir: data
run_dir: run
logs: { max_file_bytes: 104857600, keep: 2 }
durability: $3
Y
}
mk relaxed 26000 relaxed; mk strict 26100 strict
uptime | tee -a summary.txt
(cd relaxed && $H start all >/dev/null)
echo "== echo ratio 50x32" | tee -a summary.txt
for i in 1 2 3; do (cd relaxed && $H bench --target Alford --duration 8 --connections 50 --baseline-echo --json) | tee -a summary.txt; done
echo "== echo ratio 1x32" | tee -a summary.txt
for i in 1 2; do (cd relaxed && $H bench --target Alford --duration 8 --connections 1 --baseline-echo --json) | tee -a summary.txt; done
echo "== strict vs relaxed (alternating, each run on a fresh store: same table size)" | tee -a summary.txt
(cd relaxed && $H stop all >/dev/null)
for i in 1 2 3; do for d in relaxed strict; do (cd $d && rm -rf data logs && $H start all >/dev/null && echo -n "$d " && $H bench --target Alford --duration 8 --connections 50 --json; $H stop all >/dev/null) | tee -a summary.txt; done; done
(cd relaxed && rm -rf data logs && $H start all >/dev/null)
echo "== WHATSAT r=50 b=20 at 1000/s" | tee -a summary.txt
for i in 1 2 3; do (cd relaxed && $H bench --target Alford --duration 10 --rate 1000 --mix whatsat=100 --radius 50 --bound 20 --json) | tee -a summary.txt; done
echo "== IAMAT at 1000/s (floor)" | tee -a summary.txt
(cd relaxed && $H bench --target Alford --duration 8 --rate 1000 --json) | tee -a summary.txt
(cd relaxed && $H stop all >/dev/null; rm -rf data logs)
echo "== 1M fill, RSS, restart" | tee -a summary.txt
(cd relaxed && $H start all >/dev/null && python3 "$SCRIPTS/fill_clients.py" 1000000 26000 && sleep 2 && P=$(pgrep -f "$OUT/relaxed/herd.yaml run Alford") && echo "RSS KiB after fill: $(ps -o rss= -p $P)" | tee -a ../summary.txt; sleep 6; echo "RSS KiB settled: $(ps -o rss= -p $P)" | tee -a ../summary.txt; $H stop all > /dev/null; du -sh data | tee -a ../summary.txt)
for i in 1 2 3 4 5; do python3 "$SCRIPTS/restart_time.py" $H $OUT/relaxed/herd.yaml 26000 | tee -a summary.txt; done
mkdir -p classic && cat > classic/herd.yaml <<Y
servers:
  Alford:   { port: 26200, peers: [Hamilton, Welsh] }
  Ball:     { port: 26201, peers: [Holiday, Welsh] }
  Hamilton: { port: 26202, peers: [Holiday] }
  Holiday:  { port: 26203 }
  Welsh:    { port: 26204 }
log_dir: logs
data_dir: data
run_dir: run
logs: { max_file_bytes: 104857600, keep: 2 }
Y
echo "== propagation, classic herd, 2000/s, 60 s" | tee -a summary.txt
(cd classic && $H start all >/dev/null && $H bench --target Alford --duration 60 --rate 2000 --propagation Ball --json; $H stop all >/dev/null) | tee -a summary.txt
uptime | tee -a summary.txt
