"""Two libnbd clients writing a live export named "live" while a test
changes the graph under them (mirror_live.py, snapshot_live.py)."""
import threading
import time

import nbd
from jobs_qmp import Writer


def uri(sock):
    return f"nbd+unix:///live?socket={sock}"


def start(sock, size, seed, model):
    ws = [Writer(nbd, uri(sock), i * size // 2, (i + 1) * size // 2,
                 seed + i, model[i * size // 2:(i + 1) * size // 2])
          for i in range(2)]
    ts = [threading.Thread(target=w.run) for w in ws]
    for t in ts:
        t.start()
    return ws, ts


def stop(ws, ts):
    for w in ws:
        w.stopped = True
    for t in ts:
        t.join()
    return b"".join(bytes(w.model) for w in ws)


def settle(ws, n=100):
    base = sum(w.writes for w in ws)
    while sum(w.writes for w in ws) < base + n:
        time.sleep(0.01)


def read_all(sock, size):
    h = nbd.NBD()
    h.connect_uri(uri(sock))
    data = h.pread(size, 0)
    h.shutdown()
    return data
