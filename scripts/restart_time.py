"""Starts `herdctl run Alford` over its existing store and prints how long until its port
answers HERD STATUS, with how many clients, and its RSS a second later.
Usage: restart_time.py HERDCTL CONFIG PORT"""
import socket, subprocess, time, sys, json
H, config, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
t0 = time.time()
p = subprocess.Popen([H, "--config", config, "run", "Alford"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
while True:
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=1); break
    except OSError: time.sleep(0.002)
t1 = time.time()
s.sendall(b"HERD STATUS\n"); data = b""
while b"\n" not in data: data += s.recv(65536)
fig = json.loads(data.decode().split(" ", 2)[2])
time.sleep(1)
rss = int(open(f"/proc/{p.pid}/status").read().split("VmRSS:")[1].split()[0])
print("restart: answering after %.3f s with %d clients; RSS %d KiB (%.0f B/client) 1 s later" % (t1 - t0, fig["clients"], rss, rss * 1024 / max(fig["clients"], 1)))
p.terminate(); p.wait()
