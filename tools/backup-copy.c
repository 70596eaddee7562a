/*
 * backup-copy.c - the copy engine: a list of chunks goes from a source to a
 * target, several chunks in flight.
 *
 * Design notes.
 *
 * One side may be an NBD export.  Its libnbd handle is driven from the main
 * thread only, with libnbd's asynchronous calls and poll(2).  The block
 * layer's calls block, so they run on a small pool of worker threads.  A
 * chunk lives in a slot (which owns a buffer) and goes through up to three
 * phases, skipping those that do not apply:
 *
 *   NBD_IN   the export reads the chunk into the buffer   (main, aio)
 *   LOCAL    the source node reads it; the data is checked for zeroes and
 *            summed; the target node writes it, or zeroes  (worker)
 *   NBD_OUT  the export writes the chunk, or zeroes        (main, aio)
 *
 * When a phase ends (a libnbd completion callback, or a worker) the slot is
 * queued as ready, and the main loop starts its next phase.  Completion
 * callbacks only queue: libnbd runs them with the handle's lock held, so
 * they must not issue commands.  Workers wake the main loop through an
 * eventfd.  All of Copy except the done queue and the sums belongs to the
 * main thread; a worker touches only its own slot and its own sums entry.
 *
 * After the first error no new chunk starts; the chunks in flight finish
 * (their buffers belong to libnbd or a worker until then), then the error
 * is returned.
 */
#include "tools/backup.h"

#include <errno.h>
#include <gnutls/crypto.h>
#include <inttypes.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define MAX_WORKERS 4
#define BUFFER_ALIGN 4096

enum { PHASE_START = -1, PHASE_NBD_IN, PHASE_LOCAL, PHASE_NBD_OUT, PHASE_END };

typedef struct Copy Copy;

typedef struct Slot {
    Copy *c;
    void *buf;
    int64_t index;    /* of the chunk in c->chunks */
    Extent chunk;
    int phase;
    bool is_zero;     /* the data read were all zeroes */
    bool writing;     /* the failed step was a write (for the message) */
    int err;          /* errno of the failed phase, or 0 */
} Slot;

struct Copy {
    const CopySpec *spec;
    const GArray *chunks;
    int64_t next;             /* the next chunk to start */
    struct nbd_handle *nbd;   /* the side that is an export, or NULL */
    bool nbd_zero;            /* it takes write-zeroes requests */
    Slot *slots;
    int nslots;
    int busy;                 /* slots not idle */
    GQueue idle;
    GQueue ready;             /* phase ended in a libnbd callback */
    GAsyncQueue *done;        /* phase ended in a worker (thread safe) */
    GThreadPool *workers;
    int wake_fd;              /* eventfd: a worker finished */
    CopyStats stats;
    GError *error;            /* the first error */
};

/* --- extent lists ------------------------------------------------------ */

void extents_append(GArray *extents, int64_t offset, int64_t length,
                    bool zero)
{
    Extent e = {offset, length, zero};

    if (length <= 0)
        return;
    if (extents->len) {
        Extent *last = &g_array_index(extents, Extent, extents->len - 1);
        if (last->offset + last->length == offset && last->zero == zero) {
            last->length += length;
            return;
        }
    }
    g_array_append_val(extents, e);
}

GArray *extents_split(const GArray *extents, int64_t max_data,
                      int64_t max_zero)
{
    GArray *chunks = g_array_new(FALSE, FALSE, sizeof(Extent));

    /* Cuts fall on multiples of the chunk size, so that two chunks never
     * share a cluster of the target (which would serialise them). */
    for (guint i = 0; i < extents->len; i++) {
        Extent e = g_array_index(extents, Extent, i);
        int64_t max = e.zero ? max_zero : max_data;
        int64_t end = e.offset + e.length;
        for (int64_t off = e.offset; off < end;) {
            Extent k = {off, MIN(end, (off / max + 1) * max) - off, e.zero};
            g_array_append_val(chunks, k);
            off += k.length;
        }
    }
    return chunks;
}

int64_t extents_bytes(const GArray *extents, bool zero)
{
    int64_t sum = 0;

    for (guint i = 0; i < extents->len; i++) {
        const Extent *e = &g_array_index(extents, Extent, i);
        if (e->zero == zero)
            sum += e->length;
    }
    return sum;
}

/* --- errors ------------------------------------------------------------- */

static const char *side_name(const Copy *c, bool writing)
{
    return writing ? c->spec->dst_name : c->spec->src_name;
}

static void slot_error(Copy *c, Slot *s, const char *why)
{
    if (c->error)
        return;
    g_set_error(&c->error, BACKUP_ERROR, BACKUP_ERROR_FAILED,
                "%s %" PRId64 " bytes at offset %" PRId64 " %s %s: %s",
                s->writing ? (s->chunk.zero || s->is_zero ? "zeroing"
                                                          : "writing")
                           : "reading",
                s->chunk.length, s->chunk.offset,
                s->writing ? "of" : "from", side_name(c, s->writing), why);
}

/* --- phases ------------------------------------------------------------- */

static bool phase_applies(const Copy *c, const Slot *s)
{
    const CopySpec *sp = c->spec;

    switch (s->phase) {
    case PHASE_NBD_IN:
        return sp->src_nbd && !s->chunk.zero;
    case PHASE_LOCAL:
        return !s->chunk.zero || sp->dst_node;
    case PHASE_NBD_OUT:
        return sp->dst_nbd &&
               (s->chunk.zero || !s->is_zero || !sp->skip_zero_buffers);
    }
    return false;
}

/* libnbd calls this when a command of the slot ends. */
static int nbd_done(void *opaque, int *error)
{
    Slot *s = opaque;

    if (*error)
        s->err = *error;
    g_queue_push_tail(&s->c->ready, s);
    return 1; /* retire the command */
}

static void nbd_start(Copy *c, Slot *s)
{
    nbd_completion_callback cb = {.callback = nbd_done, .user_data = s};
    const Extent *k = &s->chunk;
    int64_t r;

    s->writing = s->phase == PHASE_NBD_OUT;
    if (s->writing && k->zero && !c->nbd_zero)
        memset(s->buf, 0, k->length); /* a server without write-zeroes */
    if (!s->writing)
        r = nbd_aio_pread(c->nbd, s->buf, k->length, k->offset, cb, 0);
    else if ((k->zero || s->is_zero) && c->nbd_zero)
        r = nbd_aio_zero(c->nbd, k->length, k->offset, cb, 0);
    else
        r = nbd_aio_pwrite(c->nbd, s->buf, k->length, k->offset, cb, 0);
    if (r < 0) {
        /* The callback will not run: report libnbd's words now. */
        s->err = nbd_get_errno() ?: EIO;
        slot_error(c, s, nbd_get_error());
        g_queue_push_tail(&c->ready, s);
    }
}

/* The worker's part of a chunk; returns 0 or a negative errno. */
static int local_work(Copy *c, Slot *s)
{
    const CopySpec *sp = c->spec;
    const Extent *k = &s->chunk;
    int ret;

    s->writing = true;
    if (k->zero)
        return bdrv_pwrite_zeroes(sp->dst_node, k->offset, k->length, 0);
    s->writing = false;
    if (sp->src_node) {
        ret = bdrv_pread(sp->src_node, k->offset, k->length, s->buf);
        if (ret < 0)
            return ret;
    }
    s->is_zero = buffer_is_zero(s->buf, k->length);
    if (sp->sums) {
        sp->sums[s->index].zero = s->is_zero;
        if (!s->is_zero)
            gnutls_hash_fast(GNUTLS_DIG_SHA256, s->buf, k->length,
                             sp->sums[s->index].sha256);
    }
    s->writing = true;
    if (!sp->dst_node || (s->is_zero && sp->skip_zero_buffers))
        return 0;
    if (s->is_zero)
        return bdrv_pwrite_zeroes(sp->dst_node, k->offset, k->length, 0);
    return bdrv_pwrite(sp->dst_node, k->offset, k->length, s->buf, 0);
}

static void worker(gpointer data, gpointer user_data)
{
    Slot *s = data;
    Copy *c = user_data;
    uint64_t one = 1;
    int ret = local_work(c, s);

    if (ret < 0)
        s->err = -ret;
    g_async_queue_push(c->done, s);
    if (write(c->wake_fd, &one, sizeof(one)) < 0)
        g_warning("cannot wake the copy loop: %s", g_strerror(errno));
}

static void phase_start(Copy *c, Slot *s)
{
    if (s->phase == PHASE_LOCAL)
        g_thread_pool_push(c->workers, s, NULL);
    else
        nbd_start(c, s);
}

/* --- slots -------------------------------------------------------------- */

static void slot_release(Copy *c, Slot *s)
{
    g_queue_push_tail(&c->idle, s);
    c->busy--;
}

static void slot_account(Copy *c, Slot *s)
{
    int64_t len = s->chunk.length;

    if (!s->chunk.zero)
        c->stats.bytes_read += len;
    if (s->chunk.zero || s->is_zero)
        c->stats.bytes_zeroed += len;
    else
        c->stats.bytes_written += len;
    if (s->chunk.zero && c->spec->sums)
        c->spec->sums[s->index].zero = true;
    progress_add(c->spec->progress, len);
}

/* Called when a phase of @s ended: starts the next one that applies. */
static void slot_advance(Copy *c, Slot *s)
{
    if (s->err) {
        slot_error(c, s, g_strerror(s->err));
        slot_release(c, s);
        return;
    }
    while (++s->phase < PHASE_END) {
        if (phase_applies(c, s)) {
            phase_start(c, s);
            return;
        }
    }
    slot_account(c, s);
    slot_release(c, s);
}

static void slot_start(Copy *c, Slot *s, int64_t index)
{
    s->index = index;
    s->chunk = g_array_index(c->chunks, Extent, index);
    s->phase = PHASE_START;
    s->is_zero = false;
    s->err = 0;
    c->busy++;
    slot_advance(c, s);
}

/* --- the loop ------------------------------------------------------------ */

/* Advances every slot whose phase ended; did any? */
static bool drain(Copy *c)
{
    bool any = false;
    Slot *s;

    while ((s = g_queue_pop_head(&c->ready)) ||
           (s = g_async_queue_try_pop(c->done))) {
        slot_advance(c, s);
        any = true;
    }
    return any;
}

static void nbd_notify(Copy *c, short revents)
{
    int r = 0;

    if (revents & (POLLIN | POLLHUP | POLLERR))
        r = nbd_aio_notify_read(c->nbd);
    else if (revents & POLLOUT)
        r = nbd_aio_notify_write(c->nbd);
    /* A dead connection has failed its commands through their callbacks;
     * this adds the reason. */
    if (r < 0 && !c->error)
        g_set_error(&c->error, BACKUP_ERROR, BACKUP_ERROR_FAILED, "%s: %s",
                    side_name(c, c->nbd == c->spec->dst_nbd),
                    nbd_get_error());
}

/* Sleeps until a worker or the export has something for us. */
static void wait_events(Copy *c)
{
    struct pollfd fds[2] = {{.fd = c->wake_fd, .events = POLLIN}};
    int n = 1, dir;
    uint64_t count;

    if (c->nbd && nbd_aio_in_flight(c->nbd) > 0) {
        dir = nbd_aio_get_direction(c->nbd);
        fds[1].fd = nbd_aio_get_fd(c->nbd);
        fds[1].events = (dir & LIBNBD_AIO_DIRECTION_READ ? POLLIN : 0) |
                        (dir & LIBNBD_AIO_DIRECTION_WRITE ? POLLOUT : 0);
        n = fds[1].fd >= 0 ? 2 : 1;
    }
    if (poll(fds, n, -1) < 0) {
        if (errno != EINTR)
            g_error("poll: %s", g_strerror(errno));
        return;
    }
    if ((fds[0].revents & POLLIN) &&
        read(c->wake_fd, &count, sizeof(count)) < 0 && errno != EAGAIN)
        g_error("eventfd: %s", g_strerror(errno));
    if (n == 2 && fds[1].revents)
        nbd_notify(c, fds[1].revents);
}

static void run(Copy *c)
{
    int64_t n = c->chunks->len;
    Slot *s;

    while (c->busy > 0 || (c->next < n && !c->error)) {
        while (!c->error && c->next < n && (s = g_queue_pop_head(&c->idle)))
            slot_start(c, s, c->next++);
        if (!drain(c))
            wait_events(c);
    }
}

/* --- setup -------------------------------------------------------------- */

/* The buffer a chunk needs: zero chunks need none, unless they are
 * written as data. */
static int64_t max_buffer(const GArray *chunks, bool zeroes_too)
{
    int64_t max = BUFFER_ALIGN;

    for (guint i = 0; i < chunks->len; i++) {
        const Extent *k = &g_array_index(chunks, Extent, i);
        if (!k->zero || zeroes_too)
            max = MAX(max, k->length);
    }
    return max;
}

static bool copy_init(Copy *c, const CopySpec *spec, const GArray *chunks,
                      GError **errp)
{
    int64_t buflen;

    c->spec = spec;
    c->chunks = chunks;
    c->nbd = spec->src_nbd ? spec->src_nbd : spec->dst_nbd;
    c->nbd_zero = spec->dst_nbd && nbd_can_zero(spec->dst_nbd) == 1;
    buflen = max_buffer(chunks, spec->dst_nbd && !c->nbd_zero);
    c->nslots = CLAMP(spec->requests, 1, (int)MAX(chunks->len, 1));
    c->slots = g_new0(Slot, c->nslots);
    g_queue_init(&c->idle);
    g_queue_init(&c->ready);
    for (int i = 0; i < c->nslots; i++) {
        c->slots[i].c = c;
        if (posix_memalign(&c->slots[i].buf, BUFFER_ALIGN, buflen) != 0) {
            g_set_error(errp, BACKUP_ERROR, BACKUP_ERROR_FAILED,
                        "out of memory for %d buffers of %" PRId64 " bytes",
                        c->nslots, buflen);
            return false;
        }
        g_queue_push_tail(&c->idle, &c->slots[i]);
    }
    c->done = g_async_queue_new();
    c->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (c->wake_fd < 0) {
        g_set_error(errp, BACKUP_ERROR, BACKUP_ERROR_FAILED, "eventfd: %s",
                    g_strerror(errno));
        return false;
    }
    c->workers = g_thread_pool_new(worker, c, MIN(c->nslots, MAX_WORKERS),
                                   TRUE, errp);
    return c->workers != NULL;
}

static void copy_cleanup(Copy *c)
{
    if (c->workers)
        g_thread_pool_free(c->workers, FALSE, TRUE);
    if (c->wake_fd >= 0)
        close(c->wake_fd);
    if (c->done)
        g_async_queue_unref(c->done);
    for (int i = 0; i < c->nslots; i++)
        free(c->slots[i].buf);
    g_free(c->slots);
    g_queue_clear(&c->idle);
    g_queue_clear(&c->ready);
}

bool copy_chunks(const CopySpec *spec, const GArray *chunks,
                 CopyStats *stats, GError **errp)
{
    Copy c = {.wake_fd = -1};
    bool ok = copy_init(&c, spec, chunks, errp);

    if (ok) {
        run(&c);
        if (c.error) {
            g_propagate_error(errp, c.error);
            ok = false;
        }
    }
    copy_cleanup(&c);
    if (stats)
        *stats = c.stats;
    return ok;
}
