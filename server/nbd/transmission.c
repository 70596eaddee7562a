/*
 * transmission.c - the transmission phase of one connection.
 *
 * Design notes.
 *
 * A connection has NBD_WORKERS_PER_CONN worker threads, all running
 * worker_loop().  A worker takes read_lock, reads one request header and its
 * payload, releases read_lock, then validates and executes the request with
 * blocking calls into the block layer and sends the reply under write_lock.
 * So up to NBD_WORKERS_PER_CONN requests of one client are in service at
 * once and replies go out in completion order, with no hand-off between
 * threads on the way (the reply leaves from the thread that read the
 * request).
 *
 * A worker that reads EOF, a bad magic, or NBD_CMD_DISC sets c->dead; the
 * others finish what they hold, answer it, see dead, and leave.  A failed
 * send also shuts the socket down so that the reader wakes up.
 *
 * One validator (validate_request) checks every request; one function
 * (errno_to_nbd) maps errno values to wire errors.
 */
#include "connection.h"
#include "server/trace.h"
#include "block/nocancel.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

/* Reads of at least this size are answered sparsely (holes as
 * OFFSET_HOLE chunks); smaller ones are not worth a block-status call. */
#define SPARSE_READ_MIN (64 * 1024)
/* WRITE payloads above the maximum are drained up to this, then we hang up. */
#define MAX_DRAIN_LEN (64 * 1024 * 1024)
#define MAX_EXTENTS (256 * 1024)
/* Plain sockets: bytes received at once, so that one recv brings a write's
 * header with its payload, or several requests at queue depth > 1. */
#define RBUF_SIZE (256 * 1024)
/* Replies of requests served inline are gathered up to this much, then
 * sent with one send (see worker_loop). */
#define CORK_SIZE (128 * 1024)
/* ... or up to this many bodiless replies (16 bytes each: write
 * acknowledgements): held until rbuf ran dry, the client waited for the
 * whole batch and then sent its next requests while we waited for them,
 * each side idle half the time.  Sent every few, the client works on
 * them meanwhile: 4k writes at QD32 158k -> 180k IOPS (median of 7
 * interleaved runs, idle machine; reads, whose replies fill the cork by
 * size, are unchanged). */
#define CORK_ACKS 8
/* Reads of at least this size go from the page cache to the socket
 * through the worker's pipe, never copied by the server (see
 * piped_reply); smaller ones are cheaper to copy into the cork. */
#define PIPED_READ_MIN (64 * 1024)
/* The pipe's capacity asked for: what one piped chunk can carry. */
#define PIPE_SIZE (1024 * 1024)
#define PIPE_PAGE 4096

typedef struct Request {
    uint16_t flags;
    uint16_t type;
    uint64_t cookie;
    uint64_t offset;
    uint32_t len;
    int payload_error; /* NBD error found while reading the payload */
    const void *payload; /* a WRITE's data: in the worker's buffer, or in
                          * conn->rbuf while its reader serves it inline */
} Request;

typedef struct __attribute__((packed)) SimpleReplyHeader {
    uint32_t magic;
    uint32_t error;
    uint64_t cookie;
} SimpleReplyHeader;

typedef struct __attribute__((packed)) ChunkHeader {
    uint32_t magic;
    uint16_t flags;
    uint16_t type;
    uint64_t cookie;
    uint32_t len;
} ChunkHeader;

typedef struct Worker {
    NbdConn *conn;
    bool reader;        /* holds conn->read_lock: the reader role */
    bool cork;          /* serving inline: replies are gathered in out */
    char *out;          /* CORK_SIZE bytes, allocated on first use */
    size_t out_len;
    unsigned inline_served; /* requests served inline, for sampling */
    unsigned corked_acks; /* bodiless replies gathered since the flush */
    BlockNode *node;    /* the export's node for the request, referenced:
                         * a graph change may move the export meanwhile */
    void *buf;          /* payload and read buffer, grown as needed */
    size_t buf_size;
    int pipe_rd, pipe_wr; /* the worker's pipe for piped_reply */
    int pipe_size;      /* its capacity; 0: not made yet, < 0: cannot be */
    bool timed;         /* the request in service is timed */
    gint64 send_start;  /* when it began a send that may wait (µs) */
    gint64 send_wait;   /* how long its sends that may wait took (µs) */
} Worker;

static const char *cmd_name(uint16_t type)
{
    static const char *const names[] = {
        "READ", "WRITE", "DISC", "FLUSH", "TRIM", "CACHE", "WRITE_ZEROES",
        "BLOCK_STATUS",
    };
    return type < G_N_ELEMENTS(names) ? names[type] : "UNKNOWN";
}

static uint32_t errno_to_nbd(int err)
{
    switch (err) {
    case 0:
        return 0;
    case EPERM:
    case EROFS:
        return NBD_EPERM;
    case ENOMEM:
        return NBD_ENOMEM;
    case EINVAL:
        return NBD_EINVAL;
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
        return NBD_ENOSPC;
    case EOVERFLOW:
        return NBD_EOVERFLOW;
    case ENOTSUP:
        return NBD_ENOTSUP;
    case ESHUTDOWN:
        return NBD_ESHUTDOWN;
    default:
        return NBD_EIO;
    }
}

/* Buffers up to KEEP_BUFFER bytes stay with the worker between requests;
 * larger ones are freed after use, so that idle connections do not pin
 * 16 x 32 MiB. */
#define KEEP_BUFFER (1024 * 1024)

static void *worker_buffer(Worker *w, size_t size)
{
    if (!w->buf || size > w->buf_size) {
        free(w->buf);
        w->buf_size = MAX(size, 65536);
        w->buf = bdrv_blockalign(nbd_export_node(w->conn->exp), w->buf_size);
        if (!w->buf)
            w->buf_size = 0;
    }
    return w->buf;
}

static void worker_buffer_trim(Worker *w)
{
    if (w->buf_size > KEEP_BUFFER) {
        free(w->buf);
        w->buf = NULL;
        w->buf_size = 0;
    }
}

static void mark_dead(NbdConn *c, bool wake_reader)
{
    g_atomic_int_set(&c->dead, 1);
    if (wake_reader)
        shutdown(c->fd, SHUT_RDWR);
}

/* --- replies ----------------------------------------------------------- */

static void send_locked(NbdConn *c, struct iovec *iov, int n)
{
    g_mutex_lock(&c->write_lock);
    if (conn_writev(c, iov, n) < 0)
        mark_dead(c, true);
    g_mutex_unlock(&c->write_lock);
}

/* A timed request's sends that may wait (for write_lock, or for the
 * client to read) do not count in its time: that time is the client's,
 * and counting it would make a slow reader of replies look like slow
 * storage, so that no request is served inline any more. */
static void send_wait_begin(Worker *w)
{
    if (w->timed)
        w->send_start = g_get_monotonic_time();
}

static void send_wait_end(Worker *w)
{
    if (w->timed)
        w->send_wait += g_get_monotonic_time() - w->send_start;
}

static void drop_reader_role(Worker *w)
{
    if (w->reader) {
        w->reader = false;
        g_mutex_unlock(&w->conn->read_lock);
    }
}

/* Sends what the cork gathered.  The reader never blocks on the socket or
 * on write_lock (whose holder may be blocked on the socket): a client that
 * reads replies only once its requests are all sent would wait for us
 * while we wait for it.  So a reader that cannot send at once gives up
 * the reader role first. */
static void cork_flush(Worker *w)
{
    NbdConn *c = w->conn;
    struct iovec iov = { w->out, w->out_len };

    if (!w->out_len)
        return;
    w->out_len = 0;
    w->corked_acks = 0;
    if (!w->reader || !g_mutex_trylock(&c->write_lock)) {
        drop_reader_role(w);
        g_mutex_lock(&c->write_lock);
    }
    if (w->reader) {
        ssize_t n;

        do {
            n = nc_send(c->fd, iov.iov_base, iov.iov_len,
                        MSG_DONTWAIT | MSG_NOSIGNAL);
        } while (n < 0 && errno == EINTR);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            mark_dead(c, true);
            g_mutex_unlock(&c->write_lock);
            return;
        }
        if (n > 0) {
            iov.iov_base = (char *)iov.iov_base + n;
            iov.iov_len -= n;
        }
        if (iov.iov_len)
            drop_reader_role(w);
    }
    if (iov.iov_len && conn_writev(c, &iov, 1) < 0)
        mark_dead(c, true);
    g_mutex_unlock(&c->write_lock);
}

/* Room for @len more bytes in the cork, flushing it first if needed;
 * false if the reply is too big to be gathered. */
static bool cork_room(Worker *w, size_t len)
{
    if (len > CORK_SIZE)
        return false;
    if (w->out_len + len > CORK_SIZE)
        cork_flush(w);
    if (!w->out)
        w->out = g_malloc(CORK_SIZE);
    return true;
}

/* One reply: gathered in the cork while serving inline, else sent now. */
static void send_reply(Worker *w, struct iovec *iov, int n)
{
    size_t len = 0;

    for (int i = 0; i < n; i++)
        len += iov[i].iov_len;
    /* A flush may have given up the reader role: gather no more then. */
    if (w->cork && w->reader && cork_room(w, len)) {
        for (int i = 0; i < n; i++) {
            memcpy(w->out + w->out_len, iov[i].iov_base, iov[i].iov_len);
            w->out_len += iov[i].iov_len;
        }
        return;
    }
    /* Too big to gather (no quick request's reply is): a blocking send,
     * so not as the reader. */
    if (w->cork)
        drop_reader_role(w);
    send_wait_begin(w);
    cork_flush(w);
    send_locked(w->conn, iov, n);
    send_wait_end(w);
}

static void simple_reply(Worker *w, uint64_t cookie, uint32_t error,
                         void *data, uint32_t len)
{
    SimpleReplyHeader hdr = {
        htobe32(NBD_SIMPLE_REPLY_MAGIC), htobe32(error), cookie,
    };
    struct iovec iov[2] = { { &hdr, sizeof(hdr) }, { data, len } };

    /* The common case, a write's answer while serving inline. */
    if ((!len || error) && w->cork && w->reader && w->out &&
        w->out_len + sizeof(hdr) <= CORK_SIZE) {
        memcpy(w->out + w->out_len, &hdr, sizeof(hdr));
        w->out_len += sizeof(hdr);
        w->corked_acks++;
        return;
    }
    send_reply(w, iov, len && !error ? 2 : 1);
}

/* One structured reply chunk: a fixed part @head and optional @data. */
static void chunk_reply(Worker *w, uint64_t cookie, uint16_t flags,
                        uint16_t type, void *head, uint32_t head_len,
                        void *data, uint32_t data_len)
{
    ChunkHeader hdr = {
        htobe32(NBD_STRUCTURED_REPLY_MAGIC), htobe16(flags), htobe16(type),
        cookie, htobe32(head_len + data_len),
    };
    struct iovec iov[3] = {
        { &hdr, sizeof(hdr) }, { head, head_len }, { data, data_len },
    };

    send_reply(w, iov, data_len ? 3 : head_len ? 2 : 1);
}

static void error_chunk(Worker *w, uint64_t cookie, uint32_t error,
                        const char *msg)
{
    uint16_t msg_len = strlen(msg);
    struct {
        uint32_t error;
        uint16_t msg_len;
    } __attribute__((packed)) head = { htobe32(error), htobe16(msg_len) };

    chunk_reply(w, cookie, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, &head,
                sizeof(head), (void *)msg, msg_len);
}

/* Error reply in the form the command needs: READ and BLOCK_STATUS must
 * not get a simple reply once structured replies are on. */
static void error_reply(Worker *w, const Request *r, uint32_t error,
                        const char *msg)
{
    NbdConn *c = w->conn;

    if (c->structured_replies &&
        (r->type == NBD_CMD_READ || r->type == NBD_CMD_BLOCK_STATUS))
        error_chunk(w, r->cookie, error, msg);
    else
        simple_reply(w, r->cookie, error, NULL, 0);
}

/* --- validation -------------------------------------------------------- */

static uint32_t reject(const Request *r, uint32_t error, const char *why)
{
    trace(TRACE_NBD_REQUEST_INVALID, "invalid request: %s: %s",
          cmd_name(r->type), why);
    return error;
}

static uint16_t allowed_flags(NbdConn *c, uint16_t type)
{
    uint16_t f = (c->eflags & NBD_FLAG_SEND_FUA) ? NBD_CMD_FLAG_FUA : 0;

    switch (type) {
    case NBD_CMD_READ:
        return f | (c->structured_replies ? NBD_CMD_FLAG_DF : 0);
    case NBD_CMD_WRITE_ZEROES:
        return f | NBD_CMD_FLAG_NO_HOLE |
               ((c->eflags & NBD_FLAG_SEND_FAST_ZERO) ? NBD_CMD_FLAG_FAST_ZERO
                                                      : 0);
    case NBD_CMD_BLOCK_STATUS:
        return f | NBD_CMD_FLAG_REQ_ONE;
    default:
        return f;
    }
}

static bool is_write_like(uint16_t type)
{
    return type == NBD_CMD_WRITE || type == NBD_CMD_TRIM ||
           type == NBD_CMD_WRITE_ZEROES;
}

/* 0 if the request may run, else the wire error to answer. */
static uint32_t validate_request(NbdConn *c, const Request *r)
{
    uint64_t size = nbd_export_size(c->exp);

    if (r->type > NBD_CMD_BLOCK_STATUS)
        return reject(r, NBD_EINVAL, "unknown command");
    if (r->flags & ~allowed_flags(c, r->type))
        return reject(r, NBD_EINVAL, "unknown or unexpected flags");
    if (r->type == NBD_CMD_FLUSH) {
        if (r->offset || r->len)
            return reject(r, NBD_EINVAL, "offset and length must be zero");
        return 0;
    }
    if (is_write_like(r->type) && c->exp->read_only)
        return reject(r, NBD_EPERM, "the export is read-only");
    if (r->offset + r->len < r->offset)
        return reject(r, NBD_EINVAL, "offset + length overflows");
    if (r->offset + r->len > size)
        return reject(r, r->type == NBD_CMD_WRITE ||
                                 r->type == NBD_CMD_WRITE_ZEROES
                             ? NBD_ENOSPC : NBD_EINVAL,
                      "range beyond the end of the export");
    if (r->type == NBD_CMD_READ && r->len > NBD_MAX_PAYLOAD)
        return reject(r, NBD_EINVAL, "read larger than the maximum block size");
    if (r->type == NBD_CMD_BLOCK_STATUS) {
        if (!c->ctx_base_allocation && !c->ctx_allocation_depth &&
            !c->ctx_bitmaps)
            return reject(r, NBD_EINVAL, "no meta context was negotiated");
        if (r->len == 0)
            return reject(r, NBD_EINVAL, "zero length");
    }
    return r->payload_error;
}

/* --- commands ---------------------------------------------------------- */

static void send_read_data(Worker *w, const Request *r, uint64_t offset,
                           void *data, uint32_t len, uint16_t flags)
{
    uint64_t be_offset = htobe64(offset);

    chunk_reply(w, r->cookie, flags, NBD_REPLY_TYPE_OFFSET_DATA, &be_offset,
                8, data, len);
}

static void send_read_hole(Worker *w, const Request *r, uint64_t offset,
                           uint32_t len, uint16_t flags)
{
    struct {
        uint64_t offset;
        uint32_t len;
    } __attribute__((packed)) head = { htobe64(offset), htobe32(len) };

    chunk_reply(w, r->cookie, flags, NBD_REPLY_TYPE_OFFSET_HOLE, &head,
                sizeof(head), NULL, 0);
}

/*
 * Piped reads (plain sockets, nodes that can splice: raw over a file in
 * the page cache).  The block layer splices the data into the worker's
 * pipe (page references, no copy), the reply header is sent, and the
 * pipe is spliced to the socket (the socket takes the same page
 * references): the server never touches the data, where a pread and a
 * send would copy it twice.  The header goes first only once the data is
 * in the pipe, so a failed read is still an ordinary error reply.
 */
static bool worker_pipe(Worker *w)
{
    int fds[2];

    if (w->pipe_size)
        return w->pipe_size > 0;
    w->pipe_size = -1;
    if (pipe2(fds, O_CLOEXEC) < 0)
        return false;
    /* Past the user's pipe quota (fs.pipe-user-pages-soft) the pipe keeps
     * a small default size: reads then cost a header and two splices per
     * few pages, more than the copy saves. */
    fcntl(fds[1], F_SETPIPE_SZ, PIPE_SIZE);
    w->pipe_size = fcntl(fds[1], F_GETPIPE_SZ);
    if (w->pipe_size < PIPE_SIZE / 4) {
        close(fds[0]);
        close(fds[1]);
        w->pipe_size = -1;
        return false;
    }
    w->pipe_rd = fds[0];
    w->pipe_wr = fds[1];
    return true;
}

/* Also after a failure, when the pipe may hold stale data: a new one is
 * made on next use. */
static void worker_pipe_close(Worker *w)
{
    if (w->pipe_size > 0) {
        close(w->pipe_rd);
        close(w->pipe_wr);
    }
    w->pipe_size = 0;
}

/* How much of @len bytes at @offset one piped chunk carries (the pipe
 * counts pages, and data not page aligned spans one more); 0 if reads
 * are not piped here. */
static uint32_t piped_chunk_len(Worker *w, uint64_t offset, uint32_t len)
{
    if (w->conn->tls || len < PIPED_READ_MIN)
        return 0;
    if (!worker_pipe(w)) {
        g_atomic_int_set(&w->conn->pipe_refused, 1);
        return 0;
    }
    return MIN(len, (uint32_t)w->pipe_size - offset % PIPE_PAGE);
}

static bool send_all(int fd, const void *buf, size_t len, int flags)
{
    while (len > 0) {
        ssize_t n = nc_send(fd, buf, len, flags | MSG_NOSIGNAL);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        buf = (const char *)buf + n;
        len -= n;
    }
    return true;
}

/* Whether @len more bytes fit in the socket's send buffer now, so that
 * sending them cannot wait for the client (a unix socket's sender waits
 * only when what it queued reaches the buffer's size; the margin covers
 * partly filled pages and the buffers' own overhead). */
static bool send_room(NbdConn *c, size_t len)
{
    int queued;

    return c->send_buffer > 0 && ioctl(c->fd, SIOCOUTQ, &queued) == 0 &&
           queued + len + len / 16 + 4 * PIPE_PAGE <= (size_t)c->send_buffer;
}

/* Sends @hdr then the @len bytes in the worker's pipe, after what the
 * cork gathered.  The reader keeps its role (and serves on, with no
 * thread switch) only when nothing here can wait for the client: all of
 * it fits in the send buffer now and write_lock is free.  Else it hands
 * the role on first (see cork_flush). */
static void send_piped(Worker *w, const void *hdr, size_t hdr_len,
                       size_t len)
{
    NbdConn *c = w->conn;
    bool ok;

    if (w->reader && !(w->cork && send_room(c, w->out_len + hdr_len + len)))
        drop_reader_role(w);
    send_wait_begin(w);
    if (!w->reader || !g_mutex_trylock(&c->write_lock)) {
        drop_reader_role(w);
        g_mutex_lock(&c->write_lock);
    }
    ok = !w->out_len || send_all(c->fd, w->out, w->out_len, MSG_MORE);
    w->out_len = 0;
    ok = ok && send_all(c->fd, hdr, hdr_len, MSG_MORE);
    while (ok && len > 0) {
        ssize_t n = nc_splice(w->pipe_rd, NULL, c->fd, NULL, len,
                                SPLICE_F_MOVE);

        if (n < 0 && errno == EINTR)
            continue;
        ok = n > 0;
        len -= MAX(n, 0);
    }
    if (!ok)
        mark_dead(c, true);
    g_mutex_unlock(&c->write_lock);
    send_wait_end(w);
    if (!ok)
        worker_pipe_close(w);
}

/* One reply to a read of @len (<= piped_chunk_len) bytes at @offset,
 * piped: an OFFSET_DATA chunk with @flags, or a simple reply.  0 once
 * sent (or the connection died); -ENOTSUP when the node cannot pipe,
 * else the read's error; then nothing was sent. */
static int piped_reply(Worker *w, const Request *r, uint64_t offset,
                       uint32_t len, uint16_t flags)
{
    NbdConn *c = w->conn;
    int ret = bdrv_pread_pipe(w->node, offset, len, w->pipe_wr);

    if (ret < 0) {
        worker_pipe_close(w);
        if (ret == -ENOTSUP)
            g_atomic_int_set(&c->pipe_refused, 1);
        return ret == -EAGAIN ? -ENOTSUP : ret;
    }
    if (c->structured_replies) {
        struct __attribute__((packed)) {
            ChunkHeader chunk;
            uint64_t offset;
        } hdr = {
            { htobe32(NBD_STRUCTURED_REPLY_MAGIC), htobe16(flags),
              htobe16(NBD_REPLY_TYPE_OFFSET_DATA), r->cookie,
              htobe32(8 + len) },
            htobe64(offset),
        };
        send_piped(w, &hdr, sizeof(hdr), len);
    } else {
        SimpleReplyHeader hdr = {
            htobe32(NBD_SIMPLE_REPLY_MAGIC), 0, r->cookie,
        };
        send_piped(w, &hdr, sizeof(hdr), len);
    }
    return 0;
}

/* The data of [@offset, +@len) of a structured read as OFFSET_DATA
 * chunks, the last one with @flags: piped where possible, else read into
 * the worker's buffer (which holds the request at its offset).  False if
 * an error chunk ended the reply. */
static bool send_data_chunks(Worker *w, const Request *r, uint64_t offset,
                             uint32_t len, uint16_t flags)
{
    while (len > 0) {
        uint32_t n = piped_chunk_len(w, offset, len);
        int ret;

        /* NBD_CMD_FLAG_DF: the data in one chunk. */
        if (n < len && (r->flags & NBD_CMD_FLAG_DF))
            n = 0;
        ret = n ? piped_reply(w, r, offset, n, n == len ? flags : 0)
                    : -ENOTSUP;

        if (ret == -ENOTSUP) {
            char *buf = worker_buffer(w, r->len);

            n = len;
            ret = buf ? 0 : -ENOMEM;
            buf += offset - r->offset;
            if (ret == 0)
                ret = bdrv_pread(w->node, offset, n, buf);
            if (ret == 0)
                send_read_data(w, r, offset, buf, n, flags);
        }
        if (ret < 0) {
            error_chunk(w, r->cookie, errno_to_nbd(-ret), g_strerror(-ret));
            return false;
        }
        offset += n;
        len -= n;
    }
    return true;
}

/* Holes and zeroes travel as OFFSET_HOLE chunks, data as OFFSET_DATA. */
static void sparse_read(Worker *w, const Request *r)
{
    uint64_t end = r->offset + r->len;

    for (uint64_t off = r->offset; off < end;) {
        int64_t pnum;
        int st = bdrv_block_status(w->node, off, end - off, &pnum);
        uint16_t done;

        if (st < 0 || !(st & BDRV_BLOCK_ZERO)) {
            if (st < 0)
                pnum = end - off;
            done = off + pnum == end ? NBD_REPLY_FLAG_DONE : 0;
            if (!send_data_chunks(w, r, off, pnum, done))
                return;
        } else {
            done = off + pnum == end ? NBD_REPLY_FLAG_DONE : 0;
            send_read_hole(w, r, off, pnum, done);
        }
        off += pnum;
    }
}

/* A read served inline goes straight into the cork, header and data in
 * place: no copy, and one send for several replies.  False if it does not
 * fit or needs more than one chunk. */
static bool corked_read(Worker *w, const Request *r)
{
    NbdConn *c = w->conn;
    size_t head = c->structured_replies ? sizeof(ChunkHeader) + 8
                                        : sizeof(SimpleReplyHeader);
    char *p;
    int ret;

    if (!w->cork || !w->reader || r->len == 0 ||
        !c->any_buffer_alignment ||
        (c->structured_replies && !(r->flags & NBD_CMD_FLAG_DF) &&
         r->len >= SPARSE_READ_MIN) ||
        !cork_room(w, head + r->len) || !w->reader)
        return false;
    p = w->out + w->out_len;
    ret = bdrv_pread(w->node, r->offset, r->len, p + head);
    if (ret < 0) {
        error_reply(w, r, errno_to_nbd(-ret), g_strerror(-ret));
    } else if (c->structured_replies) {
        ChunkHeader hdr = {
            htobe32(NBD_STRUCTURED_REPLY_MAGIC), htobe16(NBD_REPLY_FLAG_DONE),
            htobe16(NBD_REPLY_TYPE_OFFSET_DATA), r->cookie,
            htobe32(8 + r->len),
        };
        uint64_t be_offset = htobe64(r->offset);

        memcpy(p, &hdr, sizeof(hdr));
        memcpy(p + sizeof(hdr), &be_offset, 8);
        w->out_len += head + r->len;
    } else {
        SimpleReplyHeader hdr = {
            htobe32(NBD_SIMPLE_REPLY_MAGIC), 0, r->cookie,
        };

        memcpy(p, &hdr, sizeof(hdr));
        w->out_len += head + r->len;
    }
    return true;
}

static void cmd_read(Worker *w, const Request *r)
{
    NbdConn *c = w->conn;
    char *buf;
    int ret;

    if (c->background)
        nbd_pace_background_read(&c->exp->pace, w->node, r->len);
    if (corked_read(w, r))
        return;
    if (c->structured_replies && !(r->flags & NBD_CMD_FLAG_DF) &&
        r->len >= SPARSE_READ_MIN) {
        sparse_read(w, r);
        return;
    }
    if (c->structured_replies && r->len) {
        send_data_chunks(w, r, r->offset, r->len, NBD_REPLY_FLAG_DONE);
        return;
    }
    if (r->len && piped_chunk_len(w, r->offset, r->len) == r->len) {
        ret = piped_reply(w, r, r->offset, r->len, 0);
        if (ret != -ENOTSUP) {
            if (ret < 0)
                error_reply(w, r, errno_to_nbd(-ret), g_strerror(-ret));
            return;
        }
    }
    buf = worker_buffer(w, r->len);
    if (!buf) {
        error_reply(w, r, NBD_ENOMEM, "out of memory");
        return;
    }
    ret = bdrv_pread(w->node, r->offset, r->len, buf);
    if (ret < 0)
        error_reply(w, r, errno_to_nbd(-ret), g_strerror(-ret));
    else if (!c->structured_replies)
        simple_reply(w, r->cookie, 0, buf, r->len);
    else if (r->len == 0)
        chunk_reply(w, r->cookie, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE,
                    NULL, 0, NULL, 0);
    else
        send_read_data(w, r, r->offset, buf, r->len, NBD_REPLY_FLAG_DONE);
}

static int write_flags(NbdConn *c, const Request *r)
{
    return (r->flags & NBD_CMD_FLAG_FUA) || c->exp->writethrough
               ? BDRV_REQ_FUA : 0;
}

static int cmd_write_zeroes(Worker *w, const Request *r)
{
    NbdConn *c = w->conn;
    int flags = write_flags(c, r);

    if (!(r->flags & NBD_CMD_FLAG_NO_HOLE))
        flags |= BDRV_REQ_MAY_UNMAP;
    if (r->flags & NBD_CMD_FLAG_FAST_ZERO)
        flags |= BDRV_REQ_NO_FALLBACK;
    return bdrv_pwrite_zeroes(w->node, r->offset, r->len, flags);
}

static int cmd_trim(Worker *w, const Request *r)
{
    NbdConn *c = w->conn;
    int ret = bdrv_pdiscard(w->node, r->offset, r->len);

    if (ret == 0 && (write_flags(c, r) & BDRV_REQ_FUA))
        ret = bdrv_flush(w->node);
    return ret;
}

/* One meta context's answer at @offset: its NBD extent flags, valid for
 * *pnum bytes; or a negative errno. */
typedef int (*ContextStatusFunc)(BlockNode *bs, void *opaque, int64_t offset,
                                 int64_t bytes, int64_t *pnum,
                                 uint32_t *flags);

static int base_allocation_status(BlockNode *bs, void *opaque,
                                  int64_t offset, int64_t bytes,
                                  int64_t *pnum, uint32_t *flags)
{
    int st = bdrv_block_status(bs, offset, bytes, pnum);

    (void)opaque;
    *flags = (st & BDRV_BLOCK_DATA ? 0 : NBD_STATE_HOLE) |
             (st & BDRV_BLOCK_ZERO ? NBD_STATE_ZERO : 0);
    return st;
}

/* qemu:allocation-depth: the flags are the depth itself. */
static int allocation_depth_status(BlockNode *bs, void *opaque,
                                   int64_t offset, int64_t bytes,
                                   int64_t *pnum, uint32_t *flags)
{
    int depth = bdrv_allocation_depth(bs, offset, bytes, pnum);

    (void)opaque;
    *flags = depth;
    return depth;
}

/* qemu:dirty-bitmap:NAME: dirty (1) or clean (0) extents of the bitmap. */
static int dirty_bitmap_status(BlockNode *bs, void *opaque, int64_t offset,
                               int64_t bytes, int64_t *pnum, uint32_t *flags)
{
    bool dirty = false;

    (void)bs;
    if (!bdrv_dirty_bitmap_next_extent(opaque, offset, offset + bytes, &dirty,
                                       pnum))
        *pnum = bytes; /* past the bitmap: clean */
    *flags = dirty ? NBD_STATE_DIRTY : 0;
    return 0;
}

typedef struct Context {
    uint32_t id;
    ContextStatusFunc fn;
    void *opaque;
    GArray *ext;
} Context;

/* The extents (big-endian length, flags pairs) of one context over the
 * request, alike neighbours merged; 0 or a negative errno. */
static int collect_extents(Worker *w, const Request *r, Context *ctx)
{
    bool one = r->flags & NBD_CMD_FLAG_REQ_ONE;
    uint64_t end = r->offset + r->len;
    GArray *ext = ctx->ext;

    for (uint64_t off = r->offset; off < end;) {
        int64_t pnum;
        uint32_t flags;
        int st = ctx->fn(w->node, ctx->opaque, off, end - off, &pnum,
                         &flags);

        if (st < 0)
            return st;
        off += pnum;
        if (ext->len && be32toh(g_array_index(ext, uint32_t, ext->len - 1)) ==
                            flags) {
            uint32_t *prev = &g_array_index(ext, uint32_t, ext->len - 2);
            *prev = htobe32(be32toh(*prev) + (uint32_t)pnum);
        } else {
            uint32_t pair[2] = { htobe32(pnum), htobe32(flags) };
            if ((one && ext->len) || ext->len / 2 >= MAX_EXTENTS)
                break;
            g_array_append_vals(ext, pair, 2);
        }
    }
    return 0;
}

/* The selected contexts, in the order qemu-nbd answers them. */
static GArray *selected_contexts(NbdConn *c)
{
    GArray *ctx = g_array_new(FALSE, TRUE, sizeof(Context));
    GPtrArray *bitmaps = c->exp->bitmaps;

    if (c->ctx_base_allocation)
        g_array_append_val(ctx, ((Context){ NBD_CTX_BASE_ALLOCATION,
                                            base_allocation_status }));
    if (c->ctx_allocation_depth)
        g_array_append_val(ctx, ((Context){ NBD_CTX_ALLOCATION_DEPTH,
                                            allocation_depth_status }));
    for (guint i = 0; bitmaps && i < bitmaps->len; i++)
        if (c->ctx_bitmaps & (1u << i))
            g_array_append_val(ctx, ((Context){
                                        NBD_CTX_DIRTY_BITMAP + i,
                                        dirty_bitmap_status,
                                        g_ptr_array_index(bitmaps, i) }));
    return ctx;
}

/* One BLOCK_STATUS chunk per selected context; all are computed before
 * any is sent, so that a failure is one error chunk rather than half an
 * answer. */
static void cmd_block_status(Worker *w, const Request *r)
{
    NbdConn *c = w->conn;
    g_autoptr(GArray) ctx = selected_contexts(c);
    int ret = 0;

    for (guint i = 0; i < ctx->len && ret == 0; i++) {
        Context *x = &g_array_index(ctx, Context, i);
        x->ext = g_array_new(FALSE, FALSE, sizeof(uint32_t));
        ret = collect_extents(w, r, x);
    }
    if (ret < 0)
        error_chunk(w, r->cookie, errno_to_nbd(-ret), g_strerror(-ret));
    for (guint i = 0; i < ctx->len; i++) {
        Context *x = &g_array_index(ctx, Context, i);
        uint32_t id = htobe32(x->id);

        if (!x->ext)
            continue;
        if (ret == 0)
            chunk_reply(w, r->cookie,
                        i == ctx->len - 1 ? NBD_REPLY_FLAG_DONE : 0,
                        NBD_REPLY_TYPE_BLOCK_STATUS, &id, 4, x->ext->data,
                        x->ext->len * sizeof(uint32_t));
        g_array_free(x->ext, TRUE);
    }
}

static int run_write(NbdConn *c, Worker *w, const Request *r)
{
    int ret;

    if (r->type == NBD_CMD_WRITE)
        ret = bdrv_pwrite(w->node, r->offset, r->len, r->payload,
                          write_flags(c, r));
    else if (r->type == NBD_CMD_TRIM)
        ret = cmd_trim(w, r);
    else
        ret = cmd_write_zeroes(w, r);
    /* A live snapshot or a mirror's switch moved the export while this
     * request was on its way to the old node: the old node refused it
     * (read-only now) or took it after the switch, where nobody reads it
     * any more.  It goes to the new node too; doing it twice is harmless,
     * since the client has no answer yet. */
    if (nbd_export_node(c->exp) != w->node) {
        bdrv_unref(w->node);
        w->node = bdrv_user_node_ref(c->exp->user);
        return run_write(c, w, r);
    }
    return ret;
}

static void execute_on_node(Worker *w, const Request *r)
{
    NbdConn *c = w->conn;
    BlockNode *node = w->node;
    int ret = 0;

    switch (r->type) {
    case NBD_CMD_READ:
        cmd_read(w, r);
        return;
    case NBD_CMD_BLOCK_STATUS:
        cmd_block_status(w, r);
        return;
    case NBD_CMD_WRITE:
    case NBD_CMD_TRIM:
    case NBD_CMD_WRITE_ZEROES:
        ret = run_write(c, w, r);
        break;
    case NBD_CMD_FLUSH:
        ret = bdrv_flush(node);
        break;
    case NBD_CMD_CACHE:
        ret = bdrv_prefetch(node, r->offset, r->len);
        break;
    }
    if (ret < 0)
        trace(TRACE_NBD_REQUEST_FAILED, "%s at %" G_GUINT64_FORMAT "+%u failed: %s",
              cmd_name(r->type), r->offset, r->len, g_strerror(-ret));
    simple_reply(w, r->cookie, errno_to_nbd(-ret), NULL, 0);
}

/* Runs a validated request and answers it, on the node the export serves
 * now, kept alive until the answer is out. */
static void execute(Worker *w, const Request *r)
{
    w->node = bdrv_user_node_ref(w->conn->exp->user);
    execute_on_node(w, r);
    g_clear_pointer(&w->node, bdrv_unref);
}

/* --- reading requests -------------------------------------------------- */

/*
 * On a plain socket, requests are read through conn->rbuf (guarded by
 * read_lock): one recv brings whatever the client has sent, often a
 * write's header with its payload, or at queue depth > 1 several requests.
 * TLS has its own record buffer and reads through conn_read directly.
 */
static size_t rbuf_avail(NbdConn *c)
{
    return c->rbuf_end - c->rbuf_start;
}

/* A client that waits for each reply before its next request (queue
 * depth 1) sends it within a few tens of microseconds: the reader polls
 * that long before it sleeps in recv, which saves the wake-up of a
 * sleeping thread per request, most of such a round trip's time on an
 * idle machine (QEMU's iothreads poll for the same reason, poll-max-ns).
 * With more requests per receive (deeper queues) it never polls. */
#define LOW_DEPTH_POLL_US 30

/* Polling pays only while it succeeds.  A poll that times out spent its
 * window for nothing, on a CPU someone wanted: on a busy machine often
 * the client's own, which then sends later still.  After each failed poll
 * the next fills skip polling, twice as many each time up to
 * POLL_BACKOFF_MAX; a poll that succeeds ends the back-off (QEMU's
 * iothreads adapt their poll-max-ns likewise).  At load 5, 4k reads at
 * QD1 went from 43-47k to 59-72k IOPS, and the server's CPU per read from
 * 11.4 to 6.4-7.7 µs.  The cap is low because skipped fills never learn
 * that polling works again: at 1024, QD1 reads on the quiet machine fell
 * to 20k from 31-38k (sporadic misses turned polling off for long); at 16
 * they were 32-33k, and a busy machine wastes at most one failed window
 * in 17 fills. */
#define POLL_BACKOFF_MAX 16

static ssize_t recv_polling(NbdConn *c, size_t avail)
{
    gint64 until;
    ssize_t n;

    if (c->poll_skip > 0) {
        c->poll_skip--;
        errno = EAGAIN;
        return -1;
    }
    until = g_get_monotonic_time() + LOW_DEPTH_POLL_US;
    do {
        n = nc_recv(c->fd, c->rbuf + avail, RBUF_SIZE - avail,
                    MSG_DONTWAIT);
    } while (n < 0 && (errno == EAGAIN || errno == EINTR) &&
             g_get_monotonic_time() < until);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        c->poll_backoff = MIN(MAX(2 * c->poll_backoff, 1), POLL_BACKOFF_MAX);
        c->poll_skip = c->poll_backoff;
    } else {
        c->poll_backoff = 0;
    }
    return n;
}

/* Receives more bytes after those buffered (moved to the front). */
static int rbuf_fill(NbdConn *c)
{
    size_t avail = rbuf_avail(c);
    bool low_depth = c->requests_since_fill <= 1;
    ssize_t n = -1;

    memmove(c->rbuf, c->rbuf + c->rbuf_start, avail);
    c->rbuf_start = 0;
    c->rbuf_end = avail;
    c->requests_since_fill = 0;
    errno = EAGAIN;
    if (low_depth)
        n = recv_polling(c, avail);
    while (n < 0 && (errno == EAGAIN || errno == EINTR))
        n = nc_recv(c->fd, c->rbuf + avail, RBUF_SIZE - avail, 0);
    if (n <= 0)
        return -1;
    c->rbuf_end += n;
    return 0;
}

/* The next @len bytes of the stream, into @dst. */
static int req_read(NbdConn *c, void *dst, size_t len)
{
    char *p = dst;

    if (!c->rbuf)
        return conn_read(c, dst, len);
    while (len > 0) {
        size_t n = MIN(len, rbuf_avail(c));

        if (n) {
            memcpy(p, c->rbuf + c->rbuf_start, n);
            c->rbuf_start += n;
            p += n;
            len -= n;
        } else if (len >= RBUF_SIZE / 4) {
            return conn_read(c, p, len); /* large payload: no double copy */
        } else if (rbuf_fill(c) < 0) {
            return -1;
        }
    }
    return 0;
}

static int req_discard(NbdConn *c, uint64_t len)
{
    if (c->rbuf) {
        size_t n = MIN(len, rbuf_avail(c));

        c->rbuf_start += n;
        len -= n;
    }
    return conn_discard(c, len);
}

/* The next @len (<= RBUF_SIZE / 4) bytes of the stream, left in rbuf and
 * valid until the next read. */
static const void *req_read_in_place(NbdConn *c, size_t len)
{
    const char *p;

    while (rbuf_avail(c) < len)
        if (rbuf_fill(c) < 0)
            return NULL;
    p = c->rbuf + c->rbuf_start;
    c->rbuf_start += len;
    return p;
}

/* Reads the next request's header; false when the connection must end. */
static bool read_header(Worker *w, Request *r)
{
    NbdConn *c = w->conn;
    struct {
        uint32_t magic;
        uint16_t flags;
        uint16_t type;
        uint64_t cookie;
        uint64_t offset;
        uint32_t len;
    } __attribute__((packed)) hdr;

    if (req_read(c, &hdr, sizeof(hdr)) < 0 ||
        be32toh(hdr.magic) != NBD_REQUEST_MAGIC)
        return false;
    *r = (Request){
        .flags = be16toh(hdr.flags),
        .type = be16toh(hdr.type),
        .cookie = hdr.cookie, /* opaque: echoed as received */
        .offset = be64toh(hdr.offset),
        .len = be32toh(hdr.len),
    };
    return r->type != NBD_CMD_DISC;
}

/* Reads a WRITE's payload, left in rbuf if @in_place (the reader serves
 * the request inline, so nothing reads past it meanwhile); false when
 * the connection must end. */
static bool read_payload(Worker *w, Request *r, bool in_place)
{
    NbdConn *c = w->conn;

    if (r->type != NBD_CMD_WRITE)
        return true;
    /* The payload is read even when the request is bad, so that a bad
     * request costs an error reply, not the connection. */
    if (r->len > NBD_MAX_PAYLOAD) {
        if (r->len > MAX_DRAIN_LEN || req_discard(c, r->len) < 0)
            return false;
        r->payload_error = reject(r, NBD_EINVAL,
                                  "payload larger than the maximum block size");
        return true;
    }
    if (in_place && c->rbuf && c->any_buffer_alignment &&
        r->len <= RBUF_SIZE / 4) {
        r->payload = req_read_in_place(c, r->len);
        return r->payload != NULL;
    }
    if (!worker_buffer(w, r->len)) {
        if (req_discard(c, r->len) < 0)
            return false;
        r->payload_error = NBD_ENOMEM;
        return true;
    }
    r->payload = w->buf;
    return req_read(c, w->buf, r->len) == 0;
}

/*
 * Handing the reader role to another worker costs a thread wake-up per
 * request, which dominates on fast storage.  A worker therefore keeps the
 * role (and read_lock) and serves its request inline when requests of
 * this connection have been quick (page cache, tmpfs), so that anything
 * arriving meanwhile waits at most one quick request.  Slow storage always
 * hands the role on, so requests overlap.
 *
 * On a plain socket, requests already received are then served one after
 * the other by the reader, their replies gathered in its cork and sent
 * with one send once no whole request is left buffered (see worker_loop):
 * at queue depth 32, a recv and a send serve many requests, with no
 * thread switch.  With TLS, the worker keeps the role only when nothing
 * more is waiting and its reply fits in the socket's send buffer, so
 * that a client that does not read replies cannot stall the reader
 * behind its own send.
 */
#define QUICK_REQUEST_NS 50000
#define QUIET_SEND_QUEUE (128 * 1024)

/* Only small reads and plain writes can be quick, and on plain sockets
 * plain writes up to 1 MiB and reads up to a pipe's size that can be
 * piped (the reader sends them without copying, if they fit in the send
 * buffer: send_piped); flushes,
 * zeroing, trims, FUA writes and block status may take long whatever the
 * past. */
static bool may_be_quick(NbdConn *c, const Request *r)
{
    if (r->type == NBD_CMD_READ && r->len > 64 * 1024)
        return r->len <= PIPE_SIZE &&
               (c->tls ? c->send_buffer > 0
                       : !g_atomic_int_get(&c->pipe_refused));
    /* A large write's payload is in the worker's buffer once read: the
     * reader writes it on (on fast storage) rather than waking a worker. */
    if (r->type == NBD_CMD_WRITE && r->len > 64 * 1024)
        return c->rbuf && r->len <= PIPE_SIZE &&
               !(r->flags & NBD_CMD_FLAG_FUA);
    if (r->len > 64 * 1024)
        return false;
    return r->type == NBD_CMD_READ ||
           (r->type == NBD_CMD_WRITE && !(r->flags & NBD_CMD_FLAG_FUA) &&
            r->len <= NBD_MAX_PAYLOAD);
}

static bool quick_enough(NbdConn *c, const Request *r)
{
    return may_be_quick(c, r) && !c->exp->writethrough &&
           __atomic_load_n(&c->avg_request_ns, __ATOMIC_RELAXED) <=
               QUICK_REQUEST_NS;
}

static bool tls_keep_reader_role(NbdConn *c, const Request *r)
{
    uint32_t reply = 64 + (r->type == NBD_CMD_READ ? r->len : 0);
    int pending = 0, queued = 0;

    if (gnutls_record_check_pending(c->tls) > 0)
        return false;
    if (ioctl(c->fd, FIONREAD, &pending) < 0 || pending > 0)
        return false;
    /* A unix socket's send buffer was grown: a large read's reply fits. */
    if (c->send_buffer > 0)
        return send_room(c, reply);
    return ioctl(c->fd, SIOCOUTQ, &queued) == 0 &&
           queued + reply <= QUIET_SEND_QUEUE;
}

static void account_request_time(NbdConn *c, const Request *r,
                                 gint64 start_ns, gint64 send_wait_us)
{
    gint64 ns = (g_get_monotonic_time() - send_wait_us) * 1000 - start_ns;

    /* Large reads and writes count per 64 KiB, so that they do not make
     * the small requests of the connection look slow. */
    if ((r->type == NBD_CMD_READ || r->type == NBD_CMD_WRITE) &&
        r->len > 64 * 1024)
        ns = ns * (64 * 1024) / r->len;
    gint64 avg = __atomic_load_n(&c->avg_request_ns, __ATOMIC_RELAXED);

    /* An exponential average over about 8 requests; races only blur it. */
    __atomic_store_n(&c->avg_request_ns, avg + (ns - avg) / 8,
                     __ATOMIC_RELAXED);
}

/* Requests served inline are timed one in INLINE_TIMING_EVERY (two clock
 * reads are a tenth of their cost in user space); a slowdown still shows
 * within a few requests.  Requests handed on are always timed. */
#define INLINE_TIMING_EVERY 4

static void serve_request(Worker *w, const Request *r, bool inline_)
{
    NbdConn *c = w->conn;
    bool timed = !inline_ || ++w->inline_served % INLINE_TIMING_EVERY == 0;
    gint64 start_ns = timed ? g_get_monotonic_time() * 1000 : 0;
    uint32_t error = validate_request(c, r);

    w->timed = timed;
    w->send_wait = 0;
    if (error)
        error_reply(w, r, error, "invalid request");
    else
        execute(w, r);
    if (timed)
        account_request_time(c, r, start_ns, w->send_wait);
    w->timed = false;
    worker_buffer_trim(w);
}

/* Reads the next request as the reader; false when the connection must
 * end.  *inline_ is whether to serve it keeping the reader role. */
static bool next_request(Worker *w, Request *r, bool *inline_)
{
    NbdConn *c = w->conn;
    bool quick;

    if (g_atomic_int_get(&c->dead) || !read_header(w, r))
        return false;
    c->requests_since_fill++; /* under read_lock, as rbuf_fill */
    quick = quick_enough(c, r);
    if (!read_payload(w, r, quick))
        return false;
    *inline_ = quick && (c->rbuf || tls_keep_reader_role(c, r));
    return true;
}

static gpointer worker_loop(gpointer opaque)
{
    Worker *w = opaque;
    NbdConn *c = w->conn;

    for (;;) {
        Request r;
        bool inline_;

        if (!w->reader) {
            cork_flush(w);
            g_mutex_lock(&c->read_lock);
            w->reader = true;
        }
        /* Gathered replies leave before the reader may block in recv,
         * and write acknowledgements every few: see CORK_ACKS. */
        if (w->out_len && (!c->rbuf || rbuf_avail(c) < 28 ||
                           w->corked_acks >= CORK_ACKS)) {
            cork_flush(w);
            if (!w->reader)
                continue;
        }
        if (!next_request(w, &r, &inline_)) {
            mark_dead(c, false);
            drop_reader_role(w);
            cork_flush(w);
            break;
        }
        if (!inline_) {
            drop_reader_role(w);
            cork_flush(w);
        }
        w->cork = inline_ && c->rbuf;
        serve_request(w, &r, inline_);
        w->cork = false;
    }
    free(w->buf);
    g_free(w->out);
    worker_pipe_close(w);
    return NULL;
}

/* A unix socket's default send buffer (about 200 KiB) holds less than
 * one 1 MiB reply, so the sender sleeps and is woken several times per
 * reply while the client drains it.  The kernel caps this at wmem_max.
 * TCP sizes its buffers itself, better than a fixed size. */
#define UNIX_SEND_BUFFER (4 * 1024 * 1024)

static void grow_send_buffer(NbdConn *c)
{
    struct sockaddr_storage addr;
    socklen_t len = sizeof(addr);
    int size = UNIX_SEND_BUFFER;

    if (getsockname(c->fd, (struct sockaddr *)&addr, &len) == 0 &&
        addr.ss_family == AF_UNIX) {
        setsockopt(c->fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
        len = sizeof(size);
        if (getsockopt(c->fd, SOL_SOCKET, SO_SNDBUF, &size, &len) == 0)
            c->send_buffer = size;
    }
}

void nbd_transmission(NbdConn *c)
{
    GThread *threads[NBD_WORKERS_PER_CONN];
    Worker workers[NBD_WORKERS_PER_CONN] = { 0 };

    if (!c->tls)
        c->rbuf = g_malloc(RBUF_SIZE);
    grow_send_buffer(c);
    /* Checked once: a graph change that brings O_DIRECT in later costs
     * bounce buffers, not correctness. */
    c->any_buffer_alignment =
        bdrv_buffer_alignment(nbd_export_node(c->exp)) <= 1;
    for (int i = 0; i < NBD_WORKERS_PER_CONN; i++)
        workers[i].conn = c;
    int n = 1;

    /* Short of threads, serve with fewer workers rather than abort. */
    for (; n < NBD_WORKERS_PER_CONN; n++) {
        threads[n] = g_thread_try_new("nbd-worker", worker_loop, &workers[n],
                                      NULL);
        if (!threads[n])
            break;
    }
    worker_loop(&workers[0]);
    for (int i = 1; i < n; i++)
        g_thread_join(threads[i]);
    g_clear_pointer(&c->rbuf, g_free);
}
