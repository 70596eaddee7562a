/*
 * io.c - the one request path of every node.
 *
 * Design notes.
 *
 * Each public bdrv_* call runs on the caller's thread and blocks until done.
 * On its way to the driver a request:
 *   1. is checked against the node's length and mode (-EINVAL, -EPERM);
 *   2. for writes, runs the node's before-write notifiers, before it is
 *      tracked: a notifier (copy-before-write) may read the very range being
 *      written, and that read must not wait behind the write it delays;
 *   3. is tracked: it enters the node's request list with a sequence number.
 *      A "serialising" request (read-modify-write of unaligned edges) waits
 *      for every overlapping request that entered before it, and every
 *      request waits for overlapping serialising ones that entered before
 *      it.  Waiting only on earlier requests rules out cycles, hence
 *      deadlocks;
 *   4. is aligned to request_alignment (bounce buffers, read-modify-write)
 *      and split at max_transfer, so drivers see only what their limits
 *      allow;
 *   5. has the flags the driver lacks emulated (FUA as write + flush,
 *      write-zeroes as zero buffers, detect-zeroes);
 *   6. for writes that ran the before-write notifiers, runs the after-write
 *      notifiers once it left the request list (an active mirror copies the
 *      range to its target there, before the caller sees the write done).
 *
 * Locks: reqs_lock guards the tracked request list of one node; reqs_cond is
 * broadcast whenever a request leaves it.  notifiers_lock is a reader/writer
 * lock: writes hold it for reading while notifiers run.
 */
#include "block-int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct TrackedRequest {
    int64_t offset;
    int64_t bytes;
    uint64_t seq;
    bool serialising;
    TrackedRequest *next;
};

struct BlockNotifier {
    BlockBeforeWriteFunc fn;       /* a before-write notifier, or */
    BlockAfterWriteFunc after_fn;  /* an after-write one */
    void *opaque;
};

int bdrv_verbose;

static bool overlaps(const TrackedRequest *a, int64_t offset, int64_t bytes)
{
    return a->offset < offset + bytes && offset < a->offset + a->bytes;
}

static bool must_wait(BlockNode *bs, const TrackedRequest *me)
{
    for (TrackedRequest *r = bs->reqs; r; r = r->next) {
        if (r == me || r->seq > me->seq)
            continue;
        if ((r->serialising || me->serialising) &&
            overlaps(r, me->offset, me->bytes))
            return true;
    }
    return false;
}

static void track_begin(BlockNode *bs, TrackedRequest *req, int64_t offset,
                        int64_t bytes, bool serialising)
{
    *req = (TrackedRequest){
        .offset = offset,
        .bytes = bytes,
        .serialising = serialising,
    };
    g_mutex_lock(&bs->reqs_lock);
    req->seq = ++bs->reqs_seq;
    req->next = bs->reqs;
    bs->reqs = req;
    while (must_wait(bs, req))
        g_cond_wait(&bs->reqs_cond, &bs->reqs_lock);
    g_mutex_unlock(&bs->reqs_lock);
}

static void track_end(BlockNode *bs, TrackedRequest *req)
{
    bool wake = false;

    g_mutex_lock(&bs->reqs_lock);
    for (TrackedRequest **p = &bs->reqs; *p; p = &(*p)->next) {
        if (*p == req) {
            *p = req->next;
            break;
        }
    }
    /* Only serialising requests make others wait, and only they wait on
     * non-serialising ones: wake sleepers when either could be involved. */
    for (TrackedRequest *r = bs->reqs; r && !wake; r = r->next)
        wake = r->serialising;
    wake = wake || req->serialising;
    g_mutex_unlock(&bs->reqs_lock);
    if (wake)
        g_cond_broadcast(&bs->reqs_cond);
}

static bool status_cache_lookup(BlockNode *bs, int64_t offset,
                                int64_t bytes, int64_t *pnum)
{
    bool hit;

    g_mutex_lock(&bs->status_cache_lock);
    hit = offset >= bs->status_cache_start && offset < bs->status_cache_end;
    if (hit)
        *pnum = MIN(bytes, bs->status_cache_end - offset);
    g_mutex_unlock(&bs->status_cache_lock);
    return hit;
}

static uint64_t status_cache_generation(BlockNode *bs)
{
    uint64_t gen;

    g_mutex_lock(&bs->status_cache_lock);
    gen = bs->status_cache_gen;
    g_mutex_unlock(&bs->status_cache_lock);
    return gen;
}

/* Stores an extent found by a query that began at generation @gen, unless
 * a write-zeroes or discard ran meanwhile (the answer may be stale). */
static void status_cache_store(BlockNode *bs, int64_t start, int64_t end,
                               uint64_t gen)
{
    g_mutex_lock(&bs->status_cache_lock);
    if (bs->status_cache_gen == gen) {
        bs->status_cache_start = start;
        bs->status_cache_end = end;
    }
    g_mutex_unlock(&bs->status_cache_lock);
}

static void status_cache_drop(BlockNode *bs, int64_t offset, int64_t bytes)
{
    g_mutex_lock(&bs->status_cache_lock);
    bs->status_cache_gen++;
    if (offset < bs->status_cache_end &&
        bs->status_cache_start < offset + bytes)
        bs->status_cache_end = bs->status_cache_start;
    g_mutex_unlock(&bs->status_cache_lock);
}

static int64_t node_length(BlockNode *bs)
{
    return __atomic_load_n(&bs->total_bytes, __ATOMIC_RELAXED);
}

static int check_range(BlockNode *bs, int64_t offset, int64_t bytes)
{
    int64_t length = node_length(bs);

    if (offset < 0 || bytes < 0 || offset > length || bytes > length - offset)
        return -EINVAL;
    return 0;
}

static int check_write_range(BlockNode *bs, int64_t offset, int64_t bytes)
{
    if (!bs->growable)
        return check_range(bs, offset, bytes);
    if (offset < 0 || bytes < 0 || offset > BDRV_MAX_LENGTH ||
        bytes > BDRV_MAX_LENGTH - offset)
        return -EINVAL;
    return 0;
}

void bdrv_set_growable(BlockNode *bs)
{
    /* A filter passes writes past its end on to its child. */
    for (; bs; bs = bs->drv->is_filter ? bdrv_child(bs, "file") : NULL)
        bs->growable = true;
}

/* After a successful write that may have extended a growable node. */
static void note_length(BlockNode *bs, int64_t end)
{
    int64_t cur = node_length(bs);

    while (bs->growable && end > cur &&
           !__atomic_compare_exchange_n(&bs->total_bytes, &cur, end, false,
                                        __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        ;
}

void *bdrv_blockalign(BlockNode *bs, size_t size)
{
    size_t align = MAX(bs->limits.buffer_alignment, 4096);
    void *p;

    if (posix_memalign(&p, align, MAX(size, 1)) != 0)
        return NULL;
    return p;
}

uint32_t bdrv_buffer_alignment(BlockNode *bs)
{
    uint32_t m = MAX(bs->limits.buffer_alignment, 1);

    /* children is fixed after open */
    for (guint i = 0; i < bs->children->len; i++) {
        BlockChild *c = g_ptr_array_index(bs->children, i);
        m = MAX(m, bdrv_buffer_alignment(c->node));
    }
    return m;
}

bool buffer_is_zero(const void *buf, size_t len)
{
    const unsigned char *p = buf;
    const uint64_t *w;

    while (len && ((uintptr_t)p & 7)) {
        if (*p++)
            return false;
        len--;
    }
    w = (const uint64_t *)p;
    for (; len >= 64; len -= 64, w += 8)
        if (w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7])
            return false;
    for (p = (const unsigned char *)w; len; len--)
        if (*p++)
            return false;
    return true;
}

static bool is_aligned(BlockNode *bs, int64_t offset, int64_t bytes,
                       const void *buf)
{
    uint32_t a = bs->limits.request_alignment;
    uint32_t m = bs->limits.buffer_alignment;

    return offset % a == 0 && bytes % a == 0 &&
           (!buf || (uintptr_t)buf % m == 0);
}

/* Driver reads of an aligned range, split at max_transfer. */
static int driver_pread(BlockNode *bs, int64_t offset, int64_t bytes,
                        void *buf)
{
    uint64_t max = bs->limits.max_transfer ? bs->limits.max_transfer
                                           : (uint64_t)1 << 30;

    while (bytes > 0) {
        int64_t n = MIN((uint64_t)bytes, max);
        int ret = bs->drv->pread(bs, offset, n, buf);
        if (ret < 0)
            return ret;
        offset += n;
        bytes -= n;
        buf = (char *)buf + n;
    }
    return 0;
}

static int driver_flush(BlockNode *bs)
{
    int ret = 0;

    if (bs->no_flush)
        return 0;
    bdrv_debug_event(bs, BLKDBG_FLUSH_TO_OS);
    bdrv_debug_event(bs, BLKDBG_FLUSH_TO_DISK);
    if (bs->drv->flush)
        ret = bs->drv->flush(bs);
    for (guint i = 0; ret == 0 && i < bs->children->len; i++) {
        BlockChild *c = g_ptr_array_index(bs->children, i);
        ret = driver_flush(c->node);
    }
    return ret;
}

static int driver_pwrite(BlockNode *bs, int64_t offset, int64_t bytes,
                         const void *buf, int flags)
{
    uint64_t max = bs->limits.max_transfer ? bs->limits.max_transfer
                                           : (uint64_t)1 << 30;
    int drv_flags = flags & bs->drv->supported_write_flags;
    int ret = 0;

    while (bytes > 0 && ret == 0) {
        int64_t n = MIN((uint64_t)bytes, max);
        /* RWF_DSYNC-style FUA covers only its own chunk: pass it on each. */
        ret = bs->drv->pwrite(bs, offset, n, buf, drv_flags);
        offset += n;
        bytes -= n;
        buf = (const char *)buf + n;
    }
    if (ret == 0 && (flags & BDRV_REQ_FUA) && !(drv_flags & BDRV_REQ_FUA))
        ret = driver_flush(bs);
    return ret;
}

/* Reads an unaligned range through an aligned bounce buffer. */
static int read_bounced(BlockNode *bs, int64_t offset, int64_t bytes,
                        void *buf)
{
    uint32_t a = bs->limits.request_alignment;
    int64_t start = offset - offset % a;
    int64_t end = MIN(ROUND_UP(offset + bytes, (int64_t)a), node_length(bs));
    int64_t len = end - start;
    void *bounce = bdrv_blockalign(bs, len);
    int ret;

    if (!bounce)
        return -ENOMEM;
    ret = driver_pread(bs, start, len, bounce);
    if (ret == 0)
        memcpy(buf, (char *)bounce + (offset - start), bytes);
    free(bounce);
    return ret;
}

static int do_pread(BlockNode *bs, int64_t offset, int64_t bytes, void *buf)
{
    TrackedRequest req;
    int ret = check_range(bs, offset, bytes);

    if (ret < 0 || bytes == 0)
        return ret;
    track_begin(bs, &req, offset, bytes, false);
    if (is_aligned(bs, offset, bytes, buf))
        ret = driver_pread(bs, offset, bytes, buf);
    else
        ret = read_bounced(bs, offset, bytes, buf);
    track_end(bs, &req);
    return ret;
}

/* As do_pread, for the drivers that can read into a pipe; the range must
 * be aligned (no bounce buffer to patch in a pipe). */
static int do_pread_pipe(BlockNode *bs, int64_t offset, int64_t bytes,
                         int pipe_fd)
{
    uint64_t max = bs->limits.max_transfer ? bs->limits.max_transfer
                                           : (uint64_t)1 << 30;
    TrackedRequest req;
    int ret;

    if (!bs->drv->pread_pipe || !is_aligned(bs, offset, bytes, NULL))
        return -ENOTSUP;
    ret = check_range(bs, offset, bytes);
    if (ret < 0 || bytes == 0)
        return ret;
    track_begin(bs, &req, offset, bytes, false);
    while (ret == 0 && bytes > 0) {
        int64_t n = MIN((uint64_t)bytes, max);

        ret = bs->drv->pread_pipe(bs, offset, n, pipe_fd);
        offset += n;
        bytes -= n;
    }
    track_end(bs, &req);
    return ret;
}

static int run_notifiers(BlockNode *bs, BdrvWriteKind kind, int64_t offset,
                         int64_t bytes)
{
    int ret = 0;

    if (!g_atomic_pointer_get(&bs->notifiers))
        return 0;
    g_rw_lock_reader_lock(&bs->notifiers_lock);
    for (GList *l = bs->notifiers; l && ret == 0; l = l->next) {
        BlockNotifier *n = l->data;
        if (n->fn)
            ret = n->fn(bs, kind, offset, bytes, n->opaque);
    }
    g_rw_lock_reader_unlock(&bs->notifiers_lock);
    return ret;
}

static BdrvWriteThresholdFunc write_threshold_handler;

void bdrv_set_write_threshold_handler(BdrvWriteThresholdFunc fn)
{
    write_threshold_handler = fn;
}

void bdrv_set_write_threshold(BlockNode *bs, uint64_t offset)
{
    __atomic_store_n(&bs->write_threshold, offset, __ATOMIC_RELAXED);
}

uint64_t bdrv_write_threshold(BlockNode *bs)
{
    return __atomic_load_n(&bs->write_threshold, __ATOMIC_RELAXED);
}

/* Where QEMU checks it (bdrv_co_write_req_prepare): on each node, as the
 * request goes down to its driver.  Of two writes that cross at once, one
 * reports (QEMU may report both). */
static void check_write_threshold(BlockNode *bs, int64_t offset,
                                  int64_t bytes)
{
    uint64_t threshold = bdrv_write_threshold(bs);
    uint64_t end = (uint64_t)offset + (uint64_t)bytes;

    if (threshold == 0 || end <= threshold ||
        !__atomic_compare_exchange_n(&bs->write_threshold, &threshold, 0,
                                     false, __ATOMIC_RELAXED,
                                     __ATOMIC_RELAXED))
        return;
    if (write_threshold_handler)
        write_threshold_handler(bs, end - threshold, threshold);
}

/* The end of a write-like request that went through write_prepare: the
 * after-write notifiers, every one whatever the result (also when a
 * before-write notifier failed the request after others had run). */
static int write_finish(BlockNode *bs, BdrvWriteKind kind, int64_t offset,
                        int64_t bytes, int ret)
{
    if (!g_atomic_pointer_get(&bs->notifiers))
        return ret;
    g_rw_lock_reader_lock(&bs->notifiers_lock);
    for (GList *l = bs->notifiers; l; l = l->next) {
        BlockNotifier *n = l->data;
        if (n->after_fn) {
            int r = n->after_fn(bs, kind, offset, bytes, ret, n->opaque);
            if (ret == 0)
                ret = r;
        }
    }
    g_rw_lock_reader_unlock(&bs->notifiers_lock);
    return ret;
}

/* Read-modify-write of an unaligned write: the aligned envelope is read,
 * patched and written back while the request is serialising. */
static int write_rmw(BlockNode *bs, int64_t offset, int64_t bytes,
                     const void *buf, int flags)
{
    uint32_t a = bs->limits.request_alignment;
    int64_t start = offset - offset % a;
    int64_t end = ROUND_UP(offset + bytes, (int64_t)a);
    int64_t len = end - start;
    char *bounce = bdrv_blockalign(bs, len);
    int ret = 0;

    if (!bounce)
        return -ENOMEM;
    /* Only the first and last aligned blocks hold old bytes to keep. */
    if (start < offset)
        ret = driver_pread(bs, start, a, bounce);
    if (ret == 0 && offset + bytes < end &&
        (end - a > start || start == offset))
        ret = driver_pread(bs, end - a, a, bounce + len - a);
    if (ret == 0) {
        if (buf)
            memcpy(bounce + (offset - start), buf, bytes);
        else
            memset(bounce + (offset - start), 0, bytes);
        ret = driver_pwrite(bs, start, len, bounce, flags);
    }
    free(bounce);
    return ret;
}

static int write_prepare(BlockNode *bs, BdrvWriteKind kind, int64_t offset,
                         int64_t bytes)
{
    int ret = check_write_range(bs, offset, bytes);

    if (ret < 0)
        return ret;
    if (bs->read_only)
        return -EPERM;
    if (bytes == 0)
        return 0;
    return run_notifiers(bs, kind, offset, bytes);
}

static int pwrite_zeroes_tracked(BlockNode *bs, int64_t offset,
                                 int64_t bytes, int flags);

static int pwrite_prepared(BlockNode *bs, int64_t offset, int64_t bytes,
                           const void *buf, int flags);

static int do_pwrite(BlockNode *bs, int64_t offset, int64_t bytes,
                const void *buf, int flags)
{
    int ret;

    if (bs->detect_zeroes != BDRV_DETECT_ZEROES_OFF && bytes > 0 &&
        buffer_is_zero(buf, bytes)) {
        /* The caller's ordering promise (a fleecing target's
         * BDRV_REQ_SERIALISING) holds for the zero write too. */
        int zflags = flags & (BDRV_REQ_FUA | BDRV_REQ_SERIALISING);
        if (bs->detect_zeroes == BDRV_DETECT_ZEROES_UNMAP)
            zflags |= BDRV_REQ_MAY_UNMAP;
        return bdrv_pwrite_zeroes(bs, offset, bytes, zflags);
    }
    ret = write_prepare(bs, BDRV_WRITE, offset, bytes);
    if (ret < 0) /* a notifier may have failed it after others ran */
        return write_finish(bs, BDRV_WRITE, offset, bytes, ret);
    if (bytes == 0)
        return ret;
    return write_finish(bs, BDRV_WRITE, offset, bytes,
                        pwrite_prepared(bs, offset, bytes, buf, flags));
}

/* The write itself, once the notifiers let it go. */
static int pwrite_prepared(BlockNode *bs, int64_t offset, int64_t bytes,
                           const void *buf, int flags)
{
    TrackedRequest req;
    bool aligned;
    int ret;

    aligned = is_aligned(bs, offset, bytes, NULL);
    check_write_threshold(bs, offset, bytes);
    bdrv_debug_event(bs, BLKDBG_PWRITEV);
    if (aligned && (uintptr_t)buf % bs->limits.buffer_alignment == 0) {
        track_begin(bs, &req, offset, bytes, flags & BDRV_REQ_SERIALISING);
        ret = driver_pwrite(bs, offset, bytes, buf, flags);
    } else {
        uint32_t a = bs->limits.request_alignment;
        track_begin(bs, &req, offset - offset % a,
                    ROUND_UP(offset + bytes, (int64_t)a) - offset + offset % a,
                    !aligned || (flags & BDRV_REQ_SERIALISING));
        ret = write_rmw(bs, offset, bytes, buf, flags);
    }
    bdrv_debug_event(bs, BLKDBG_PWRITEV_DONE);
    /* Failed or not, the range may have changed. */
    bdrv_set_dirty(bs, offset, bytes);
    track_end(bs, &req);
    if (ret == 0)
        note_length(bs, offset + bytes);
    return ret;
}

/* Writes explicit zero buffers, for drivers without a zeroing primitive. */
static int write_zero_buffers(BlockNode *bs, int64_t offset, int64_t bytes,
                              int flags)
{
    int64_t chunk = MIN(bytes, 1 << 20);
    void *zeroes = bdrv_blockalign(bs, chunk);
    int ret = 0;

    if (!zeroes)
        return -ENOMEM;
    memset(zeroes, 0, chunk);
    while (bytes > 0 && ret == 0) {
        int64_t n = MIN(bytes, chunk);
        ret = driver_pwrite(bs, offset, n, zeroes, flags);
        offset += n;
        bytes -= n;
    }
    free(zeroes);
    return ret;
}

static int driver_pwrite_zeroes(BlockNode *bs, int64_t offset,
                                int64_t bytes, int flags)
{
    uint64_t max = bs->limits.max_pwrite_zeroes ? bs->limits.max_pwrite_zeroes
                                                : (uint64_t)1 << 30;
    int drv_flags = flags & bs->drv->supported_zero_flags;
    int ret = -ENOTSUP;

    if (bs->drv->pwrite_zeroes) {
        ret = 0;
        for (int64_t o = offset, left = bytes; left > 0 && ret == 0;) {
            int64_t n = MIN((uint64_t)left, max);
            ret = bs->drv->pwrite_zeroes(bs, o, n, drv_flags);
            o += n;
            left -= n;
        }
    }
    if (ret == -ENOTSUP) {
        if (flags & BDRV_REQ_NO_FALLBACK)
            return -ENOTSUP;
        return write_zero_buffers(bs, offset, bytes, flags & BDRV_REQ_FUA);
    }
    if (ret == 0 && (flags & BDRV_REQ_FUA) && !(drv_flags & BDRV_REQ_FUA))
        ret = driver_flush(bs);
    return ret;
}

static int pwrite_zeroes_tracked(BlockNode *bs, int64_t offset,
                                 int64_t bytes, int flags)
{
    uint32_t a = MAX(bs->limits.request_alignment,
                     bs->limits.pwrite_zeroes_alignment);
    int64_t head_end = MIN(ROUND_UP(offset, (int64_t)a), offset + bytes);
    int64_t tail_start = MAX(offset + bytes - (offset + bytes) % a, head_end);
    int ret = 0;

    if (!(flags & BDRV_REQ_NO_FALLBACK)) {
        /* Unaligned edges are written as explicit zeroes. */
        if (head_end > offset)
            ret = write_rmw(bs, offset, head_end - offset, NULL, 0);
        if (ret == 0 && offset + bytes > tail_start)
            ret = write_rmw(bs, tail_start, offset + bytes - tail_start,
                            NULL, 0);
        offset = head_end;
        bytes = tail_start - head_end;
    } else if (offset % a || bytes % a) {
        return -ENOTSUP;
    }
    if (ret == 0 && bytes > 0)
        ret = driver_pwrite_zeroes(bs, offset, bytes, flags);
    else if (ret == 0 && (flags & BDRV_REQ_FUA))
        ret = driver_flush(bs);
    return ret;
}

static int pwrite_zeroes_prepared(BlockNode *bs, int64_t offset,
                                  int64_t bytes, int flags);

static int do_pwrite_zeroes(BlockNode *bs, int64_t offset, int64_t bytes,
                       int flags)
{
    int ret = write_prepare(bs, BDRV_WRITE_ZEROES, offset, bytes);

    if (ret < 0) /* a notifier may have failed it after others ran */
        return write_finish(bs, BDRV_WRITE_ZEROES, offset, bytes, ret);
    if (bytes == 0)
        return ret;
    return write_finish(bs, BDRV_WRITE_ZEROES, offset, bytes,
                        pwrite_zeroes_prepared(bs, offset, bytes, flags));
}

static int pwrite_zeroes_prepared(BlockNode *bs, int64_t offset,
                                  int64_t bytes, int flags)
{
    TrackedRequest req;
    uint32_t a = bs->limits.request_alignment;
    int ret;
    /* discard=ignore never unmaps, not even for a write-zeroes that
     * allows it (QEMU since 8.0; qemu-nbd 7.2 still punched holes). */
    if (!bs->unmap)
        flags &= ~BDRV_REQ_MAY_UNMAP;
    if ((flags & BDRV_REQ_NO_FALLBACK) && !bdrv_can_fast_zero(bs))
        return -ENOTSUP;
    status_cache_drop(bs, offset, bytes);
    track_begin(bs, &req, offset - offset % a,
                ROUND_UP(offset + bytes, (int64_t)a) - offset + offset % a,
                !is_aligned(bs, offset, bytes, NULL) ||
                    (flags & BDRV_REQ_SERIALISING));
    check_write_threshold(bs, offset, bytes);
    bdrv_debug_event(bs, BLKDBG_PWRITEV_ZERO);
    ret = pwrite_zeroes_tracked(bs, offset, bytes, flags);
    /* Failed or not, the range may have changed. */
    bdrv_set_dirty(bs, offset, bytes);
    track_end(bs, &req);
    if (ret == 0)
        note_length(bs, offset + bytes);
    return ret;
}

static int pdiscard_prepared(BlockNode *bs, int64_t offset, int64_t bytes);

static int do_pdiscard(BlockNode *bs, int64_t offset, int64_t bytes)
{
    int ret = write_prepare(bs, BDRV_DISCARD, offset, bytes);

    if (ret < 0) /* a notifier may have failed it after others ran */
        return write_finish(bs, BDRV_DISCARD, offset, bytes, ret);
    if (bytes == 0)
        return ret;
    if (!bs->unmap)
        return write_finish(bs, BDRV_DISCARD, offset, bytes, 0);
    return write_finish(bs, BDRV_DISCARD, offset, bytes,
                        pdiscard_prepared(bs, offset, bytes));
}

static int pdiscard_prepared(BlockNode *bs, int64_t offset, int64_t bytes)
{
    TrackedRequest req;
    uint32_t a = MAX(bs->limits.request_alignment,
                     bs->limits.pdiscard_alignment);
    int64_t start, end;
    int ret = 0;
    /* Discard is advisory: only whole granules are passed down.  But the
     * whole request counts as a change for dirty bitmaps, whatever the
     * driver made of it, as in QEMU (bdrv_co_write_req_finish). */
    if (bs->drv->pdiscard) /* QEMU: once it knows the driver discards */
        check_write_threshold(bs, offset, bytes);
    start = ROUND_UP(offset, (int64_t)a);
    end = offset + bytes == node_length(bs)
              ? offset + bytes
              : offset + bytes - (offset + bytes) % a;
    if (end <= start || !bs->drv->pdiscard) {
        bdrv_set_dirty(bs, offset, bytes);
        return 0;
    }
    status_cache_drop(bs, start, end - start);
    track_begin(bs, &req, start, end - start, false);
    for (int64_t o = start, max = bs->limits.max_pdiscard
                                      ? bs->limits.max_pdiscard
                                      : (int64_t)1 << 30;
         o < end && ret == 0;) {
        int64_t n = MIN(end - o, max);
        ret = bs->drv->pdiscard(bs, o, n);
        o += n;
    }
    bdrv_set_dirty(bs, offset, bytes);
    track_end(bs, &req);
    return ret == -ENOTSUP ? 0 : ret;
}

static int do_flush(BlockNode *bs)
{
    if (bs->read_only)
        return 0;
    return driver_flush(bs);
}

static int do_prefetch(BlockNode *bs, int64_t offset, int64_t bytes)
{
    int ret = check_range(bs, offset, bytes);

    if (ret < 0 || bytes == 0 || !bs->drv->prefetch)
        return ret;
    return bs->drv->prefetch(bs, offset, bytes);
}

/* Protocol drivers are asked up to the end of the node, so that one
 * answer covers as much data as possible, and data extents are cached. */
static int protocol_block_status(BlockNode *bs, int64_t offset,
                                 int64_t bytes, int64_t *pnum)
{
    const int data = BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED;
    uint64_t gen;
    int ret;

    if (status_cache_lookup(bs, offset, bytes, pnum))
        return data;
    gen = status_cache_generation(bs);
    ret = bs->drv->block_status(bs, offset, node_length(bs) - offset, pnum);
    if (ret == data && *pnum > 0)
        status_cache_store(bs, offset, offset + *pnum, gen);
    *pnum = MIN(*pnum, bytes);
    return ret;
}

static int do_block_status(BlockNode *bs, int64_t offset, int64_t bytes,
                      int64_t *pnum)
{
    TrackedRequest req;
    int ret = check_range(bs, offset, bytes);

    *pnum = 0;
    if (ret < 0)
        return ret;
    if (bytes == 0)
        return -EINVAL;
    if (!bs->drv->block_status && bs->drv->is_filter &&
        bdrv_child(bs, "file"))
        return bdrv_block_status(bdrv_child(bs, "file"), offset, bytes, pnum);
    if (!bs->drv->block_status) {
        *pnum = bytes;
        return BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED;
    }
    /* Tracked like a read: a serialising write (a fleecing overlay's
     * copy-before-write) waits for it, so an answer taken from the live
     * backing ("zero", and the reader sends a hole) is never given after
     * that backing changed under an overlay cluster not yet filled. */
    track_begin(bs, &req, offset, bytes, false);
    if (bs->drv->is_protocol)
        ret = protocol_block_status(bs, offset, bytes, pnum);
    else
        ret = bs->drv->block_status(bs, offset, bytes, pnum);
    track_end(bs, &req);
    if (ret >= 0 && (*pnum <= 0 || *pnum > bytes))
        *pnum = bytes; /* a driver bug must not loop the caller */
    return ret;
}

void bdrv_debug_event(BlockNode *bs, BlkdebugEvent event)
{
    if (bs && bs->drv->debug_event)
        bs->drv->debug_event(bs, event);
}

BlockNotifier *bdrv_add_before_write_notifier(BlockNode *bs,
                                              BlockBeforeWriteFunc fn,
                                              void *opaque)
{
    BlockNotifier *n = g_new0(BlockNotifier, 1);

    n->fn = fn;
    n->opaque = opaque;
    g_rw_lock_writer_lock(&bs->notifiers_lock);
    bs->notifiers = g_list_append(bs->notifiers, n);
    g_rw_lock_writer_unlock(&bs->notifiers_lock);
    return n;
}

BlockNotifier *bdrv_add_after_write_notifier(BlockNode *bs,
                                             BlockAfterWriteFunc fn,
                                             void *opaque)
{
    BlockNotifier *n = g_new0(BlockNotifier, 1);

    n->after_fn = fn;
    n->opaque = opaque;
    g_rw_lock_writer_lock(&bs->notifiers_lock);
    bs->notifiers = g_list_append(bs->notifiers, n);
    g_rw_lock_writer_unlock(&bs->notifiers_lock);
    return n;
}

void bdrv_remove_before_write_notifier(BlockNode *bs, BlockNotifier *n)
{
    g_rw_lock_writer_lock(&bs->notifiers_lock);
    bs->notifiers = g_list_remove(bs->notifiers, n);
    g_rw_lock_writer_unlock(&bs->notifiers_lock);
    g_free(n);
}

/*
 * The qemu:allocation-depth answer, as QEMU's bdrv_is_allocated_above(bs,
 * NULL, false, ...) gives it: walk down the "backing" children until a
 * layer has the range allocated.  A range past the end of a shorter
 * backing layer reads as zeroes that this layer supplies, so QEMU counts
 * it as allocated there, and so do we.
 */
static int do_allocation_depth(BlockNode *bs, int64_t offset, int64_t bytes,
                          int64_t *pnum)
{
    int depth = 0;

    *pnum = 0;
    for (BlockNode *node = bdrv_skip_filters(bs); node;
         node = bdrv_skip_filters(bdrv_child(node, "backing"))) {
        int64_t length = bdrv_getlength(node);
        int ret;

        depth++;
        if (length < 0)
            return length;
        if (depth > 1 && offset >= length) {
            *pnum = bytes;
            return depth;
        }
        if (depth > 1)
            bytes = MIN(bytes, length - offset);
        ret = bdrv_block_status(node, offset, bytes, pnum);
        if (ret < 0 || (ret & BDRV_BLOCK_ALLOCATED))
            return ret < 0 ? ret : depth;
        bytes = *pnum; /* the next layer answers for this run only */
    }
    *pnum = bytes;
    return 0;
}

/* --- statistics (query-blockstats): relaxed atomics, no lock ------------ */

static void stat_add(uint64_t *counter, uint64_t n)
{
    __atomic_add_fetch(counter, n, __ATOMIC_RELAXED);
}

/* When a request starts, for its latency (monotonic, microseconds), or 0.
 * Only requests that enter the graph are timed: as QEMU times requests at
 * the device and not in its nodes, and because clock reads at every layer
 * (26 ns each here) were 2-4 % of the server's CPU per 4k write.  Nested
 * requests still count operations and bytes. */
static gint64 request_start(void)
{
    return bdrv_io_outermost() ? g_get_monotonic_time() : 0;
}

/* Counts a request that entered @bs at @start (request_start): as QEMU,
 * out-of-range requests are "invalid", other errors "failed". */
static void account(BlockNode *bs, int kind, int64_t offset, int64_t bytes,
                    int ret, gint64 start)
{
    BdrvStats *st = &bs->stats;

    if (ret == -EINVAL) {
        stat_add(&st->invalid[kind], 1);
        return;
    }
    if (ret < 0) {
        stat_add(&st->failed[kind], 1);
        return;
    }
    stat_add(&st->ops[kind], 1);
    stat_add(&st->bytes[kind], bytes);
    if (start)
        stat_add(&st->total_time_ns[kind],
                 (uint64_t)(g_get_monotonic_time() - start) * 1000);
    if (kind == BDRV_ACCT_WRITE) {
        uint64_t end = offset + bytes;
        uint64_t cur = __atomic_load_n(&st->wr_highest_offset,
                                       __ATOMIC_RELAXED);
        while (end > cur &&
               !__atomic_compare_exchange_n(&st->wr_highest_offset, &cur, end,
                                            false, __ATOMIC_RELAXED,
                                            __ATOMIC_RELAXED))
            ;
    }
}

/* --- entry points: each outermost call is counted for drained sections -- */

int bdrv_pread(BlockNode *bs, int64_t offset, int64_t bytes, void *buf)
{
    gint64 start = request_start();
    bool counted = bdrv_io_enter(&bs);
    int ret = do_pread(bs, offset, bytes, buf);

    account(bs, BDRV_ACCT_READ, offset, bytes, ret, start);
    bdrv_io_leave(bs, counted);
    return ret;
}

int bdrv_pread_pipe(BlockNode *bs, int64_t offset, int64_t bytes,
                    int pipe_fd)
{
    gint64 start = request_start();
    bool counted = bdrv_io_enter(&bs);
    int ret = do_pread_pipe(bs, offset, bytes, pipe_fd);

    /* A read this node cannot do is redone with bdrv_pread, and counted
     * there. */
    if (ret != -ENOTSUP && ret != -EAGAIN)
        account(bs, BDRV_ACCT_READ, offset, bytes, ret, start);
    bdrv_io_leave(bs, counted);
    return ret;
}

int bdrv_pwrite(BlockNode *bs, int64_t offset, int64_t bytes,
                const void *buf, int flags)
{
    gint64 start = request_start();
    bool counted = bdrv_io_enter(&bs);
    int ret = do_pwrite(bs, offset, bytes, buf, flags);

    account(bs, BDRV_ACCT_WRITE, offset, bytes, ret, start);
    bdrv_io_leave(bs, counted);
    return ret;
}

/* Counted as a write, as QEMU's block backends count them. */
int bdrv_pwrite_zeroes(BlockNode *bs, int64_t offset, int64_t bytes,
                       int flags)
{
    gint64 start = request_start();
    bool counted = bdrv_io_enter(&bs);
    int ret = do_pwrite_zeroes(bs, offset, bytes, flags);

    account(bs, BDRV_ACCT_WRITE, offset, bytes, ret, start);
    bdrv_io_leave(bs, counted);
    return ret;
}

int bdrv_pdiscard(BlockNode *bs, int64_t offset, int64_t bytes)
{
    gint64 start = request_start();
    bool counted = bdrv_io_enter(&bs);
    int ret = do_pdiscard(bs, offset, bytes);

    account(bs, BDRV_ACCT_UNMAP, offset, bytes, ret, start);
    bdrv_io_leave(bs, counted);
    return ret;
}

int bdrv_flush(BlockNode *bs)
{
    gint64 start = request_start();
    bool counted = bdrv_io_enter(&bs);
    int ret = do_flush(bs);

    account(bs, BDRV_ACCT_FLUSH, 0, 0, ret, start);
    bdrv_io_leave(bs, counted);
    return ret;
}

int bdrv_prefetch(BlockNode *bs, int64_t offset, int64_t bytes)
{
    bool counted = bdrv_io_enter(&bs);
    int ret = do_prefetch(bs, offset, bytes);

    bdrv_io_leave(bs, counted);
    return ret;
}

int bdrv_block_status(BlockNode *bs, int64_t offset, int64_t bytes,
                      int64_t *pnum)
{
    bool counted = bdrv_io_enter(&bs);
    int ret = do_block_status(bs, offset, bytes, pnum);

    bdrv_io_leave(bs, counted);
    return ret;
}

int bdrv_allocation_depth(BlockNode *bs, int64_t offset, int64_t bytes,
                          int64_t *pnum)
{
    bool counted = bdrv_io_enter(&bs);
    int ret = do_allocation_depth(bs, offset, bytes, pnum);

    bdrv_io_leave(bs, counted);
    return ret;
}
