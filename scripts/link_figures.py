"""Link figures for the README, against a release binary on loopback: the reply-then-ask race
(500 tries), IAMAT throughput at a node with a linked neighbour (herdctl bench), and the
memory of refilling a node that lost a 1M-client store.

    cargo build --release --locked
    python3 scripts/link_figures.py target/release/herdctl race bench refill
"""
import json, os, socket, subprocess, sys, tempfile, threading, time

BIN = sys.argv[1]
WHAT = sys.argv[2:]

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

class Herd:
    def __init__(self, extra=""):
        self.dir = tempfile.mkdtemp()
        self.ports = {"Alford": free_port(), "Ball": free_port()}
        with open(f"{self.dir}/herd.yaml", "w") as f:
            f.write(f"servers:\n  Alford: {{ port: {self.ports['Alford']}, peers: [Ball] }}\n"
                    f"  Ball: {{ port: {self.ports['Ball']} }}\n"
                    "reconnect: { initial_ms: 50, max_ms: 500 }\n" + extra)
        self.procs = {}
    def start(self, name):
        self.procs[name] = subprocess.Popen([BIN, "--config", f"{self.dir}/herd.yaml", "run", name],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.ports[name])).close(); return
            except OSError: time.sleep(0.02)
        raise SystemExit(f"{name} did not listen")
    def send(self, name, text):
        s = socket.create_connection(("127.0.0.1", self.ports[name]))
        s.sendall(text.encode()); s.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            b = s.recv(65536)
            if not b: break
            out += b
        s.close(); return out.decode()
    def status(self, name):
        r = self.send(name, "HERD STATUS\n")
        return json.loads(r.split(" ", 2)[2])
    def stop(self):
        for p in self.procs.values(): p.kill(); p.wait()

def hwm_kib(pid, key="VmHWM"):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"): return int(line.split()[1])

def wait(cond, what, limit=120):
    t = time.time()
    while not cond():
        if time.time() - t > limit: raise SystemExit(f"timeout: {what}")
        time.sleep(0.05)

def linked(h):
    wait(lambda: h.status("Alford")["links_up"] == 1 and h.status("Ball")["links_up"] == 1, "links")

if "race" in WHAT:
    h = Herd(); h.start("Alford"); h.start("Ball"); linked(h)
    lost = 0
    for i in range(500):
        h.send("Alford", f"IAMAT race{i} +1.5-2.5 {i}.5\n")
        if h.send("Ball", f"WHATSAT race{i} 1 1\n").startswith("? "): lost += 1
    print(json.dumps({"race_lost": lost, "of": 500}))
    h.stop()

if "bench" in WHAT:
    for run in range(int(os.environ.get("RUNS", "2"))):
        h = Herd(); h.start("Alford"); h.start("Ball"); linked(h)
        out = subprocess.run([BIN, "--config", f"{h.dir}/herd.yaml", "bench", "--target", "Alford",
                              "--duration", "8", "--connections", "50", "--baseline-echo", "--json"],
                             capture_output=True, text=True)
        try:
            j = json.loads(out.stdout)
            print(json.dumps({k: j.get(k) for k in ["ops_per_s", "echo_ops_per_s", "p50_us", "p99_us", "errors"]}))
        except Exception:
            print(out.stdout[-500:], out.stderr[-500:])
        h.stop()

if "refill" in WHAT:
    n = int(os.environ.get("CLIENTS", "1000000"))
    h = Herd("links: { queue: 65536 }\n"); h.start("Alford")
    s = socket.create_connection(("127.0.0.1", h.ports["Alford"]))
    def reader():
        got = 0; buf = b""
        while got < n:
            b = s.recv(1 << 20)
            if not b: break
            got += b.count(b"\n")
    t = threading.Thread(target=reader); t.start()
    chunk = []
    for i in range(n):
        chunk.append(f"IAMAT client{i} +34.068930-118.445127 1621464827.{i:09d}\n")
        if len(chunk) == 5000:
            s.sendall("".join(chunk).encode()); chunk = []
    if chunk: s.sendall("".join(chunk).encode())
    t.join(); s.close()
    alford = h.procs["Alford"].pid
    before = hwm_kib(alford, "VmRSS")
    # Reset Alford's high-water mark so the exchange's peak is visible.
    open(f"/proc/{alford}/clear_refs", "w").write("5")
    start = time.time(); h.start("Ball")
    wait(lambda: h.status("Ball")["clients"] == n, "refill", 600)
    took = time.time() - start
    ball = h.procs["Ball"].pid
    print(json.dumps({"clients": n, "refill_s": round(took, 2),
                      "alford_rss_before_kib": before, "alford_peak_kib": hwm_kib(alford),
                      "ball_peak_kib": hwm_kib(ball), "ball_rss_kib": hwm_kib(ball, "VmRSS")}))
    h.stop()
