#!/bin/bash
# The cost of peer acknowledgements (HERD ACK), README "Benchmarks": herdctl bench --herd with
# both forwardings, then the classic herd at 2000 IAMAT/s with --propagation Ball (ports
# 27300-27354), alternating two builds in one sitting, two rounds each.
# Usage: scripts/ack_cost.sh BEFORE_HERDCTL AFTER_HERDCTL [OUTDIR]
B=$(realpath "$1"); A=$(realpath "$2"); OUT=${3:-/tmp/ack-cost}; mkdir -p "$OUT"; cd "$OUT"
uptime | tee -a summary.txt
for round in 1 2; do
  for fw in flood tree; do
    for which in before after; do
      bin=$B; [ $which = after ] && bin=$A
      echo "== herd $fw $which round $round" | tee -a summary.txt
      HERDCTL_BENCH_NODE=$bin $A bench --herd --forwarding $fw --duration 5 --json | tee -a summary.txt
      echo | tee -a summary.txt
    done
  done
done
uptime | tee -a summary.txt
port=27300
for round in 1 2; do
  for which in before after; do
    bin=$B; [ $which = after ] && bin=$A
    d=classic-$which-$round; rm -rf $d; mkdir -p $d
    cat > $d/herd.yaml <<Y
servers:
  Alford:   { port: $port, admin_port: $((port+50)), peers: [Hamilton, Welsh] }
  Ball:     { port: $((port+1)), admin_port: $((port+51)), peers: [Holiday, Welsh] }
  Hamilton: { port: $((port+2)), admin_port: $((port+52)), peers: [Holiday] }
  Holiday:  { port: $((port+3)), admin_port: $((port+53)) }
  Welsh:    { port: $((port+4)), admin_port: $((port+54)) }
log_dir: logs
data_dir: data
run_dir: run
logs: { max_file_bytes: 104857600, keep: 2 }
Y
    echo "== classic propagation $which round $round" | tee -a summary.txt
    pids=""
    for n in Alford Ball Hamilton Holiday Welsh; do
      $bin --config $d/herd.yaml run $n 2>$d/$n.stderr >/dev/null & pids="$pids $!"
    done
    for p in 0 1 2 3 4; do
      until (exec 3<>/dev/tcp/127.0.0.1/$((port+p))) 2>/dev/null; do sleep 0.1; done
    done
    sleep 2
    (cd $d && $A --config herd.yaml bench --target Alford --duration 30 --rate 2000 --propagation Ball --json) | tee -a summary.txt
    echo | tee -a summary.txt
    kill $pids; wait $pids 2>/dev/null
    rm -rf $d/data $d/logs
    port=$((port+10))
  done
done
uptime | tee -a summary.txt
