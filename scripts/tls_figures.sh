#!/bin/bash
# The cost of TLS links: two Alford-Ball herds side by side, one plain, one with links.tls,
# loaded in turn in the same run (closed loop, then 2000 IAMAT/s open loop, propagation to
# Ball). Ports 23100-23203 on loopback.
# usage: scripts/tls_figures.sh BIN [ROUNDS] [SECONDS]
set -u
BIN=$(realpath "$1"); ROUNDS=${2:-2}; DUR=${3:-5}
work=$(mktemp -d); cd "$work" 
setup() { # dir port0 tls?
  rm -rf $1; mkdir -p $1
  cat > $1/herd.yaml <<Y
servers:
  Alford: { port: $2, admin_port: $(($2+2)), peers: [Ball] }
  Ball: { port: $(($2+1)), admin_port: $(($2+3)) }
Y
  if [ "$3" = tls ]; then
    echo 'links: { tls: { ca: certs/ca.pem, cert: "certs/{name}.pem", key: "certs/{name}.key" } }' >> $1/herd.yaml
    $BIN --config $1/herd.yaml certs init >/dev/null
  fi
}
setup plain 23100 plain; setup tls 23200 tls
for d in plain tls; do
  $BIN --config $d/herd.yaml run Alford 2>$d/a.err & echo $! >> pids
  $BIN --config $d/herd.yaml run Ball 2>$d/b.err & echo $! >> pids
done
for d in plain tls; do for i in $(seq 1 100); do $BIN --config $d/herd.yaml send Ball 'HERD STATUS' >/dev/null 2>&1 && $BIN --config $d/herd.yaml send Alford 'HERD STATUS' >/dev/null 2>&1 && break; sleep 0.3; done; done
sleep 1
for r in $(seq 1 $ROUNDS); do
  for d in plain tls; do
    $BIN --config $d/herd.yaml bench --target Alford --duration $DUR --connections 20 --mix iamat=100 --propagation Ball --json > $d.$r.json 2>$d.$r.err
    python3 -c "import json,sys; j=json.load(open('$d.$r.json')); print('$d', $r, round(j.get('ops_per_s',0)), j.get('propagation_p50_us'), j.get('propagation_p99_us'), j.get('p99_us'))"
  done
done
# open loop: 2000/s, propagation p99
for r in $(seq 1 $ROUNDS); do
  for d in plain tls; do
    $BIN --config $d/herd.yaml bench --target Alford --duration $DUR --rate 2000 --mix iamat=100 --propagation Ball --json > $d.o$r.json 2>$d.o$r.err
    python3 -c "import json,sys; j=json.load(open('$d.o$r.json')); print('open2000 $d', $r, round(j.get('ops_per_s',0)), j.get('propagation_p50_us'), j.get('propagation_p99_us'), j.get('p99_us'))"
  done
done
kill $(cat pids); cd /; rm -rf "$work"
