/*
 * block-copy.c - the copy engine shared by the backup job's background
 * workers and its copy-before-write notifier.
 *
 * Design notes.
 *
 * Two bitmaps of one bit per chunk, under s->lock: "done" (the target holds
 * the chunk's data of the point in time) and "busy" (someone is copying it
 * now).  Whoever needs a chunk that is neither claims it by setting busy,
 * copies it without the lock, then clears busy, sets done on success and
 * broadcasts s->cond.  Whoever needs a busy chunk waits on s->cond and looks
 * again: after a failure the chunk is free once more, and the waiter copies
 * it itself.  So a chunk is never copied twice, and never copied at the same
 * time by two threads.
 *
 * Nothing here waits for anything but a copy already in flight, and a copy
 * in flight only waits for the source read and the target write, which
 * never wait on a busy chunk: there is no cycle.  (block/io.c runs
 * notifiers before tracking the guest's write, so the read of the old data
 * never waits behind the write it is protecting.)
 *
 * Point-in-time readers (snapshot-access over a copy-before-write node)
 * read a chunk from the target once it is done, and from the source while
 * it is not.  Such a read "freezes" its chunks (a run per read, under
 * s->lock): a frozen chunk is never claimed, so no copy-before-write for
 * it can finish, and the guest write that waits for it cannot change the
 * source under the reader.  A reader in turn waits for busy chunks, which
 * are about to be done.  Freezing and claiming exclude each other under
 * one lock; a reader waits only for copies in flight and a copy never
 * waits for a reader that waits for it, so there is no cycle.  A chunk
 * the reader no longer needs (snapshot-access discard) is "gone": done
 * without a copy, and no longer readable.
 *
 * The store.  Every claim of a copy-before-write takes its bytes' room in
 * the store ("kept", under s->lock) and a failed copy gives it back; a
 * chunk copied is "stored" until the reader forgets it, which frees its
 * room and broadcasts s->cond.  A chunk skipped (sync=top: not allocated
 * in the source's top layer) is done but not stored: the target holds
 * nothing of it, so it takes no room, and a copy-before-write marks such
 * chunks done before it claims anything (a store near its limit must not
 * refuse a write that needs no room).  A background claim takes no room
 * up front: it may be mostly skipped, and only its end knows what it
 * keeps (background copies are never limited, only counted).  A
 * copy-before-write claims only the chunks that fit under the limit;
 * with nothing fitting it fails (break-snapshot) or waits on s->cond
 * for a forget, claiming nothing meanwhile, so a reader that forgets never
 * waits for it: still no cycle.  It polls, though, because the one thing
 * that could wait for it, a drained section of the source, cannot wake it.
 *
 * Chunks are as fine as the target allows (a raw file: 4 KiB): a 4 KiB
 * guest write copies 4 KiB, not a 64 KiB cluster around it, and waits only
 * for copies of the pages it overwrites.
 *
 * A run of chunks goes as one read and one write of up to max_buffer bytes;
 * buffers come from a small pool so that copies do not mmap and fault in a
 * fresh megabyte each time.
 */
#include "block/block-copy.h"
#include "block-int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ROUND_UP(n, a) ((((n) + (a) - 1) / (a)) * (a))
/* The finest chunk: a guest page.  Finer targets (512-byte raw files) gain
 * nothing, as guests write whole pages. */
#define CLUSTER_MIN 4096
/* At most this many chunks (a 1 TiB disk: 64 KiB chunks): four bitmaps of
 * 2 MiB each. */
#define MAX_CHUNKS (1LL << 24)
/* A guest write waiting for room in a full store looks this often whether
 * a drained section of the source waits for it. */
#define ROOM_POLL_US (50 * 1000)
/* With a cbw-timeout, copies run on at most this many threads (a hung
 * target holds one each): later ones queue, and time out queued. */
#define MAX_COPIERS 16
#define MAX_BUFFER (1024 * 1024)
/* The longest run of chunks one copy claims (max_buffer bytes). */
#define MAX_RUN_CHUNKS (MAX_BUFFER / CLUSTER_MIN)
#define POOL_MAX 8
/* A background copy that yields to the guest writes the target in pieces
 * this long: a write into a page-cached file holds the file's lock all
 * along (i_rwsem), and a guest's copy-before-write to the same target
 * waits for it, spinning.  At 1 MiB that wait was most of what the copies
 * cost the guest (4k QD32 writes during sync=full: 72k IOPS, 86k in 16 KiB
 * pieces, at the same 1.1 GiB/s and the same CPU per MiB). */
#define YIELDING_WRITE_PIECE (16 * 1024)
/* Block status queries that may decide that the target reads as zero. */
#define ZERO_PROBE_EXTENTS 1024

struct BlockCopyState {
    BlockNode *source;
    BlockNode *target;
    int64_t len;
    int64_t cluster;
    int64_t nchunks;
    int64_t max_buffer;
    size_t buf_align;
    bool skip_unallocated;
    bool target_is_zero;
    bool target_cached; /* written through the page cache */
    int write_flags;
    int zero_flags;
    BlockCopyProgressFunc progress;
    void *progress_opaque;

    GMutex lock;
    GCond cond;        /* broadcast when busy chunks are released */
    int waiters;       /* threads waiting on cond, guarded by lock */
    uint64_t *done;    /* bitmaps of nchunks bits, guarded by lock */
    uint64_t *busy;
    uint64_t *frozen;  /* read from the source by a snapshot reader now */
    uint64_t *gone;    /* discarded by the snapshot reader */
    GArray *freezes;   /* of FreezeRange: the runs readers hold frozen */
    int64_t ndone;     /* guarded by lock; read atomically for the fast path */
    GSList *pool;      /* free buffers of max_buffer bytes, guarded by lock */
    int pool_len;

    /* The store (see block_copy_set_store_limit), guarded by lock. */
    uint64_t *stored;  /* copied chunks the target still keeps */
    int64_t kept;      /* their bytes, plus those of copies in flight */
    int64_t peak;
    int64_t max_store; /* 0: no limit */
    BlockCopyStoreFull on_full;
    int64_t timeout_ns; /* for the waits of a copy-before-write; 0: none */
    bool stop_waiting;
    int readers;        /* snapshot-access nodes that may free room */
    GThreadPool *copiers; /* with a timeout: copies a write may give up */

    /* Counters, atomic. */
    int64_t copies, copied_bytes, guest_waits;
    int64_t guest_wait_ns, guest_wait_max_ns, store_full_hits;
};

typedef enum { COPY_DATA, COPY_ZERO, COPY_SKIP } CopyKind;

/* Chunks [first, first + n) frozen by one read. */
typedef struct FreezeRange {
    int64_t first, n;
} FreezeRange;

/* --- bitmaps ------------------------------------------------------------ */

static bool bit_test(const uint64_t *map, int64_t i)
{
    return map[i / 64] & (1ULL << (i % 64));
}

/* Under s->lock; atomic because block_copy_all_done reads "done" without
 * it. */
static void bits_set(uint64_t *map, int64_t i, int64_t n, bool on)
{
    while (n > 0) {
        int64_t bit = i % 64, k = MIN(64 - bit, n);
        uint64_t mask = (k == 64 ? ~0ULL : (1ULL << k) - 1) << bit;
        if (on)
            __atomic_or_fetch(&map[i / 64], mask, __ATOMIC_RELEASE);
        else
            __atomic_and_fetch(&map[i / 64], ~mask, __ATOMIC_RELEASE);
        i += k;
        n -= k;
    }
}

/* s->cond with a count of its waiters, so that the common release with
 * nobody waiting costs no futex system call (GCond makes one on every
 * broadcast). */
static void cond_wait_locked(BlockCopyState *s, gint64 until)
{
    s->waiters++;
    if (until == G_MAXINT64)
        g_cond_wait(&s->cond, &s->lock);
    else
        g_cond_wait_until(&s->cond, &s->lock, until);
    s->waiters--;
}

static void wake_locked(BlockCopyState *s)
{
    if (s->waiters)
        g_cond_broadcast(&s->cond);
}

static bool chunk_free(BlockCopyState *s, int64_t i)
{
    return !bit_test(s->done, i) && !bit_test(s->busy, i) &&
           !bit_test(s->frozen, i);
}

/* The first chunk at or after @i that is neither done nor busy, or -1. */
static int64_t find_free(BlockCopyState *s, int64_t i)
{
    int64_t words = (s->nchunks + 63) / 64;

    for (int64_t w = i / 64; w < words; w++) {
        uint64_t free_bits = ~(s->done[w] | s->busy[w] | s->frozen[w]);
        if (w == i / 64)
            free_bits &= ~0ULL << (i % 64);
        if (free_bits) {
            int64_t k = w * 64 + __builtin_ctzll(free_bits);
            return k < s->nchunks ? k : -1;
        }
    }
    return -1;
}

/* --- set-up ------------------------------------------------------------- */

/* The target's allocation granularity: a write smaller than it would make a
 * format driver copy-on-write the rest of its cluster, perhaps from a
 * backing file that is the live source. */
static int64_t copy_cluster_size(BlockNode *target, int64_t len)
{
    const BlockLimits *l = bdrv_limits(target);
    int64_t c = MAX(l->pdiscard_alignment, l->pwrite_zeroes_alignment);

    c = MAX(c, (int64_t)l->request_alignment);
    c = MAX(c, (len + MAX_CHUNKS - 1) / MAX_CHUNKS);
    if (c <= CLUSTER_MIN)
        return CLUSTER_MIN;
    return (int64_t)1 << g_bit_storage(c - 1); /* a power of two */
}

/* Does all of @bs read as zeroes?  A fresh image does, so that zero ranges
 * of the source need not be written at all. */
static bool node_reads_zero(BlockNode *bs)
{
    int64_t len = bdrv_getlength(bs), pos = 0, pnum;

    for (int i = 0; pos < len && i < ZERO_PROBE_EXTENTS; i++) {
        int st = bdrv_block_status(bs, pos, len - pos, &pnum);
        if (st < 0 || !(st & BDRV_BLOCK_ZERO))
            return false;
        pos += pnum;
    }
    return pos >= len;
}

/* Whether the file under @bs (down its "file" children) is opened with
 * cache.direct. */
static bool bottom_cache_direct(BlockNode *bs)
{
    while (bdrv_child(bs, "file"))
        bs = bdrv_child(bs, "file");
    return bdrv_cache_direct(bs);
}

/* Is @node @bs or below it?  Then reads of @bs may reach @node. */
static bool node_below(BlockNode *bs, BlockNode *node)
{
    static const char *const kids[] = { "file", "backing" };

    if (!bs)
        return false;
    if (bs == node)
        return true;
    for (size_t i = 0; i < G_N_ELEMENTS(kids); i++)
        if (node_below(bdrv_child(bs, kids[i]), node))
            return true;
    return false;
}

BlockCopyState *block_copy_state_new(BlockNode *source, BlockNode *target,
                                     bool skip_unallocated, GError **errp)
{
    BlockCopyState *s;
    int64_t len = bdrv_getlength(source);

    if (len < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                    "Cannot get the length of '%s': %s",
                    bdrv_node_name(source), g_strerror(-len));
        return NULL;
    }
    s = g_new0(BlockCopyState, 1);
    s->source = source;
    s->target = target;
    s->len = len;
    s->cluster = copy_cluster_size(target, len);
    s->nchunks = (len + s->cluster - 1) / s->cluster;
    s->max_buffer = MAX(MAX_BUFFER, s->cluster);
    s->buf_align = MAX(MAX(bdrv_limits(source)->buffer_alignment,
                           bdrv_limits(target)->buffer_alignment), 4096);
    s->skip_unallocated = skip_unallocated;
    /* A target that reads through to the source (fleecing) must not let a
     * reader of the target see the source change under it: its writes
     * wait for reads of the target already in flight.  Nor is it ever
     * "known zero": its zeroes are the source's, which will change. */
    s->write_flags = node_below(target, source) ? BDRV_REQ_SERIALISING : 0;
    s->target_is_zero = !node_below(target, source) &&
                        bdrv_has_zero_init(target) && node_reads_zero(target);
    /* Unmapping is only safe where a hole reads as zero, not as backing
     * (attached, or named in the image for whoever opens it next). */
    s->zero_flags = bdrv_has_zero_init(target) ? BDRV_REQ_MAY_UNMAP : 0;
    s->target_cached = !bottom_cache_direct(target);
    g_mutex_init(&s->lock);
    g_cond_init(&s->cond);
    s->done = g_new0(uint64_t, (s->nchunks + 63) / 64 + 1);
    s->busy = g_new0(uint64_t, (s->nchunks + 63) / 64 + 1);
    s->frozen = g_new0(uint64_t, (s->nchunks + 63) / 64 + 1);
    s->gone = g_new0(uint64_t, (s->nchunks + 63) / 64 + 1);
    s->stored = g_new0(uint64_t, (s->nchunks + 63) / 64 + 1);
    s->freezes = g_array_new(FALSE, FALSE, sizeof(FreezeRange));
    return s;
}

void block_copy_state_free(BlockCopyState *s)
{
    if (!s)
        return;
    /* Copies given up on still hold their chunks: they end first. */
    if (s->copiers)
        g_thread_pool_free(s->copiers, FALSE, TRUE);
    g_slist_free_full(s->pool, free);
    g_free(s->done);
    g_free(s->busy);
    g_free(s->frozen);
    g_free(s->gone);
    g_free(s->stored);
    g_array_free(s->freezes, TRUE);
    g_mutex_clear(&s->lock);
    g_cond_clear(&s->cond);
    g_free(s);
}

void block_copy_set_progress(BlockCopyState *s, BlockCopyProgressFunc fn,
                             void *opaque)
{
    s->progress = fn;
    s->progress_opaque = opaque;
}

int64_t block_copy_cluster_size(BlockCopyState *s)
{
    return s->cluster;
}

bool block_copy_target_is_zero(BlockCopyState *s)
{
    return s->target_is_zero;
}

int64_t block_copy_remaining(BlockCopyState *s)
{
    int64_t left;

    g_mutex_lock(&s->lock);
    left = (s->nchunks - s->ndone) * s->cluster;
    g_mutex_unlock(&s->lock);
    return MIN(left, s->len);
}

/* --- what to copy ------------------------------------------------------- */

/* Sets in @keep the chunks that hold a dirty byte of @bm. */
static void mark_dirty_chunks(BlockCopyState *s, BdrvDirtyBitmap *bm,
                              uint64_t *keep)
{
    int64_t off = bdrv_dirty_bitmap_next_dirty(bm, 0), n;
    bool dirty;

    while (off >= 0 && off < s->len &&
           bdrv_dirty_bitmap_next_extent(bm, off, s->len, &dirty, &n)) {
        int64_t first = off / s->cluster;
        bits_set(keep, first, (off + n - 1) / s->cluster - first + 1, true);
        off = bdrv_dirty_bitmap_next_dirty(bm, off + n);
    }
}

int64_t block_copy_limit_to_dirty(BlockCopyState *s, BdrvDirtyBitmap *bm,
                                  BdrvDirtyBitmap *also)
{
    uint64_t *keep = g_new0(uint64_t, (s->nchunks + 63) / 64 + 1);
    int64_t left_out = 0, n = 0;

    mark_dirty_chunks(s, bm, keep);
    if (also)
        mark_dirty_chunks(s, also, keep);
    g_mutex_lock(&s->lock);
    for (int64_t i = 0; i < s->nchunks; i++) {
        if (bit_test(keep, i) || !chunk_free(s, i))
            continue;
        bits_set(s->done, i, 1, true);
        bits_set(s->gone, i, 1, true); /* a snapshot reader cannot have it */
        left_out += MIN((i + 1) * s->cluster, s->len) - i * s->cluster;
        n++;
    }
    __atomic_store_n(&s->ndone, s->ndone + n, __ATOMIC_RELEASE);
    g_mutex_unlock(&s->lock);
    g_free(keep);
    return left_out;
}

bool block_copy_next_pending(BlockCopyState *s, int64_t from,
                             int64_t *offset, int64_t *bytes)
{
    int64_t i = MAX(from, 0) / s->cluster, n = 0;

    g_mutex_lock(&s->lock);
    while (i < s->nchunks && bit_test(s->done, i))
        i++;
    while (i + n < s->nchunks && !bit_test(s->done, i + n))
        n++;
    g_mutex_unlock(&s->lock);
    if (i >= s->nchunks)
        return false;
    *offset = i * s->cluster;
    *bytes = MIN((i + n) * s->cluster, s->len) - *offset;
    return true;
}

/* --- buffers ------------------------------------------------------------ */

static void *buffer_get(BlockCopyState *s)
{
    void *buf = NULL;

    g_mutex_lock(&s->lock);
    if (s->pool) {
        buf = s->pool->data;
        s->pool = g_slist_delete_link(s->pool, s->pool);
        s->pool_len--;
    }
    g_mutex_unlock(&s->lock);
    if (!buf && posix_memalign(&buf, s->buf_align, s->max_buffer) != 0)
        buf = NULL;
    return buf;
}

static void buffer_put(BlockCopyState *s, void *buf)
{
    g_mutex_lock(&s->lock);
    if (s->pool_len < POOL_MAX) {
        s->pool = g_slist_prepend(s->pool, buf);
        s->pool_len++;
        buf = NULL;
    }
    g_mutex_unlock(&s->lock);
    free(buf);
}

/* --- copying ------------------------------------------------------------ */

/* What to do with the chunks from @pos (chunk aligned) on, and for how many
 * bytes (whole chunks, or up to @end).  Partly zero or unallocated chunks
 * are copied as data.
 *
 * A copy-before-write (@cbw) asks block status only when it must know the
 * allocation (sync=top): on a file it is a SEEK_HOLE, linear in the file
 * size on tmpfs (30 ms for 1 GiB), which would stall guest writes; zero
 * data is found in the buffer instead (copy_data). */
static CopyKind classify(BlockCopyState *s, int64_t pos, int64_t end,
                         bool cbw, int64_t *n)
{
    int64_t pnum;
    int st;
    CopyKind kind = COPY_DATA;

    if (cbw && !s->skip_unallocated) {
        *n = end - pos;
        return COPY_DATA;
    }
    st = bdrv_block_status(s->source, pos, end - pos, &pnum);
    if (st < 0) {
        *n = end - pos; /* the read will say what is wrong */
        return COPY_DATA;
    }
    if (s->skip_unallocated && !(st & BDRV_BLOCK_ALLOCATED))
        kind = COPY_SKIP;
    else if (st & BDRV_BLOCK_ZERO)
        kind = COPY_ZERO;
    if (kind == COPY_DATA) {
        *n = MIN(ROUND_UP(pnum, s->cluster), end - pos);
    } else if (pos + pnum >= end) {
        *n = end - pos;
    } else {
        *n = pnum / s->cluster * s->cluster;
        if (*n == 0) {
            *n = MIN(s->cluster, end - pos);
            kind = COPY_DATA;
        }
    }
    return kind;
}

static int write_zeroes(BlockCopyState *s, int64_t pos, int64_t n,
                        bool *error_is_read)
{
    *error_is_read = false;
    if (s->target_is_zero)
        return 0;
    return bdrv_pwrite_zeroes(s->target, pos, n,
                              s->zero_flags | s->write_flags);
}

/* Writes in pieces of at most @piece bytes (0: one write). */
static int write_data(BlockCopyState *s, int64_t pos, int64_t n,
                      const char *buf, int64_t piece, bool *error_is_read,
                      int64_t *copied)
{
    int64_t step = piece > 0 ? piece : n;

    for (int64_t done = 0, len; done < n; done += len) {
        int ret;
        len = MIN(step, n - done);
        ret = bdrv_pwrite(s->target, pos + done, len, buf + done,
                          s->write_flags);
        if (ret < 0) {
            *error_is_read = false;
            return ret;
        }
        *copied += len;
    }
    return 0;
}

/* The bytes from @p on (at most @n) that are alike, whole chunks of zeroes
 * or of data; *@zero says which. */
static int64_t alike_run(BlockCopyState *s, const char *p, int64_t n,
                         bool *zero)
{
    int64_t len = MIN(s->cluster, n);

    *zero = buffer_is_zero(p, len);
    while (len < n) {
        int64_t c = MIN(s->cluster, n - len);
        if (buffer_is_zero(p + len, c) != *zero)
            break;
        len += c;
    }
    return len;
}

/* Reads and writes [pos, pos + n); with @detect_zero, chunks of zeroes in
 * the buffer become write_zeroes, so that the target stays as sparse as
 * the source.  *@copied: the bytes written as data. */
static int copy_data(BlockCopyState *s, int64_t pos, int64_t n, char *buf,
                     bool detect_zero, int64_t piece, bool *error_is_read,
                     int64_t *copied)
{
    int ret = bdrv_pread(s->source, pos, n, buf);

    if (ret < 0) {
        *error_is_read = true;
        return ret;
    }
    if (!detect_zero)
        return write_data(s, pos, n, buf, piece, error_is_read, copied);
    for (int64_t done = 0, len; done < n && ret == 0; done += len) {
        bool zero;
        len = alike_run(s, buf + done, n - done, &zero);
        ret = zero ? write_zeroes(s, pos + done, len, error_is_read)
                   : write_data(s, pos + done, len, buf + done, piece,
                                error_is_read, copied);
    }
    return ret;
}

/* Copies [start, end) (a claimed run, at most max_buffer bytes), writing
 * data in pieces of at most @piece bytes (0: whole).  Sets in @skipped (a
 * bitmap of the run's chunks, from the one at @start) the chunks skipped
 * (sync=top): the target got nothing of them. */
static int copy_run(BlockCopyState *s, int64_t start, int64_t end,
                    bool cbw, int64_t piece, bool *error_is_read,
                    int64_t *copied, uint64_t *skipped)
{
    char *buf = NULL;
    int ret = 0;

    *copied = 0;
    for (int64_t pos = start, n; pos < end && ret == 0; pos += n) {
        CopyKind kind = classify(s, pos, end, cbw, &n);
        if (kind == COPY_SKIP) { /* whole chunks, or up to the end */
            bits_set(skipped, (pos - start) / s->cluster,
                     (n + s->cluster - 1) / s->cluster, true);
        } else if (kind == COPY_ZERO) {
            ret = write_zeroes(s, pos, n, error_is_read);
        } else if (kind == COPY_DATA) {
            if (!buf && !(buf = buffer_get(s))) {
                *error_is_read = false;
                ret = -ENOMEM;
                break;
            }
            ret = copy_data(s, pos, n, buf, cbw, piece, error_is_read,
                            copied);
        }
    }
    if (buf)
        buffer_put(s, buf);
    return ret;
}

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t run_bytes(BlockCopyState *s, int64_t first, int64_t n)
{
    return MIN((first + n) * s->cluster, s->len) - first * s->cluster;
}

static void atomic_max(int64_t *p, int64_t v)
{
    int64_t old = __atomic_load_n(p, __ATOMIC_RELAXED);

    while (v > old && !__atomic_compare_exchange_n(p, &old, v, false,
                                                   __ATOMIC_RELAXED,
                                                   __ATOMIC_RELAXED))
        ;
}

/* Marks the chunks of [first, first + n) not in @skipped (bits from
 * @first) as stored; returns their bytes. */
static int64_t store_locked(BlockCopyState *s, int64_t first, int64_t n,
                            const uint64_t *skipped)
{
    int64_t bytes = 0;
    bool any = false;

    for (int64_t w = 0; w < (n + 63) / 64; w++)
        any |= skipped[w] != 0;
    if (!any) { /* the usual case: one run */
        bits_set(s->stored, first, n, true);
        return run_bytes(s, first, n);
    }
    for (int64_t k = 0; k < n; k++) {
        if (bit_test(skipped, k))
            continue;
        bits_set(s->stored, first + k, 1, true);
        bytes += run_bytes(s, first + k, 1);
    }
    return bytes;
}

/* Ends a claim of chunks [first, first + n): done on success, and kept in
 * the store but for the chunks @skipped (bits from @first); the room a
 * copy-before-write took for them (@reserved) is given back first. */
static void release(BlockCopyState *s, int64_t first, int64_t n, bool ok,
                    bool reserved, const uint64_t *skipped)
{
    int64_t bytes = run_bytes(s, first, n), stored = 0;

    g_mutex_lock(&s->lock);
    bits_set(s->busy, first, n, false);
    if (reserved)
        s->kept -= bytes;
    if (ok) {
        bits_set(s->done, first, n, true);
        stored = store_locked(s, first, n, skipped);
        s->kept += stored;
        s->peak = MAX(s->peak, s->kept);
        __atomic_store_n(&s->ndone, s->ndone + n, __ATOMIC_RELEASE);
    }
    wake_locked(s);
    g_mutex_unlock(&s->lock);
    if (stored) {
        __atomic_add_fetch(&s->copies, 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&s->copied_bytes, stored, __ATOMIC_RELAXED);
    }
    if (ok && s->progress)
        s->progress(s->progress_opaque, bytes);
}

/* @reserved: the claim took its room in the store (a copy-before-write). */
static int copy_claimed_chunks(BlockCopyState *s, int64_t first, int64_t n,
                               bool cbw, bool reserved, int64_t piece,
                               bool *error_is_read, int64_t *copied)
{
    int64_t start = first * s->cluster;
    int64_t end = MIN((first + n) * s->cluster, s->len);
    uint64_t skipped[MAX_RUN_CHUNKS / 64] = { 0 };
    int ret;

    g_assert(n <= MAX_RUN_CHUNKS);
    ret = copy_run(s, start, end, cbw, piece, error_is_read, copied,
                   skipped);
    release(s, first, n, ret == 0, reserved, skipped);
    return ret;
}

/* The free run of chunks from @i (free), up to chunk @last and
 * @max_chunks long. */
static int64_t free_run_locked(BlockCopyState *s, int64_t i, int64_t last,
                               int64_t max_chunks)
{
    int64_t n = 1;

    while (i + n <= last && n < max_chunks && chunk_free(s, i + n))
        n++;
    return n;
}

/* Claims chunks [i, i + n): busy, and with @reserve their room taken in
 * the store. */
static void claim_locked(BlockCopyState *s, int64_t i, int64_t n,
                         bool reserve)
{
    bits_set(s->busy, i, n, true);
    if (reserve) {
        s->kept += run_bytes(s, i, n);
        s->peak = MAX(s->peak, s->kept);
    }
}

/* sync=top: the run of chunks from @i (up to @last) that are all whole
 * chunks unallocated in the source's top layer (true), or not (false: the
 * chunks that allocated data touches, or one chunk when block status
 * fails or a chunk is partly allocated).  *@n: its length in chunks. */
static bool unallocated_run(BlockCopyState *s, int64_t i, int64_t last,
                            int64_t *n)
{
    int64_t pos = i * s->cluster, end = MIN((last + 1) * s->cluster, s->len);
    int64_t pnum;
    int st = bdrv_block_status(s->source, pos, end - pos, &pnum);

    *n = 1;
    if (st < 0)
        return false;
    if (st & BDRV_BLOCK_ALLOCATED) {
        *n = MIN(ROUND_UP(pnum, s->cluster) / s->cluster, last - i + 1);
        return false;
    }
    if (pos + pnum >= end)
        *n = last - i + 1;
    else if (pnum >= s->cluster)
        *n = pnum / s->cluster;
    else
        return false;
    return true;
}

/* sync=top, before a copy-before-write claims anything: the chunks of
 * [first, last] not allocated in the source's top layer are done at once,
 * with no copy and no room in the store (the target's backing holds their
 * data).  Chunks busy or frozen meanwhile are left to the claim; its copy
 * skips them all the same. */
static void skip_unallocated_chunks(BlockCopyState *s, int64_t first,
                                    int64_t last)
{
    for (int64_t i = first, n; i <= last; i += n) {
        int64_t bytes = 0, count = 0;
        if (!unallocated_run(s, i, last, &n))
            continue;
        g_mutex_lock(&s->lock);
        for (int64_t k = i; k < i + n; k++) {
            if (!chunk_free(s, k))
                continue;
            bits_set(s->done, k, 1, true);
            bytes += run_bytes(s, k, 1);
            count++;
        }
        __atomic_store_n(&s->ndone, s->ndone + count, __ATOMIC_RELEASE);
        g_mutex_unlock(&s->lock);
        if (bytes && s->progress)
            s->progress(s->progress_opaque, bytes);
    }
}

/* How many chunks of the free run [i, i + n) fit in the store now. */
static int64_t room_locked(BlockCopyState *s, int64_t i, int64_t n)
{
    int64_t fit = 0;

    if (!s->max_store)
        return n;
    while (fit < n && s->kept + run_bytes(s, i, fit + 1) <= s->max_store)
        fit++;
    return fit;
}

/* Waits for the condition to change, at most @poll_us (0: no limit) and
 * until @deadline (ns, 0: none): -ETIMEDOUT when it has passed. */
static int wait_locked(BlockCopyState *s, int64_t deadline, int64_t poll_us)
{
    gint64 now = g_get_monotonic_time(), until = G_MAXINT64;

    if (poll_us)
        until = now + poll_us;
    if (deadline) {
        int64_t left = deadline - now_ns();
        if (left <= 0)
            return -ETIMEDOUT;
        until = MIN(until, now + left / 1000 + 1);
    }
    cond_wait_locked(s, until);
    return deadline && now_ns() >= deadline ? -ETIMEDOUT : 0;
}

/* The store is full: x-on-store-full says what a copy-before-write does.
 * 0: look again (room may have been freed). */
static int store_full_locked(BlockCopyState *s, int64_t deadline,
                             BlockCopyError *err, bool *counted)
{
    if (!*counted) {
        __atomic_add_fetch(&s->store_full_hits, 1, __ATOMIC_RELAXED);
        *counted = true;
    }
    /* Room comes only from a reader's forget: without a reader, or while
     * a drained section of the source waits for this write (the reader's
     * discard would wait for the section), or once the node goes, none
     * can come, and the snapshot gives way rather than the server hang. */
    if (s->on_full == BLOCK_COPY_STORE_FULL_WAIT && !s->stop_waiting &&
        s->readers > 0 &&
        g_atomic_int_get(&s->source->quiesce_counter) == 0)
        return wait_locked(s, deadline, ROOM_POLL_US);
    err->store_full = true;
    return -EDQUOT;
}

/* A copy-before-write's copy on a copier thread, so that its write can
 * give it up at the timeout (QEMU's cbw-timeout): the copy goes on and
 * keeps its chunks busy until it ends, done or free again. */
typedef struct CopyTask {
    BlockCopyState *s;
    int64_t first, n;
    int ret;
    bool is_read;
    bool finished, abandoned; /* under s->lock */
} CopyTask;

static void copy_task_run(gpointer data, gpointer user_data)
{
    CopyTask *t = data;
    BlockCopyState *s = t->s;
    bool is_read = false, abandoned;
    int64_t copied;
    int ret;

    /* Its chunks hold up a guest write: a drained section must not hold
     * it at a request's entry (as the backup's workers). */
    bdrv_set_thread_drain_exempt(true);
    ret = copy_claimed_chunks(s, t->first, t->n, true, true, 0, &is_read,
                              &copied);
    g_mutex_lock(&s->lock);
    t->ret = ret;
    t->is_read = is_read;
    t->finished = true;
    abandoned = t->abandoned;
    wake_locked(s);
    g_mutex_unlock(&s->lock);
    if (abandoned)
        g_free(t);
}

/* Copies the claimed chunks [i, i + n) on a copier, waiting until
 * @deadline at most: -ETIMEDOUT then, the copy going on. */
static int copy_until_locked(BlockCopyState *s, int64_t i, int64_t n,
                             int64_t deadline, bool *is_read)
{
    CopyTask *t = g_new0(CopyTask, 1);
    int ret;

    *t = (CopyTask){ .s = s, .first = i, .n = n };
    g_thread_pool_push(s->copiers, t, NULL);
    while (!t->finished && wait_locked(s, deadline, 0) == 0) {
    }
    if (!t->finished) {
        t->abandoned = true;
        return -ETIMEDOUT;
    }
    *is_read = t->is_read;
    ret = t->ret;
    g_free(t);
    return ret;
}

bool block_copy_all_done(BlockCopyState *s, int64_t offset, int64_t bytes)
{
    int64_t i, last;

    if (bytes <= 0 || offset >= s->len ||
        __atomic_load_n(&s->ndone, __ATOMIC_ACQUIRE) == s->nchunks)
        return true;
    last = (MIN(offset + bytes, s->len) - 1) / s->cluster;
    for (i = offset / s->cluster; i <= last; i++)
        if (!(__atomic_load_n(&s->done[i / 64], __ATOMIC_ACQUIRE) &
              (1ULL << (i % 64))))
            return false;
    return true;
}

int block_copy(BlockCopyState *s, int64_t offset, int64_t bytes,
               BlockCopyError *err)
{
    int64_t i, last, copied, t0, deadline, took;
    bool counted = false, waited = false;
    int ret = 0;

    *err = (BlockCopyError){ 0 };
    if (block_copy_all_done(s, offset, bytes))
        return 0;
    t0 = now_ns();
    deadline = s->timeout_ns ? t0 + s->timeout_ns : 0;
    i = offset / s->cluster;
    last = (MIN(offset + bytes, s->len) - 1) / s->cluster;
    if (s->skip_unallocated)
        skip_unallocated_chunks(s, i, last);
    g_mutex_lock(&s->lock);
    while (i <= last && ret == 0) {
        int64_t n;
        if (bit_test(s->done, i)) {
            i++;
        } else if (bit_test(s->busy, i) || bit_test(s->frozen, i)) {
            waited = true; /* then look at chunk i again */
            ret = wait_locked(s, deadline, 0);
        } else if (!(n = room_locked(s, i, free_run_locked(
                         s, i, last, s->max_buffer / s->cluster)))) {
            waited = true;
            ret = store_full_locked(s, deadline, err, &counted);
        } else {
            claim_locked(s, i, n, true);
            if (deadline) {
                ret = copy_until_locked(s, i, n, deadline, &err->is_read);
            } else {
                g_mutex_unlock(&s->lock);
                ret = copy_claimed_chunks(s, i, n, true, true, 0,
                                          &err->is_read, &copied);
                g_mutex_lock(&s->lock);
            }
            waited = true;
            i += n;
        }
    }
    g_mutex_unlock(&s->lock);
    if (ret == -ETIMEDOUT)
        err->timed_out = true;
    if (waited) {
        took = now_ns() - t0;
        __atomic_add_fetch(&s->guest_waits, 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&s->guest_wait_ns, took, __ATOMIC_RELAXED);
        atomic_max(&s->guest_wait_max_ns, took);
    }
    return ret;
}

bool block_copy_claim(BlockCopyState *s, int64_t from, int64_t max_bytes,
                      int64_t *offset, int64_t *bytes)
{
    int64_t max_chunks = MAX(MIN(max_bytes, s->max_buffer) / s->cluster, 1);
    int64_t i, n;

    g_mutex_lock(&s->lock);
    i = from < s->len ? find_free(s, from / s->cluster) : -1;
    if (i >= 0) {
        n = free_run_locked(s, i, s->nchunks - 1, max_chunks);
        claim_locked(s, i, n, false);
    }
    g_mutex_unlock(&s->lock);
    if (i < 0)
        return false;
    *offset = i * s->cluster;
    *bytes = run_bytes(s, i, n);
    return true;
}

int block_copy_claimed(BlockCopyState *s, int64_t offset, int64_t bytes,
                       bool yield_to_guest, bool *error_is_read,
                       int64_t *copied)
{
    int64_t first = offset / s->cluster;
    int64_t n = (offset + bytes - first * s->cluster + s->cluster - 1) /
                s->cluster;
    int64_t piece = yield_to_guest && s->target_cached
                        ? ROUND_UP(MAX(YIELDING_WRITE_PIECE, s->cluster),
                                   s->cluster)
                        : 0;

    return copy_claimed_chunks(s, first, n, false, false, piece,
                               error_is_read, copied);
}

void block_copy_set_skip_unallocated(BlockCopyState *s, bool skip)
{
    s->skip_unallocated = skip;
}

/* --- point-in-time readers ---------------------------------------------- */

/* A reader freezes chunks [first, first + n) (one entry per read in
 * flight: few, so thawing looks at them all rather than counting per
 * chunk, which fine chunks would make a table of hundreds of entries per
 * megabyte read). */
static void freeze_locked(BlockCopyState *s, int64_t first, int64_t n)
{
    FreezeRange r = { first, n };

    g_array_append_val(s->freezes, r);
    bits_set(s->frozen, first, n, true);
}

static void thaw_locked(BlockCopyState *s, int64_t first, int64_t n)
{
    for (guint k = 0; k < s->freezes->len; k++) {
        FreezeRange *r = &g_array_index(s->freezes, FreezeRange, k);
        if (r->first == first && r->n == n) {
            g_array_remove_index_fast(s->freezes, k);
            break;
        }
    }
    bits_set(s->frozen, first, n, false);
    /* Other reads may hold some of them still. */
    for (guint k = 0; k < s->freezes->len; k++) {
        FreezeRange *r = &g_array_index(s->freezes, FreezeRange, k);
        int64_t lo = MAX(r->first, first);
        int64_t hi = MIN(r->first + r->n, first + n);
        if (lo < hi)
            bits_set(s->frozen, lo, hi - lo, true);
    }
}

/* From chunk @i (not busy), the run of chunks up to @last that are alike:
 * all done (*done) or all not, none busy, none gone.  -EACCES if @i is
 * gone. */
static int snapshot_run_locked(BlockCopyState *s, int64_t i, int64_t last,
                               bool *done, int64_t *n)
{
    if (bit_test(s->gone, i))
        return -EACCES;
    *done = bit_test(s->done, i);
    *n = 1;
    while (i + *n <= last && !bit_test(s->busy, i + *n) &&
           !bit_test(s->gone, i + *n) &&
           bit_test(s->done, i + *n) == *done)
        (*n)++;
    return 0;
}

int block_copy_snapshot_read(BlockCopyState *s, int64_t offset,
                             int64_t bytes, void *buf)
{
    int64_t end = MIN(offset + bytes, s->len), pos = offset;
    int ret = 0;

    g_mutex_lock(&s->lock);
    while (pos < end && ret == 0) {
        int64_t i = pos / s->cluster, n, run_end;
        bool done;
        if (bit_test(s->busy, i)) {
            cond_wait_locked(s, G_MAXINT64); /* about to be done */
            continue;
        }
        ret = snapshot_run_locked(s, i, (end - 1) / s->cluster, &done, &n);
        if (ret < 0)
            break;
        run_end = MIN((i + n) * s->cluster, end);
        if (!done)
            freeze_locked(s, i, n);
        g_mutex_unlock(&s->lock);
        ret = bdrv_pread(done ? s->target : s->source, pos, run_end - pos,
                         (char *)buf + (pos - offset));
        g_mutex_lock(&s->lock);
        if (!done)
            thaw_locked(s, i, n);
        if (!done)
            wake_locked(s);
        pos = run_end;
    }
    g_mutex_unlock(&s->lock);
    return ret;
}

int block_copy_snapshot_status(BlockCopyState *s, int64_t offset,
                               int64_t bytes, int64_t *pnum)
{
    int64_t i = offset / s->cluster, n;
    bool done;
    int ret;

    g_mutex_lock(&s->lock);
    ret = snapshot_run_locked(s, i, (MIN(offset + bytes, s->len) - 1) /
                                        s->cluster, &done, &n);
    g_mutex_unlock(&s->lock);
    if (ret < 0)
        return ret;
    bytes = MIN((i + n) * s->cluster, offset + bytes) - offset;
    ret = bdrv_block_status(done ? s->target : s->source, offset, bytes,
                            pnum);
    /* What the snapshot shows is allocated in it, wherever it lives. */
    return ret < 0 ? ret : ret | BDRV_BLOCK_ALLOCATED;
}

int64_t block_copy_forget(BlockCopyState *s, int64_t offset, int64_t bytes,
                          int64_t *start)
{
    int64_t first = ROUND_UP(offset, s->cluster) / s->cluster;
    int64_t end = offset + bytes >= s->len ? s->nchunks
                                           : (offset + bytes) / s->cluster;
    int64_t n = 0, freed = 0;

    g_mutex_lock(&s->lock);
    for (int64_t i = first; i < end; i++) {
        while (bit_test(s->busy, i) || bit_test(s->frozen, i))
            cond_wait_locked(s, G_MAXINT64);
        if (!bit_test(s->done, i)) {
            bits_set(s->done, i, 1, true);
            n++;
        }
        if (bit_test(s->stored, i)) {
            bits_set(s->stored, i, 1, false);
            freed += run_bytes(s, i, 1);
        }
        bits_set(s->gone, i, 1, true);
    }
    __atomic_store_n(&s->ndone, s->ndone + n, __ATOMIC_RELEASE);
    s->kept -= freed;
    if (freed)
        wake_locked(s); /* room for writes waiting for it */
    g_mutex_unlock(&s->lock);
    *start = first * s->cluster;
    return end > first ? MIN(end * s->cluster, s->len) - *start : 0;
}

/* --- the store ---------------------------------------------------------- */

void block_copy_set_store_limit(BlockCopyState *s, int64_t max_bytes,
                                BlockCopyStoreFull on_full,
                                int64_t timeout_ns)
{
    g_mutex_lock(&s->lock);
    s->max_store = MAX(max_bytes, 0);
    s->on_full = on_full;
    s->timeout_ns = MAX(timeout_ns, 0);
    if (s->timeout_ns && !s->copiers)
        s->copiers = g_thread_pool_new(copy_task_run, NULL, MAX_COPIERS,
                                       FALSE, NULL);
    g_mutex_unlock(&s->lock);
}

void block_copy_reader(BlockCopyState *s, bool attach)
{
    g_mutex_lock(&s->lock);
    s->readers += attach ? 1 : -1;
    wake_locked(s);
    g_mutex_unlock(&s->lock);
}

void block_copy_stop_waiting(BlockCopyState *s)
{
    g_mutex_lock(&s->lock);
    s->stop_waiting = true;
    wake_locked(s);
    g_mutex_unlock(&s->lock);
}

void block_copy_get_stats(BlockCopyState *s, BlockCopyStats *st)
{
    g_mutex_lock(&s->lock);
    st->store_bytes = s->kept;
    st->store_peak_bytes = s->peak;
    st->max_store_bytes = s->max_store;
    g_mutex_unlock(&s->lock);
    st->granularity = s->cluster;
    st->copies = __atomic_load_n(&s->copies, __ATOMIC_RELAXED);
    st->copied_bytes = __atomic_load_n(&s->copied_bytes, __ATOMIC_RELAXED);
    st->guest_waits = __atomic_load_n(&s->guest_waits, __ATOMIC_RELAXED);
    st->guest_wait_ns = __atomic_load_n(&s->guest_wait_ns, __ATOMIC_RELAXED);
    st->guest_wait_max_ns = __atomic_load_n(&s->guest_wait_max_ns,
                                            __ATOMIC_RELAXED);
    st->store_full = __atomic_load_n(&s->store_full_hits, __ATOMIC_RELAXED);
}
