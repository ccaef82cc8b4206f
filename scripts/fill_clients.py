"""Fills a node with N distinct clients (IAMAT client-0000000 ...), four pipelined connections.
Usage: fill_clients.py N PORT"""
import socket, sys, threading
N=int(sys.argv[1]); port=int(sys.argv[2])
def worker(lo,hi):
    s=socket.create_connection(("127.0.0.1",port))
    f=s.makefile("rb")
    B=2000
    for start in range(lo,hi,B):
        end=min(hi,start+B)
        s.sendall("".join("IAMAT client-%07d +34.068930-118.445127 1621464827.959498503\n"%i for i in range(start,end)).encode())
        for _ in range(end-start): f.readline()
    s.close()
T=4; step=N//T
ts=[threading.Thread(target=worker,args=(i*step,(i+1)*step if i<T-1 else N)) for i in range(T)]
[t.start() for t in ts]; [t.join() for t in ts]
