#!/usr/bin/env python3
"""A small QMP client for the shell tests (python3 stdlib only).

    qmp.py [options] SOCKET [MESSAGE | --wait-event NAME | --sleep S]...

Connects to the QMP unix socket, reads the greeting and (unless --raw)
negotiates capabilities; then, in order, sends each MESSAGE (one JSON
command, sent as given) and prints the reply, one JSON value a line, as
the server wrote it.  Events that arrive meanwhile are printed too, when
they arrive.  "--wait-event NAME" waits until an event NAME is printed
(it may already have been) and fails after --timeout seconds.

Options (before SOCKET):
  --raw        send MESSAGEs as raw bytes, with no capabilities negotiation
               and no waiting for a reply per message; then print every
               line that arrives until the server is quiet for --quiet s
  --greeting   print the greeting line
  --timeout S  how long to wait for a reply or an event (default 30)
  --quiet S    with --raw: silence that ends the run (default 0.5)

The exit status is 0, or 1 when the connection broke or a wait timed out.
A reply that is an error is printed like any other: tests grep for it.
"""

import json
import socket
import sys
import time


class Client:
    def __init__(self, path, timeout):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.timeout = timeout
        self.buf = b""
        self.events = []

    def read_line(self, timeout):
        """The next line, or None when nothing came in time."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                return None
            if not data:
                raise EOFError("the server closed the connection")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r").decode("utf-8", "replace")

    def show(self, line):
        print(line, flush=True)
        try:
            msg = json.loads(line)
        except ValueError:
            return None
        if isinstance(msg, dict) and "event" in msg:
            self.events.append(msg["event"])
            return None
        return msg

    def command(self, text):
        self.sock.sendall(text.encode() + b"\n")
        while True:
            line = self.read_line(self.timeout)
            if line is None:
                raise TimeoutError("no reply to " + text)
            if self.show(line) is not None:
                return

    def wait_event(self, name):
        deadline = time.monotonic() + self.timeout
        while name not in self.events:
            line = self.read_line(deadline - time.monotonic())
            if line is None:
                raise TimeoutError("no event " + name)
            self.show(line)
        self.events.remove(name)

    def drain(self, quiet):
        while True:
            line = self.read_line(quiet)
            if line is None:
                return
            self.show(line)


def main(argv):
    opts = {"raw": False, "greeting": False, "timeout": 30.0, "quiet": 0.5}
    while argv and argv[0].startswith("--"):
        opt = argv.pop(0)[2:]
        if opt in ("raw", "greeting"):
            opts[opt] = True
        else:
            opts[opt] = float(argv.pop(0))
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    c = Client(argv.pop(0), opts["timeout"])
    greeting = c.read_line(opts["timeout"])
    if greeting is None:
        raise TimeoutError("no greeting")
    if opts["greeting"]:
        print(greeting, flush=True)
    if opts["raw"]:
        for msg in argv:
            c.sock.sendall(msg.encode("utf-8", "surrogateescape") + b"\n")
        c.drain(opts["quiet"])
        return 0
    c.sock.sendall(b'{"execute": "qmp_capabilities"}\n')
    if c.read_line(opts["timeout"]) is None:
        raise TimeoutError("no reply to qmp_capabilities")
    while argv:
        arg = argv.pop(0)
        if arg == "--wait-event":
            c.wait_event(argv.pop(0))
        elif arg == "--sleep":
            time.sleep(float(argv.pop(0)))
        else:
            c.command(arg)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except (EOFError, TimeoutError, OSError) as e:
        print("qmp.py: %s" % e, file=sys.stderr)
        sys.exit(1)
