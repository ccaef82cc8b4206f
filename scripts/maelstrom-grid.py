#!/usr/bin/env python3
"""A Maelstrom-comparable figure for the herd (issue 22, item 5).

Maelstrom's broadcast workload on a 5x5 grid with 100 ms per message is the published yardstick
for gossip: messages per operation and "stable latency" (from the acknowledgement of a broadcast
until every node has it). This script builds the same shape out of real herdctl nodes on this
machine:

  - 25 servers n00..n44 on a 5x5 grid (40 links), on free loopback ports, in a temporary folder,
    started by `herdctl start all` (real supervisor, real node processes, real logs);
  - `herdctl link delay A B 100` on every link (each line held 100 ms, both ways);
  - 100 IAMATs per second for 20 s, each a new client id, spread over the servers in turn;
  - waits until `herdctl verify` says the herd agrees, stops the herd (which flushes the logs);
  - latency of an update: from the AT reply the client read to the last server's log line that
    received it (each server logs every line it receives, with the time it happened);
  - messages per update: updates flooded over all links (`herd_floods_sent_total` summed over
    every server's /metrics) divided by updates acknowledged.

Usage: scripts/maelstrom-grid.py [--herdctl PATH] [--forwarding flood|tree|both] [--rate 100]
       [--duration 20] [--delay-ms 100] [--json]
"""

import argparse
import datetime
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

SIDE = 5


def free_ports(n):
    """n distinct free loopback ports (held open together, so no two are the same)."""
    held = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        held.append(s)
    ports = [s.getsockname()[1] for s in held]
    for s in held:
        s.close()
    return ports


def grid():
    names = [f"n{r}{c}" for r in range(SIDE) for c in range(SIDE)]
    links = []
    for r in range(SIDE):
        for c in range(SIDE):
            if c + 1 < SIDE:
                links.append((f"n{r}{c}", f"n{r}{c + 1}"))
            if r + 1 < SIDE:
                links.append((f"n{r}{c}", f"n{r + 1}{c}"))
    return names, links


def herd_file(folder, names, links, forwarding):
    ports = free_ports(2 * len(names))
    client = dict(zip(names, ports[: len(names)]))
    admin = dict(zip(names, ports[len(names):]))
    peers = {n: [] for n in names}
    for a, b in links:
        peers[a].append(b)
        peers[b].append(a)
    lines = ["servers:"]
    for n in names:
        lines.append(
            f"  {n}: {{ port: {client[n]}, admin_port: {admin[n]}, peers: [{', '.join(peers[n])}] }}"
        )
    lines.append(f"links: {{ forwarding: {forwarding} }}")
    path = os.path.join(folder, "herd.yaml")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path, client, admin


class Herd:
    def __init__(self, herdctl, config):
        self.herdctl = herdctl
        self.config = config

    def run(self, *args, check=True):
        done = subprocess.run(
            [self.herdctl, "--config", self.config, *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and done.returncode != 0:
            sys.exit(f"herdctl {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
        return done


def wait_until(what, condition, deadline_s=90):
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > deadline_s:
            sys.exit(f"timed out after {deadline_s} s waiting for {what}")
        time.sleep(0.2)


def all_links_up(herd):
    status = herd.run("status", "--json", check=False)
    try:
        servers = json.loads(status.stdout)
    except json.JSONDecodeError:
        return False
    return all(s.get("links_up") == s.get("links_total") and s.get("state") == "running" for s in servers)


def load(client_ports, names, rate, duration_s, run_id):
    """IAMATs at `rate` per second, servers in turn; returns {client id: (server, ack time)}."""
    conns = {}
    for n in names:
        s = socket.create_connection(("127.0.0.1", client_ports[n]))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conns[n] = (s, s.makefile("rb"))
    acked = {}
    total = int(rate * duration_s)
    began = time.monotonic()
    for i in range(total):
        due = began + i / rate
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        server = names[i % len(names)]
        client = f"grid-{run_id}-{i}"
        sock, reader = conns[server]
        sock.sendall(f"IAMAT {client} +34.0689-118.4451 {time.time():.9f}\n".encode())
        reply = reader.readline().decode()
        if not reply.startswith("AT "):
            sys.exit(f"{server} answered {reply!r}")
        acked[client] = (server, time.time())
    for sock, reader in conns.values():
        reader.close()
        sock.close()
    return acked


LOG_TIME = re.compile(rb"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z ")
RECEIVED = re.compile(rb" < (?:HERD AT \S+ \S+|IAMAT) (grid-\S+) ")


def parse_time(text):
    whole, fraction = text.decode().split(".")
    moment = datetime.datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(
        tzinfo=datetime.timezone.utc
    )
    return moment.timestamp() + float("0." + fraction)


def first_receipts(log_root, names):
    """{client id: {server: first time it received the update}} from every server's logs."""
    seen = {}
    for n in names:
        folder = os.path.join(log_root, n)
        for file in sorted(os.listdir(folder)):
            with open(os.path.join(folder, file), "rb") as f:
                for line in f:
                    got = RECEIVED.search(line)
                    if not got:
                        continue
                    at = LOG_TIME.match(line)
                    if not at:
                        continue
                    t = parse_time(at.group(1))
                    per_server = seen.setdefault(got.group(1).decode(), {})
                    if n not in per_server or t < per_server[n]:
                        per_server[n] = t
    return seen


def admin_token(herd, folder):
    """The herd's admin token (derived from its secret), written 0600 by herdctl itself."""
    path = os.path.join(folder, "admin.token")
    herd.run("export", "prometheus", "--token-file", path, "--write-token")
    with open(path) as f:
        return f.read().strip()


def floods_sent(admin_ports, token):
    total = 0.0
    for port in admin_ports.values():
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {token}"}
        )
        page = urllib.request.urlopen(request, timeout=10).read().decode()
        for line in page.splitlines():
            if line.startswith("herd_floods_sent_total{"):
                total += float(line.rsplit(" ", 1)[1])
    return total


def one_run(herdctl, forwarding, rate, duration_s, delay_ms):
    names, links = grid()
    with tempfile.TemporaryDirectory(prefix="herd-grid-") as folder:
        config, client_ports, admin_ports = herd_file(folder, names, links, forwarding)
        herd = Herd(herdctl, config)
        herd.run("start", "all")
        try:
            wait_until("every link to come up", lambda: all_links_up(herd))
            for a, b in links:
                herd.run("link", "delay", a, b, str(delay_ms))
            token = admin_token(herd, folder)
            floods_before = floods_sent(admin_ports, token)
            acked = load(client_ports, names, rate, duration_s, os.getpid())
            settled = time.monotonic()
            wait_until(
                "the herd to agree",
                lambda: herd.run("verify", check=False).returncode == 0,
                deadline_s=120,
            )
            converge_s = time.monotonic() - settled
            floods = floods_sent(admin_ports, token) - floods_before
        finally:
            herd.run("stop", "all", check=False)
        seen = first_receipts(os.path.join(folder, "logs"), names)
    latencies = []
    incomplete = 0
    for client, (_, ack) in acked.items():
        per_server = seen.get(client, {})
        if len(per_server) < len(names):
            incomplete += 1
            continue
        latencies.append(max(per_server.values()) - ack)
    if not latencies:
        sys.exit("no update was found in every server's log")
    latencies.sort()
    return {
        "forwarding": forwarding,
        "servers": len(names),
        "links": len(links),
        "delay_ms": delay_ms,
        "updates": len(acked),
        "messages_per_update": round(floods / len(acked), 2),
        "latency_median_ms": round(statistics.median(latencies) * 1000, 1),
        "latency_p99_ms": round(latencies[int(0.99 * (len(latencies) - 1))] * 1000, 1),
        "latency_max_ms": round(latencies[-1] * 1000, 1),
        "not_in_every_log": incomplete,
        "converge_after_load_s": round(converge_s, 2),
    }


def main():
    default = "target/release/herdctl" if os.path.exists("target/release/herdctl") else "target/debug/herdctl"
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--herdctl", default=default)
    p.add_argument("--forwarding", choices=["flood", "tree", "both"], default="both")
    p.add_argument("--rate", type=float, default=100)
    p.add_argument("--duration", type=float, default=20)
    p.add_argument("--delay-ms", type=int, default=100)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    herdctl = os.path.abspath(args.herdctl)
    if not os.access(herdctl, os.X_OK):
        sys.exit(f"no herdctl at {herdctl}: build it (cargo build --release) or pass --herdctl PATH")
    modes = ["flood", "tree"] if args.forwarding == "both" else [args.forwarding]
    results = [one_run(herdctl, m, args.rate, args.duration, args.delay_ms) for m in modes]
    if args.json:
        print(json.dumps(results, indent=1))
        return
    print(f"5x5 grid, {args.delay_ms} ms per link, {args.rate:g} updates/s for {args.duration:g} s")
    print(f"{'':22} {'msgs/update':>12} {'median ms':>10} {'p99 ms':>8} {'max ms':>8}")
    for r in results:
        print(
            f"herd {r['forwarding']:<17} {r['messages_per_update']:>12} {r['latency_median_ms']:>10}"
            f" {r['latency_p99_ms']:>8} {r['latency_max_ms']:>8}"
        )
    print(f"{'maelstrom flood':<22} {'~55':>12} {'452':>10} {'':>8} {'791':>8}")
    print(f"{'maelstrom tree4':<22} {'~24':>12} {'386':>10} {'':>8} {'505':>8}")
    for r in results:
        if r["not_in_every_log"]:
            print(f"note: {r['forwarding']}: {r['not_in_every_log']} updates missing from some log (log lines dropped?)")


if __name__ == "__main__":
    main()
