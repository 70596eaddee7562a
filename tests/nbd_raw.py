"""nbd_raw - a small hand-rolled NBD client for protocol conformance tests.

Unlike libnbd, this client sends exactly the bytes it is told to, malformed
ones included, and hands back what the server answered as plain tuples, so a
test can assert on the wire.  Standard library only.

    c = Client(sock_path)
    c.handshake()                        # greeting and client flags
    c.structured_reply()                 # NBD_OPT_STRUCTURED_REPLY
    c.go("")                             # NBD_OPT_GO: now in transmission
    cookie = c.request(CMD_READ, offset=0, length=4096)
    r = c.reply()                        # one simple reply or one chunk
    chunks = c.reply_all(cookie)         # every chunk up to DONE
"""
import os
import socket
import struct
import sys
import traceback

# Magic numbers.
NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REP_MAGIC = 0x0003E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
STRUCTURED_REPLY_MAGIC = 0x668E33EF

# Handshake and client flags.
FLAG_FIXED_NEWSTYLE = 1 << 0
FLAG_NO_ZEROES = 1 << 1

# Transmission flags.
FLAG_HAS_FLAGS = 1 << 0
FLAG_READ_ONLY = 1 << 1
FLAG_SEND_FLUSH = 1 << 2
FLAG_SEND_FUA = 1 << 3
FLAG_SEND_TRIM = 1 << 5
FLAG_SEND_WRITE_ZEROES = 1 << 6
FLAG_SEND_DF = 1 << 7
FLAG_SEND_CACHE = 1 << 10
FLAG_SEND_FAST_ZERO = 1 << 11

# Options.
OPT_EXPORT_NAME = 1
OPT_ABORT = 2
OPT_LIST = 3
OPT_STARTTLS = 5
OPT_INFO = 6
OPT_GO = 7
OPT_STRUCTURED_REPLY = 8
OPT_LIST_META_CONTEXT = 9
OPT_SET_META_CONTEXT = 10

# Option reply types.
REP_ACK = 1
REP_SERVER = 2
REP_INFO = 3
REP_META_CONTEXT = 4
REP_FLAG_ERROR = 1 << 31
REP_ERR_UNSUP = REP_FLAG_ERROR | 1
REP_ERR_POLICY = REP_FLAG_ERROR | 2
REP_ERR_INVALID = REP_FLAG_ERROR | 3
REP_ERR_PLATFORM = REP_FLAG_ERROR | 4
REP_ERR_TLS_REQD = REP_FLAG_ERROR | 5
REP_ERR_UNKNOWN = REP_FLAG_ERROR | 6
REP_ERR_SHUTDOWN = REP_FLAG_ERROR | 7
REP_ERR_BLOCK_SIZE_REQD = REP_FLAG_ERROR | 8
REP_ERR_TOO_BIG = REP_FLAG_ERROR | 9

# Info types.
INFO_EXPORT = 0
INFO_NAME = 1
INFO_DESCRIPTION = 2
INFO_BLOCK_SIZE = 3

# Commands and command flags.
CMD_READ = 0
CMD_WRITE = 1
CMD_DISC = 2
CMD_FLUSH = 3
CMD_TRIM = 4
CMD_CACHE = 5
CMD_WRITE_ZEROES = 6
CMD_BLOCK_STATUS = 7

CMD_FLAG_FUA = 1 << 0
CMD_FLAG_NO_HOLE = 1 << 1
CMD_FLAG_DF = 1 << 2
CMD_FLAG_REQ_ONE = 1 << 3
CMD_FLAG_FAST_ZERO = 1 << 4

# Structured reply chunks.
REPLY_FLAG_DONE = 1 << 0
REPLY_TYPE_NONE = 0
REPLY_TYPE_OFFSET_DATA = 1
REPLY_TYPE_OFFSET_HOLE = 2
REPLY_TYPE_BLOCK_STATUS = 5
REPLY_TYPE_ERROR = (1 << 15) + 1
REPLY_TYPE_ERROR_OFFSET = (1 << 15) + 2

STATE_HOLE = 1
STATE_ZERO = 2

# Wire errors.
EPERM = 1
EIO = 5
ENOMEM = 12
EINVAL = 22
ENOSPC = 28
EOVERFLOW = 75
ENOTSUP = 95
ESHUTDOWN = 108


class Closed(Exception):
    """The server closed the connection."""


class Reply:
    """One message of the transmission phase.

    simple: True for a simple reply, False for a structured chunk.
    error:  the error of a simple reply, or of an error chunk (else 0).
    flags, type: those of a chunk (0 for a simple reply).
    payload: a chunk's payload, or a successful simple READ reply's data.
    """

    def __init__(self, simple, cookie, error=0, flags=0, type=0, payload=b""):
        self.simple = simple
        self.cookie = cookie
        self.error = error
        self.flags = flags
        self.type = type
        self.payload = payload

    @property
    def done(self):
        return self.simple or bool(self.flags & REPLY_FLAG_DONE)

    def offset_data(self):
        """(offset, data) of an OFFSET_DATA chunk."""
        assert self.type == REPLY_TYPE_OFFSET_DATA, self
        return struct.unpack(">Q", self.payload[:8])[0], self.payload[8:]

    def offset_hole(self):
        """(offset, length) of an OFFSET_HOLE chunk."""
        assert self.type == REPLY_TYPE_OFFSET_HOLE, self
        assert len(self.payload) == 12, self
        return struct.unpack(">QI", self.payload)

    def block_status(self):
        """(context id, [(length, flags), ...]) of a BLOCK_STATUS chunk."""
        assert self.type == REPLY_TYPE_BLOCK_STATUS, self
        assert len(self.payload) >= 4 and len(self.payload) % 8 == 4, self
        ctx = struct.unpack(">I", self.payload[:4])[0]
        ext = [struct.unpack(">II", self.payload[i:i + 8])
               for i in range(4, len(self.payload), 8)]
        return ctx, ext

    def __repr__(self):
        if self.simple:
            return "Reply(simple, cookie=%#x, error=%d, %d bytes)" % (
                self.cookie, self.error, len(self.payload))
        return "Reply(chunk, cookie=%#x, flags=%#x, type=%#x, error=%d, " \
            "%d bytes)" % (self.cookie, self.flags, self.type, self.error,
                           len(self.payload))


class Client:
    def __init__(self, path, timeout=10):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.gflags = None       # handshake flags from the greeting
        self.cflags = None       # client flags sent
        self.size = None         # export size, once an export is chosen
        self.eflags = None       # transmission flags
        self.structured = False  # NBD_OPT_STRUCTURED_REPLY acknowledged
        self.pending = {}        # cookie -> (type, length) of requests
        self._cookie = 0x1001    # odd cookies catch a server that rewrites
        self.unexpected = b""    # what is_closed() got instead of EOF

    # --- raw bytes ------------------------------------------------------

    def send(self, data):
        self.sock.sendall(data)

    def try_send(self, data):
        """send, but False instead of an exception if the server is gone."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def recv(self, n):
        """Exactly n bytes; Closed if the server hangs up first."""
        buf = bytearray()
        while len(buf) < n:
            try:
                b = self.sock.recv(min(n - len(buf), 1 << 20))
            except ConnectionResetError:
                b = b""
            if not b:
                raise Closed("closed after %d of %d bytes" % (len(buf), n))
            buf += b
        return bytes(buf)

    def is_closed(self, timeout=5):
        """True if the server closes the connection (EOF, or a reset)
        within timeout seconds; False if it sends data instead (kept in
        self.unexpected) or stays silent."""
        old = self.sock.gettimeout()
        self.sock.settimeout(timeout)
        self.unexpected = b""
        try:
            b = self.sock.recv(4096)
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False
        finally:
            self.sock.settimeout(old)
        self.unexpected = b
        return not b

    def close(self):
        self.sock.close()

    # --- handshake ------------------------------------------------------

    def greeting(self):
        magic, ihaveopt, self.gflags = struct.unpack(">QQH", self.recv(18))
        assert magic == NBDMAGIC, hex(magic)
        assert ihaveopt == IHAVEOPT, hex(ihaveopt)
        return self.gflags

    def handshake(self, cflags=FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES):
        """Reads the greeting and sends the client flags."""
        self.greeting()
        self.cflags = cflags
        self.send(struct.pack(">I", cflags))
        return self.gflags

    def send_option(self, opt, data=b"", length=None):
        """An option header and data; length overrides the true length."""
        if length is None:
            length = len(data)
        self.send(struct.pack(">QII", IHAVEOPT, opt, length) + data)

    def option_reply(self):
        """One option reply: (option, reply type, data)."""
        magic, opt, rtype, length = struct.unpack(">QIII", self.recv(20))
        assert magic == REP_MAGIC, hex(magic)
        return opt, rtype, self.recv(length)

    def option(self, opt, data=b"", length=None):
        """Sends an option and reads replies up to the final one (an ACK or
        an error).  Returns [(reply type, data), ...]; every reply must
        echo the option."""
        self.send_option(opt, data, length)
        replies = []
        while True:
            ropt, rtype, rdata = self.option_reply()
            assert ropt == opt, "reply to option %d echoes %d" % (opt, ropt)
            replies.append((rtype, rdata))
            if rtype == REP_ACK or rtype & REP_FLAG_ERROR:
                return replies

    def structured_reply(self):
        r = self.option(OPT_STRUCTURED_REPLY)
        assert r == [(REP_ACK, b"")], r
        self.structured = True

    @staticmethod
    def info_payload(name, infos=(), name_len=None, ninfos=None):
        """The payload of NBD_OPT_INFO/GO; name_len and ninfos may lie."""
        name = name.encode() if isinstance(name, str) else name
        if name_len is None:
            name_len = len(name)
        if ninfos is None:
            ninfos = len(infos)
        return (struct.pack(">I", name_len) + name + struct.pack(">H", ninfos)
                + b"".join(struct.pack(">H", i) for i in infos))

    def info(self, name="", infos=(), opt=OPT_INFO):
        """NBD_OPT_INFO (or GO): the list of replies, with INFO replies
        decoded to (REP_INFO, info type, info data)."""
        out = []
        for rtype, data in self.option(opt, self.info_payload(name, infos)):
            if rtype == REP_INFO:
                out.append((rtype, struct.unpack(">H", data[:2])[0], data[2:]))
            else:
                out.append((rtype, data))
        return out

    def go(self, name="", infos=()):
        """NBD_OPT_GO that must succeed; enters transmission."""
        replies = self.info(name, infos, OPT_GO)
        assert replies[-1][0] == REP_ACK, replies
        for r in replies:
            if r[0] == REP_INFO and r[1] == INFO_EXPORT:
                self.size, self.eflags = struct.unpack(">QH", r[2])
        assert self.size is not None, "no NBD_INFO_EXPORT before the ACK"
        return replies

    def export_name(self, name=""):
        """NBD_OPT_EXPORT_NAME; returns the 124 zero bytes (b"" when
        NO_ZEROES was negotiated) so a test can check them."""
        self.send_option(OPT_EXPORT_NAME, name.encode())
        self.size, self.eflags = struct.unpack(">QH", self.recv(10))
        if self.cflags & FLAG_NO_ZEROES:
            return b""
        return self.recv(124)

    @staticmethod
    def meta_payload(name, queries, name_len=None):
        name = name.encode()
        if name_len is None:
            name_len = len(name)
        out = struct.pack(">I", name_len) + name + struct.pack(">I",
                                                                len(queries))
        for q in queries:
            q = q.encode()
            out += struct.pack(">I", len(q)) + q
        return out

    def meta_context(self, opt, name, queries):
        """LIST/SET_META_CONTEXT: replies with META_CONTEXT decoded to
        (REP_META_CONTEXT, id, name)."""
        out = []
        for rtype, data in self.option(opt, self.meta_payload(name, queries)):
            if rtype == REP_META_CONTEXT:
                out.append((rtype, struct.unpack(">I", data[:4])[0],
                            data[4:].decode()))
            else:
                out.append((rtype, data))
        return out

    # --- transmission ---------------------------------------------------

    def request(self, type, flags=0, offset=0, length=None, cookie=None,
                payload=b"", send_payload=None):
        """Sends a request and returns its cookie.  length defaults to the
        payload's; send_payload=False sends the header alone."""
        if cookie is None:
            cookie = self._cookie
            self._cookie += 2
        if length is None:
            length = len(payload)
        self.pending[cookie] = (type, length)
        msg = struct.pack(">IHHQQI", REQUEST_MAGIC, flags, type, cookie,
                          offset, length)
        self.send(msg + (payload if send_payload is not False else b""))
        return cookie

    def reply(self):
        """The next reply message: a simple reply (with its data for a
        successful READ without structured replies) or one chunk."""
        magic = struct.unpack(">I", self.recv(4))[0]
        if magic == SIMPLE_REPLY_MAGIC:
            error, cookie = struct.unpack(">IQ", self.recv(12))
            data = b""
            type, length = self.pending.get(cookie, (None, 0))
            if error == 0 and type == CMD_READ and not self.structured:
                data = self.recv(length)
            return Reply(True, cookie, error=error, payload=data)
        assert magic == STRUCTURED_REPLY_MAGIC, "bad reply magic %#x" % magic
        flags, type, cookie, length = struct.unpack(">HHQI", self.recv(16))
        r = Reply(False, cookie, flags=flags, type=type,
                  payload=self.recv(length))
        if type & 0x8000:
            assert length >= 6, r
            r.error, mlen = struct.unpack(">IH", r.payload[:6])
            assert r.error != 0, r
            assert mlen <= length - 6, r
        return r

    def reply_all(self, cookie=None):
        """Every message of one reply (simple, or chunks up to DONE).  With
        cookie, the reply must be to that request."""
        out = []
        while True:
            r = self.reply()
            if cookie is not None:
                assert r.cookie == cookie, "cookie %#x, expected %#x" % (
                    r.cookie, cookie)
            out.append(r)
            if r.done:
                self.pending.pop(r.cookie, None)
                return out

    def cmd(self, type, **kw):
        """One request, answered alone: the error (0 on success)."""
        cookie = self.request(type, **kw)
        replies = self.reply_all(cookie)
        errors = [r.error for r in replies if r.error]
        return errors[0] if errors else 0

    def read(self, offset, length, flags=0):
        """A READ that must succeed: the data, reassembled from chunks."""
        cookie = self.request(CMD_READ, flags=flags, offset=offset,
                              length=length)
        return assemble_read(self.reply_all(cookie), offset, length)

    def write(self, offset, data, flags=0):
        return self.cmd(CMD_WRITE, flags=flags, offset=offset, payload=data)

    def disconnect(self):
        self.request(CMD_DISC)
        self.close()


def assemble_read(replies, offset, length):
    """Checks that the replies to a READ cover [offset, offset+length)
    exactly once with no error, and returns the data."""
    if len(replies) == 1 and replies[0].simple:
        assert replies[0].error == 0, replies
        return replies[0].payload
    buf = bytearray(length)
    seen = bytearray(length)
    for i, r in enumerate(replies):
        assert not r.simple, "simple reply inside a structured reply"
        assert r.error == 0, replies
        assert bool(r.flags & REPLY_FLAG_DONE) == (i == len(replies) - 1), \
            "DONE not on the last chunk only: %r" % replies
        if r.type == REPLY_TYPE_OFFSET_DATA:
            off, data = r.offset_data()
            n = len(data)
        elif r.type == REPLY_TYPE_OFFSET_HOLE:
            off, n = r.offset_hole()
            data = bytes(n)
        elif r.type == REPLY_TYPE_NONE:
            assert r.flags & REPLY_FLAG_DONE and not r.payload, r
            continue
        else:
            raise AssertionError("unexpected chunk %r" % r)
        assert n > 0, "empty content chunk %r" % r
        assert offset <= off and off + n <= offset + length, \
            "chunk %d+%d outside the request %d+%d" % (off, n, offset, length)
        s = off - offset
        assert not any(seen[s:s + n]), "chunks overlap at %d" % off
        seen[s:s + n] = b"\1" * n
        buf[s:s + n] = data
    assert all(seen), "chunks do not cover the whole request"
    return bytes(buf)


def connect(path, name="", structured=False, meta=None, timeout=10):
    """A client in transmission on export name: with structured replies
    if asked, and with the meta contexts in meta (a list) set."""
    c = Client(path, timeout)
    c.handshake()
    if structured or meta:
        c.structured_reply()
    if meta:
        r = c.meta_context(OPT_SET_META_CONTEXT, name, meta)
        assert r[-1][0] == REP_ACK, r
    c.go(name)
    return c


def run_checks(*checks):
    """Runs every check (a function), even after one fails, so that one
    run reports every broken rule; exits 1 if any failed."""
    failed = []
    for check in checks:
        try:
            check()
            print("ok   %s" % check.__name__)
        except Exception:
            traceback.print_exc()
            print("FAIL %s" % check.__name__)
            failed.append(check.__name__)
    if failed:
        print("failed checks: %s" % " ".join(failed))
        sys.exit(1)


def rss_kib(pid):
    """The resident set size of a process, in KiB."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for %d" % pid)


def server_pid(pidfile):
    with open(pidfile) as f:
        pid = int(f.read())
    os.kill(pid, 0)  # alive
    return pid
