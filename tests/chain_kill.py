"""Sets up one commit or stream job for test-chain-kill.sh, which then
kills the server with SIGKILL while the job copies.
Usage: chain_kill.py QMP NBDSOCK DIR SEED KIND

KIND: commit (intermediate), active (active commit, ready), stream.
The writers write first, then everything is flushed and the disk saved
as DIR/model.raw: whatever the kill interrupts, the chain must read
exactly that afterwards."""
import sys

import nbd
from chain_live import SIZE, add_chain, export, make_chain, save
from jobs_qmp import QMP
from live_writers import read_all, settle, start, stop, uri

MiB = 1 << 20


def flush(sock):
    h = nbd.NBD()
    h.connect_uri(uri(sock))
    h.flush()
    h.shutdown()


def main(qmp, sock, d, seed, kind):
    q = QMP(qmp)
    paths = make_chain(d, "k", 3, seed)
    add_chain(q, "k", paths)
    export(q, "k-2")
    model = read_all(sock, SIZE)
    ws, ts = start(sock, SIZE, seed + 1, model)
    settle(ws, 300)
    model = stop(ws, ts)
    flush(sock)
    save(f"{d}/model.raw", model)
    if kind == "commit":
        q.cmd("block-commit", {"job-id": "j", "device": "k-2",
                               "top-node": "k-1", "base-node": "k-0",
                               "speed": 2 * MiB})
    elif kind == "active":
        q.cmd("block-commit", {"job-id": "j", "device": "k-2"})
        q.wait_event("BLOCK_JOB_READY", device="j")
    else:
        q.cmd("block-stream", {"job-id": "j", "device": "k-2",
                               "speed": 2 * MiB})
    # Copying: some progress made, far from the end.
    while True:
        jobs = q.cmd("query-jobs")
        if kind == "active" or (jobs and jobs[0]["current-progress"] > 0):
            break
    print("kill now", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]),
         sys.argv[5])
