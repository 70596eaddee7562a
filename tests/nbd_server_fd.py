#!/usr/bin/python3
"""nbd_server_fd - --nbd-server addr.type=fd: a socket passed to the daemon.

    nbd_server_fd.py snapnbd|qsd

The daemon (snapnbd from $SNAPNBD, or qemu-storage-daemon) inherits a
unix socket as fd N and is started with --nbd-server addr.type=fd,
addr.str=N; a raw image is exported on it.  Checked, for a listening
socket and for one only bound (the daemon must listen on it):
  - a client reads, through the socket's path, what the image holds, and
    what it writes there lands in the image;
  - nbd-server-stop closes the socket and removes its file (QEMU's
    socket_listen_cleanup does, for any unix socket it listened on);
  - nbd-server-start with an fd address over QMP is refused with
    "only QEMU supports file descriptor passing" (a QMP client's fd
    names come from getfd, which qemu-storage-daemon lacks too).
Then the command line's refusals: an fd that is no socket, one that is
no number, in qemu-storage-daemon 7.2's words.  Prints one line a check;
the exit status is 0 when all passed.
"""
import json
import os
import socket
import subprocess
import sys
import tempfile

import nbd

from jobs_qmp import QMP

MiB = 1 << 20


def daemon_argv(which):
    if which == "qsd":
        return ["qemu-storage-daemon"]
    return [os.environ["SNAPNBD"]]


def check(ok, what, detail=""):
    print(("ok " if ok else "FAIL ") + what + (": " + detail if detail else ""),
          flush=True)
    return ok


def serve_on_fd(which, tmp, listening):
    """Passes a unix socket as fd N, checks I/O, stop and QMP's refusal."""
    tag = "listening" if listening else "bound"
    path, qmp_path = f"{tmp}/{tag}.sock", f"{tmp}/{tag}.qmp"
    image = f"{tmp}/{tag}.img"
    with open(image, "wb") as f:
        f.truncate(4 * MiB)
        f.seek(MiB)
        f.write(b"\xa5" * 65536)
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    if listening:
        s.listen()
    fd = s.fileno()
    argv = daemon_argv(which) + [
        "--blockdev", f"driver=file,node-name=f0,filename={image}",
        "--nbd-server", f"addr.type=fd,addr.str={fd}",
        "--export", "type=nbd,id=e0,node-name=f0,name=disk,writable=on",
        "--chardev", f"socket,id=m0,path={qmp_path},server=on,wait=off",
        "--monitor", "m0"]
    p = subprocess.Popen(argv, pass_fds=(fd,), stderr=subprocess.PIPE)
    s.close()  # only the daemon holds it now: stop must close its copy
    good = True
    try:
        qmp = QMP(qmp_path)
        h = nbd.NBD()
        h.set_export_name("disk")
        h.connect_unix(path)
        good &= check(h.pread(65536, MiB) == b"\xa5" * 65536,
                      f"{which} {tag}: the image is read through fd {fd}")
        h.pwrite(b"\x3c" * 4096, 2 * MiB)
        h.flush()
        h.shutdown()
        with open(image, "rb") as f:
            f.seek(2 * MiB)
            good &= check(f.read(4096) == b"\x3c" * 4096,
                          f"{which} {tag}: a write through it is in the image")
        r = qmp.execute("nbd-server-stop")
        good &= check(r == {"return": {}}, f"{which} {tag}: nbd-server-stop",
                      json.dumps(r))
        good &= check(not os.path.exists(path),
                      f"{which} {tag}: stop closes the socket and removes "
                      "its file, as QEMU does")
        r = qmp.execute("nbd-server-start",
                        {"addr": {"type": "fd", "data": {"str": "3"}}})
        desc = r.get("error", {}).get("desc", "")
        good &= check(desc == "only QEMU supports file descriptor passing",
                      f"{which} {tag}: nbd-server-start with an fd over QMP",
                      json.dumps(r))
        r = qmp.execute("query-block-exports")
        good &= check(r == {"return": []},
                      f"{which} {tag}: the export went with the server",
                      json.dumps(r))
    finally:
        p.terminate()
        try:
            _, err = p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()  # never leave a hung daemon behind
            p.communicate()
            raise
    good &= check(p.returncode == 0 and not err,
                  f"{which} {tag}: the daemon exits 0, silent on stderr",
                  f"status {p.returncode}, {err.decode()!r}")
    return good


def refusal(which, tmp, addr, words, pass_fds=()):
    """--nbd-server with a bad fd: exit status 1 and @words."""
    argv = daemon_argv(which) + ["--nbd-server", addr]
    p = subprocess.run(argv, pass_fds=pass_fds, capture_output=True,
                       timeout=20)
    err = p.stderr.decode()
    return check(p.returncode == 1 and words in err,
                 f"{which}: {addr} refused with '{words}'",
                 f"status {p.returncode}, {err!r}")


def main(which):
    with tempfile.TemporaryDirectory() as tmp:
        good = serve_on_fd(which, tmp, listening=True)
        good &= serve_on_fd(which, tmp, listening=False)
        with open(f"{tmp}/plain", "w") as f:
            fd = f.fileno()
            good &= refusal(which, tmp, f"addr.type=fd,addr.str={fd}",
                            f"File descriptor '{fd}' is not a socket",
                            pass_fds=(fd,))
        good &= refusal(which, tmp, "addr.type=fd,addr.str=x",
                        "Unable to parse FD number x")
        good &= refusal(which, tmp, "addr.type=fd,addr.str=3x",
                        "Unable to parse FD number 3x")
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
