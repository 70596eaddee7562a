/*
 * mirror.c - the mirror job (see mirror.h).
 *
 * Design notes.
 *
 * What is left to copy is a dirty bitmap of the source (the job's own,
 * which QMP does not see): the initial pass marks what the sync mode
 * copies, and every write of the source's users marks what it touched
 * once it is done (block/io.c sets dirty bits after the write).  The job
 * takes the first dirty range, clears its bits, reads the source and
 * writes the target.
 * A write that lands meanwhile sets the bits again, after its data is in
 * the source, so the range is copied once more with it: nothing written is
 * ever left out, whatever the order.
 *
 * Copies and active writes take ranges of a lock of the job (ops, under
 * ops_lock), granule aligned, so that no two of them overlap: a background
 * copy never writes old data over an active write's new data.
 *
 * Active writes (write-blocking): a before-write notifier of the source
 * takes the lock on the write's granules; the write goes to the source;
 * an after-write notifier reads the range back (no other write of it can
 * run meanwhile) and writes it to the target, clears the granules it
 * covered whole and drops the lock.  The bitmap is disabled then: a write
 * is either copied at once or marked dirty because its copy failed, so the
 * dirty set only shrinks.  Turning write-blocking on happens in a drained
 * section of the source, so that no write runs one notifier and not the
 * other; a write whose before notifier did not take the lock finds no op
 * after and leaves its copy to the bitmap.
 *
 * Convergence: while not ready and in background mode, the job samples the
 * dirty count every second; three samples in a row without a new low
 * switch the job to write-blocking for the rest of its life.  A new low
 * is an eighth below the last one, or below it by an eighth of what was
 * copied since: a big disk copied slowly (a speed limit, slow storage)
 * loses only a small share of its dirty set a second, yet converges;
 * a job whose copies the guest dirties again almost as fast does not.
 *
 * The switch needs the source still: job-complete makes the job open a
 * drained section of the source (its own thread is the drainer, so its own
 * I/O goes on), copy what is still dirty (nothing new can come), flush the
 * target and move the source's users to it (bdrv_replace_node), all before
 * the section ends.  Requests held at the section's entry then go to the
 * target.  The notifiers leave in the same section.
 *
 * Background copies run on a pool of worker threads (as QEMU's mirror
 * keeps up to MAX_IN_FLIGHT copies in flight): the job's thread is the
 * coordinator.  It walks the bitmap in ascending order, locks the next
 * dirty range (at most op_max bytes), clears its bits and hands it to a
 * worker with a buffer of its own; buf-size bytes of buffers in all, so
 * buf-size / op_max copies at most.  A worker reads and writes with
 * blocking calls, drain-exempt (a locked range may hold up a guest
 * write), sets the bits again if the copy failed, unlocks and reports
 * under the job lock (inflight, the first error).  The job parks (pause,
 * drained section, the end) only once no copy is in flight, and is ready
 * only when nothing is dirty and nothing in flight.
 */
#include "jobs/mirror.h"
#include "jobs/chain.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define ROUND_UP(n, a) ((((n) + (a) - 1) / (a)) * (a))
#define DEFAULT_GRANULARITY (64 * 1024)
/* As QEMU: up to 16 copies in flight, of 1 MiB (or buf-size / 16). */
#define MAX_IN_FLIGHT 16
#define MAX_IO_BYTES (1024 * 1024)
#define DEFAULT_BUF_SIZE (MAX_IN_FLIGHT * MAX_IO_BYTES)
/* With a speed limit, a copy is at most this much of a second's worth,
 * so that the limit holds without bursts. */
#define RATE_CHUNK_DIVISOR 20
/* While ready and idle, the job looks for new dirty ranges this often. */
#define READY_POLL_NS (20 * 1000 * 1000)
/* Convergence: one sample of the dirty count a second; this many samples
 * without a new low switch the job to write-blocking. */
#define CONVERGE_SAMPLE_NS (1000 * 1000 * 1000LL)
#define CONVERGE_STALLS 3
/* After an ignored error, before the range is tried again. */
#define RETRY_NS (10 * 1000 * 1000)

/* A range in copy: a background copy or an active write. */
typedef struct MirrorOp {
    int64_t start, end;        /* granule aligned, locked */
    int64_t offset, bytes;     /* an active write's own range */
    GThread *owner;            /* an active write's thread, else NULL */
} MirrorOp;

typedef struct MirrorJob {
    Job common;
    BlockNode *source;         /* referenced, as are target and replaces */
    BlockNode *target;
    BlockNode *replaces;
    BlockNode *filter;         /* filter-node-name's node, referenced */
    bool filter_inserted;      /* the users of replaces are on the filter */
    bool filter_plugged;       /* it was, once (it has replaced_by) */
    BlockChild *source_edge;
    BlockChild *target_edge;
    MirrorSync sync;
    MirrorCopyMode initial_mode;
    BlockdevOnError on_source_error;
    BlockdevOnError on_target_error;
    bool auto_write_blocking;  /* may switch to write-blocking alone */
    int64_t granularity;
    int64_t lock_align;        /* granularity, or the source's alignment */
    int64_t buf_size;
    int64_t op_max;            /* bytes per background copy */
    int max_copies;            /* in flight at once: buf_size / op_max */
    BdrvDirtyBitmap *dirty;
    GThreadPool *copiers;      /* while run() runs */
    int zero_flags;
    BlockNotifier *before_notifier;
    BlockNotifier *after_notifier;

    /* The range lock. */
    GMutex ops_lock;
    GCond ops_cond;
    GList *ops;                /* of MirrorOp *, guarded by ops_lock */

    int active;                /* write-blocking on; atomic */
    /* An active write's copy failed (first error until the job saw it):
     * -errno and whether the source read failed.  Atomic. */
    int active_error;
    int active_error_is_read;

    /* Convergence samples (the job's thread only). */
    uint64_t low;
    uint64_t copied_at_low;    /* progress when low was reached */
    int stalls;
    int64_t next_sample_ns;
    bool active_commit;        /* a "commit" job: target below source */
    GPtrArray *layer_edges;    /* its "intermediate node" edges */
    bool target_was_read_only; /* read-only again unless switched to */

    /* Guarded by the job lock. */
    int inflight;              /* background copies handed to workers */
    GPtrArray *free_bufs;      /* op_max-byte buffers not in use */
    int copy_error;            /* first failed copy not yet handled */
    bool copy_error_is_read;
    bool should_complete;     /* job-complete: switch */
    bool ready;
    bool switched_alone;      /* write-blocking because it did not converge */
    bool switched;            /* the source's users moved to the target */
} MirrorJob;

static const char *const sync_names[] = { "full", "top", "none" };
static const char *const copy_mode_names[] = { "background",
                                               "write-blocking" };

static bool parse_name(const char *key, const char *const *names, size_t n,
                       const char *name, int *out, GError **errp)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(name, names[i]) == 0) {
            *out = (int)i;
            return true;
        }
    }
    g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                "Parameter '%s' does not accept value '%s'", key, name);
    return false;
}

bool mirror_sync_parse(const char *name, MirrorSync *out, GError **errp)
{
    int v;

    if (!parse_name("sync", sync_names, G_N_ELEMENTS(sync_names), name, &v,
                    errp))
        return false;
    *out = (MirrorSync)v;
    return true;
}

bool mirror_copy_mode_parse(const char *name, MirrorCopyMode *out,
                            GError **errp)
{
    int v;

    if (!parse_name("copy-mode", copy_mode_names,
                    G_N_ELEMENTS(copy_mode_names), name, &v, errp))
        return false;
    *out = (MirrorCopyMode)v;
    return true;
}

/* --- the range lock -------------------------------------------------------- */

static bool overlaps_locked(MirrorJob *m, int64_t start, int64_t end)
{
    for (GList *l = m->ops; l; l = l->next) {
        MirrorOp *op = l->data;
        if (op->start < end && start < op->end)
            return true;
    }
    return false;
}

/* Locks the granules of [offset, offset + bytes), waiting for copies and
 * active writes that hold any of them. */
static MirrorOp *op_begin(MirrorJob *m, int64_t offset, int64_t bytes,
                          GThread *owner)
{
    MirrorOp *op = g_new0(MirrorOp, 1);

    op->start = offset - offset % m->lock_align;
    op->end = ROUND_UP(offset + bytes, m->lock_align);
    op->offset = offset;
    op->bytes = bytes;
    op->owner = owner;
    g_mutex_lock(&m->ops_lock);
    while (overlaps_locked(m, op->start, op->end))
        g_cond_wait(&m->ops_cond, &m->ops_lock);
    m->ops = g_list_prepend(m->ops, op);
    g_mutex_unlock(&m->ops_lock);
    return op;
}

static void op_end(MirrorJob *m, MirrorOp *op)
{
    g_mutex_lock(&m->ops_lock);
    m->ops = g_list_remove(m->ops, op);
    g_cond_broadcast(&m->ops_cond);
    g_mutex_unlock(&m->ops_lock);
    g_free(op);
}

/* The active write of this thread at @offset, which holds its granules
 * until op_end; NULL if its before notifier took none. */
static MirrorOp *op_find_active(MirrorJob *m, int64_t offset, int64_t bytes)
{
    GThread *self = g_thread_self();
    MirrorOp *found = NULL;

    g_mutex_lock(&m->ops_lock);
    for (GList *l = m->ops; l && !found; l = l->next) {
        MirrorOp *op = l->data;
        if (op->owner == self && op->offset == offset && op->bytes == bytes)
            found = op;
    }
    g_mutex_unlock(&m->ops_lock);
    return found;
}

/* --- copying --------------------------------------------------------------- */

/* An active commit copies what the layers above the target hold. */
static int mark_above_target(MirrorJob *m, int64_t len)
{
    int base_depth = bdrv_chain_depth(m->source, m->target);
    int64_t pos = 0, pnum;

    while (pos < len) {
        int depth = bdrv_allocation_depth(m->source, pos, len - pos, &pnum);
        if (depth < 0)
            return depth;
        if (depth >= 1 && depth < base_depth)
            bdrv_dirty_bitmap_set(m->dirty, pos, pnum, true);
        pos += pnum;
    }
    job_progress_set_total(&m->common, bdrv_dirty_bitmap_count(m->dirty));
    return 0;
}

/* What the sync mode copies at first: everything, what the top layer
 * holds, or nothing (only what the users write from now on). */
static int mark_initial(MirrorJob *m)
{
    int64_t len = bdrv_getlength(m->source), pos = 0, pnum;

    if (m->active_commit)
        return mark_above_target(m, len);
    if (m->sync == MIRROR_SYNC_FULL)
        bdrv_dirty_bitmap_set(m->dirty, 0, len, true);
    while (m->sync == MIRROR_SYNC_TOP && pos < len) {
        int st = bdrv_block_status(m->source, pos, len - pos, &pnum);
        if (st < 0)
            return st;
        if (st & BDRV_BLOCK_ALLOCATED)
            bdrv_dirty_bitmap_set(m->dirty, pos, pnum, true);
        pos += pnum;
    }
    job_progress_set_total(&m->common, bdrv_dirty_bitmap_count(m->dirty));
    return 0;
}

/* Source to target, through @buf; *@is_read says which side failed. */
static int copy_data(MirrorJob *m, int64_t off, int64_t n, void *buf,
                     bool *is_read)
{
    int ret = bdrv_pread(m->source, off, n, buf);

    *is_read = ret < 0;
    if (ret == 0 && buffer_is_zero(buf, n))
        ret = bdrv_pwrite_zeroes(m->target, off, n, m->zero_flags);
    else if (ret == 0)
        ret = bdrv_pwrite(m->target, off, n, buf, 0);
    return ret;
}

/* --- background copies ----------------------------------------------------- */

/* Set while this thread copies for a mirror.  A write a copy makes may
 * reach the source of another mirror (its target is that mirror's source,
 * or, through a chain of mirrors, a cycle back to this one): that mirror
 * then neither locks the range nor copies it at once, as its write-blocking
 * mode would, but leaves it dirty for its background copy.  Else two
 * mirrors each between the other's nodes wait for each other's copies (the
 * QMP fuzzer's seeds 937865421 and, likely, 1031308610). */
static __thread int copying_for_mirror;

typedef struct MirrorCopy {
    MirrorOp *op;              /* the locked range, bits cleared */
    void *buf;                 /* op_max bytes, the copy's own */
} MirrorCopy;

/* A worker: one locked range from the source to the target. */
static void copy_run(gpointer data, gpointer user_data)
{
    MirrorCopy *c = data;
    MirrorJob *m = user_data;
    int64_t off = c->op->offset, n = c->op->bytes;
    bool is_read = false;
    int ret;

    /* The range is locked: an active write may wait for it, so the copy
     * must not wait at a drained section's entry (the job parks only once
     * no copy is in flight). */
    bdrv_set_thread_drain_exempt(true);
    copying_for_mirror++;
    ret = copy_data(m, off, n, c->buf, &is_read);
    copying_for_mirror--;
    if (ret < 0)
        bdrv_dirty_bitmap_set(m->dirty, off, n, true); /* still to do */
    else
        job_progress_update(&m->common, n);
    op_end(m, c->op);
    job_lock();
    g_ptr_array_add(m->free_bufs, c->buf);
    m->inflight--;
    if (ret < 0 && m->copy_error == 0) {
        m->copy_error = ret;
        m->copy_error_is_read = is_read;
    }
    job_kick_locked(&m->common);
    job_unlock();
    g_free(c);
}

/* Waits until fewer than @below copies are in flight. */
static void wait_copies(MirrorJob *m, int below)
{
    job_lock();
    while (m->inflight >= below)
        job_wait_locked(&m->common, -1);
    job_unlock();
}

static void wait_idle(MirrorJob *m)
{
    wait_copies(m, 1);
}

/* Waits until one of the copies in flight ended (none: returns). */
static void wait_one_copy(MirrorJob *m)
{
    int now;

    job_lock();
    now = m->inflight;
    while (now > 0 && m->inflight >= now)
        job_wait_locked(&m->common, -1);
    job_unlock();
}

static bool copies_in_flight(MirrorJob *m)
{
    bool any;

    job_lock();
    any = m->inflight > 0;
    job_unlock();
    return any;
}

/* The first failed copy (0: none), taken once every copy in flight with
 * it ended: theirs likely failed alike and count as the same error (one
 * event, one stop); their ranges are dirty again. */
static int take_copy_error(MirrorJob *m, bool *is_read)
{
    int ret;

    job_lock();
    ret = m->copy_error;
    job_unlock();
    if (ret == 0)
        return 0;
    wait_idle(m);
    job_lock();
    ret = m->copy_error;
    *is_read = m->copy_error_is_read;
    m->copy_error = 0;
    job_unlock();
    return ret;
}

static void *take_buffer(MirrorJob *m)
{
    void *buf = NULL;

    job_lock();
    if (m->free_bufs->len > 0)
        buf = g_ptr_array_steal_index_fast(m->free_bufs,
                                           m->free_bufs->len - 1);
    job_unlock();
    return buf ? buf : bdrv_blockalign(m->source, m->op_max);
}

/* The largest copy now: op_max, or a twentieth of a second's worth under
 * a speed limit (at least a granule). */
static int64_t copy_limit(MirrorJob *m)
{
    int64_t speed;

    job_lock();
    speed = m->common.speed;
    job_unlock();
    if (speed > 0)
        return MAX(m->granularity,
                   MIN(m->op_max, ROUND_UP(speed / RATE_CHUNK_DIVISOR,
                                           m->granularity)));
    return m->op_max;
}

/* The first dirty range at or after *@from (wrapping around), at most
 * @limit bytes: false if nothing is dirty. */
static bool next_dirty_range(MirrorJob *m, int64_t from, int64_t limit,
                             int64_t *off, int64_t *n)
{
    int64_t len = bdrv_getlength(m->source);
    bool dirty;

    *off = bdrv_dirty_bitmap_next_dirty(m->dirty, from);
    if (*off < 0 && from > 0)
        *off = bdrv_dirty_bitmap_next_dirty(m->dirty, 0);
    if (*off < 0)
        return false;
    return bdrv_dirty_bitmap_next_extent(m->dirty, *off,
                                         MIN(len, *off + limit), &dirty, n);
}

/* Hands the first dirty range at or after *@from to a worker; a slot must
 * be free.  1 if one went (*@from moves past it), 0 if nothing is dirty,
 * or -ENOMEM.  With @delay_ns (the speed limit applies), *@delay_ns > 0
 * says to wait that long first (nothing went). */
static int submit_next(MirrorJob *m, int64_t *from, int64_t *delay_ns)
{
    int64_t len = bdrv_getlength(m->source), off, n;
    MirrorCopy *c;
    void *buf;

    if (!next_dirty_range(m, *from, delay_ns ? copy_limit(m) : m->op_max,
                          &off, &n))
        return 0;
    if (delay_ns &&
        (*delay_ns = job_ratelimit_delay_ns(&m->common, n)) > 0)
        return 1;
    buf = take_buffer(m);
    if (!buf)
        return -ENOMEM;
    c = g_new0(MirrorCopy, 1);
    c->buf = buf;
    /* May wait for an active write, or a copy of the same range still in
     * flight from the pass before. */
    c->op = op_begin(m, off, n, NULL);
    bdrv_dirty_bitmap_set(m->dirty, off, n, false);
    job_lock();
    m->inflight++;
    job_unlock();
    g_thread_pool_push(m->copiers, c, NULL);
    *from = off + n >= len ? 0 : off + n;
    return 1;
}

/* Until nothing is dirty (in a drained section: nothing new comes).  The
 * first failure ends it, once no copy is in flight. */
static int copy_all(MirrorJob *m)
{
    int64_t from = 0;
    bool is_read;
    int ret;

    for (;;) {
        if ((ret = take_copy_error(m, &is_read)) < 0)
            return ret;
        wait_copies(m, m->max_copies);
        ret = submit_next(m, &from, NULL);
        if (ret < 0) {
            wait_idle(m);
            return ret;
        }
        if (ret == 0 && !copies_in_flight(m))
            return take_copy_error(m, &is_read);
        if (ret == 0)
            wait_one_copy(m);
    }
}

/* --- active writes --------------------------------------------------------- */

static int before_write(BlockNode *bs, BdrvWriteKind kind, int64_t offset,
                        int64_t bytes, void *opaque)
{
    MirrorJob *m = opaque;

    if (g_atomic_int_get(&m->active) && !copying_for_mirror)
        op_begin(m, offset, bytes, g_thread_self());
    return 0;
}

/* The granules [offset, offset + bytes) covers whole are clean now. */
static void clear_covered(MirrorJob *m, int64_t offset, int64_t bytes)
{
    int64_t g = m->granularity;
    int64_t start = ROUND_UP(offset, g);
    int64_t end = (offset + bytes) - (offset + bytes) % g;

    if (offset + bytes == bdrv_getlength(m->source))
        end = offset + bytes;
    if (end > start)
        bdrv_dirty_bitmap_set(m->dirty, start, end - start, false);
}

/* The write is in the source; no other write of its granules runs until
 * op_end: the range as the source has it now goes to the target. */
static int after_write(BlockNode *bs, BdrvWriteKind kind, int64_t offset,
                       int64_t bytes, int ret, void *opaque)
{
    MirrorJob *m = opaque;
    MirrorOp *op = op_find_active(m, offset, bytes);
    void *buf;
    bool is_read = true;

    if (!op)
        return 0;
    buf = bdrv_blockalign(m->source, bytes);
    copying_for_mirror++;
    ret = buf ? copy_data(m, offset, bytes, buf, &is_read) : -ENOMEM;
    copying_for_mirror--;
    free(buf);
    if (ret == 0) {
        clear_covered(m, offset, bytes);
    } else {
        /* The guest's write stands; the job copies the range later and
         * applies its error policy. */
        bdrv_dirty_bitmap_set(m->dirty, offset, bytes, true);
        if (g_atomic_int_compare_and_exchange(&m->active_error, 0, ret))
            g_atomic_int_set(&m->active_error_is_read, is_read);
    }
    op_end(m, op);
    return 0;
}

/* From now on every write of the source is copied before it is done. */
static void start_write_blocking(MirrorJob *m)
{
    BdrvDrain *drain = bdrv_drained_begin(m->source);

    bdrv_dirty_bitmap_set_enabled(m->dirty, false);
    g_atomic_int_set(&m->active, 1);
    bdrv_drained_end(drain);
}

static void add_notifiers(MirrorJob *m)
{
    BdrvDrain *drain = bdrv_drained_begin(m->source);

    m->before_notifier = bdrv_add_before_write_notifier(m->source,
                                                        before_write, m);
    m->after_notifier = bdrv_add_after_write_notifier(m->source,
                                                      after_write, m);
    if (m->initial_mode == MIRROR_COPY_MODE_WRITE_BLOCKING) {
        bdrv_dirty_bitmap_set_enabled(m->dirty, false);
        g_atomic_int_set(&m->active, 1);
    }
    bdrv_drained_end(drain);
}

/* In a drained section of the source: no write is between the two. */
static void remove_notifiers(MirrorJob *m)
{
    g_atomic_int_set(&m->active, 0);
    if (m->before_notifier)
        bdrv_remove_before_write_notifier(m->source, m->before_notifier);
    if (m->after_notifier)
        bdrv_remove_before_write_notifier(m->source, m->after_notifier);
    m->before_notifier = m->after_notifier = NULL;
}

/* Not ready yet and the dirty set does not shrink: write-blocking. */
static void check_convergence(MirrorJob *m)
{
    int64_t now = job_now_ns();
    uint64_t count, copied, gain;

    /* m->ready: only this thread changes it. */
    if (!m->auto_write_blocking || m->ready ||
        g_atomic_int_get(&m->active) || now < m->next_sample_ns)
        return;
    m->next_sample_ns = now + CONVERGE_SAMPLE_NS;
    count = bdrv_dirty_bitmap_count(m->dirty);
    copied = __atomic_load_n(&m->common.progress_current, __ATOMIC_RELAXED);
    gain = count < m->low ? m->low - count : 0;
    if (m->low == UINT64_MAX || gain > m->low / 8 ||
        (gain > 0 && gain >= (copied - m->copied_at_low) / 8)) {
        m->low = count;
        m->copied_at_low = copied;
        m->stalls = 0;
        return;
    }
    if (++m->stalls < CONVERGE_STALLS)
        return;
    start_write_blocking(m);
    job_lock();
    m->switched_alone = true;
    job_unlock();
}

/* --- the switch ------------------------------------------------------------ */

/* The target reads what the source read: a target without a backing gets
 * the source's (sync=top and none), then takes the users' place. */
static int switch_to_target(MirrorJob *m, GError **errp)
{
    BlockNode *backing = bdrv_child(m->source, "backing");

    if (m->active_commit)
        backing = NULL; /* the target keeps its own chain */
    if (backing && m->sync != MIRROR_SYNC_FULL && backing &&
        !bdrv_child(m->target, "backing") &&
        !bdrv_set_backing(m->target, backing, errp))
        return -EINVAL;
    if (!bdrv_replace_node(m->filter_inserted ? m->filter : m->replaces,
                           m->target, errp))
        return -EBUSY;
    m->filter_inserted = false;
    return 0;
}

/* The users of the filter go back to the node it was put above; in a
 * drained section. */
static void unplug_filter(MirrorJob *m)
{
    g_autoptr(GError) err = NULL;

    if (!m->filter_inserted)
        return;
    /* When the users cannot go back (another graph change made that a
     * permission conflict), the filter stays where it is and passes their
     * requests through: its child must stay too (drop_filter). */
    if (!bdrv_replace_node(m->filter, m->replaces, &err)) {
        g_warning("mirror '%s': %s", m->common.id, err->message);
        return;
    }
    m->filter_inserted = false;
}

/* The filter, out of the users' way, lets go of the graph below it (in a
 * drained section). */
static void drop_filter(MirrorJob *m)
{
    if (m->filter && m->filter_plugged && !m->filter_inserted &&
        bdrv_child(m->filter, "file"))
        bdrv_mirror_top_detach(m->filter);
}

/* The end of every run, in a drained section of the source: unless
 * @copy_last is false (a failure, a forced cancel), the last copy and the
 * switch if job-complete asked for it; then the notifiers go. */
static int mirror_finish(MirrorJob *m, bool copy_last, bool do_switch,
                         GError **errp)
{
    BdrvDrain *drain;
    int ret;

    wait_idle(m); /* a failure or a cancel left copies in flight */
    drain = bdrv_drained_begin(m->source);
    ret = copy_last ? copy_all(m) : 0;

    if (ret == 0 && copy_last)
        ret = bdrv_flush(m->target);
    if (ret < 0)
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                    "Mirror of '%s' failed to finish: %s",
                    bdrv_node_name(m->source), g_strerror(-ret));
    else if (do_switch && (ret = switch_to_target(m, errp)) == 0)
        m->switched = true;
    /* Whatever still reaches the old source is written again where its
     * user went; what it holds now is on its disk. */
    if (m->switched)
        bdrv_flush(m->source);
    unplug_filter(m);
    drop_filter(m);
    remove_notifiers(m);
    bdrv_drained_end(drain);
    return ret;
}

/* --- the job --------------------------------------------------------------- */

static bool wants_end(MirrorJob *m, bool *do_switch)
{
    bool end;

    job_lock();
    *do_switch = m->should_complete;
    end = m->should_complete || m->common.cancelled;
    job_unlock();
    return end;
}

static void become_ready(MirrorJob *m)
{
    job_lock();
    if (m->ready) {
        job_unlock();
        return;
    }
    m->ready = true;
    job_unlock();
    job_transition_to_ready(&m->common);
}

/* A failed copy (background or active) under the job's error policy:
 * 0 to go on (the range stays dirty), or the error that ends the job. */
static int handle_error(MirrorJob *m, int ret, bool is_read)
{
    BlockErrorAction action;

    action = job_error_action(&m->common,
                              is_read ? m->on_source_error
                                      : m->on_target_error,
                              is_read, -ret);
    if (action == BLOCK_ERROR_ACTION_REPORT)
        return ret;
    if (action == BLOCK_ERROR_ACTION_IGNORE)
        job_sleep_ns(&m->common, RETRY_NS); /* no busy loop on a bad disk */
    return 0;
}

/* Nothing dirty: ready once no copy is in flight (a failed one makes its
 * range dirty again), then a look at whether the job should end.  1: end
 * now. */
static int mirror_idle(MirrorJob *m, bool *do_switch)
{
    if (copies_in_flight(m)) {
        wait_one_copy(m);
        return 0;
    }
    become_ready(m);
    if (wants_end(m, do_switch))
        return 1;
    job_sleep_ns(&m->common, READY_POLL_NS);
    return 0;
}

/* One step of the loop: a copy handed to a worker once one is free, or,
 * when nothing is dirty, mirror_idle.  1: end now; <0: failed. */
static int mirror_step(MirrorJob *m, int64_t *from, bool *do_switch)
{
    int64_t delay = 0;
    bool is_read = false;
    int ret = g_atomic_int_get(&m->active_error);

    if (ret < 0) {
        is_read = g_atomic_int_get(&m->active_error_is_read);
        g_atomic_int_set(&m->active_error, 0);
        return handle_error(m, ret, is_read);
    }
    if ((ret = take_copy_error(m, &is_read)) < 0)
        return handle_error(m, ret, is_read);
    check_convergence(m);
    wait_copies(m, m->max_copies);
    ret = submit_next(m, from, &delay);
    if (ret < 0)
        return handle_error(m, ret, false);
    if (ret == 0)
        return mirror_idle(m, do_switch);
    if (delay > 0)
        job_sleep_ns(&m->common, delay);
    return 0;
}

/* A pause, a drained section or a forced cancel waits for the copies in
 * flight: the job parks or ends holding no range. */
static bool must_park(MirrorJob *m)
{
    bool park;

    job_lock();
    park = job_should_pause_locked(&m->common) ||
           job_drain_requested_locked(&m->common);
    job_unlock();
    return park || job_is_force_cancelled(&m->common);
}

static int mirror_loop(MirrorJob *m, bool *do_switch)
{
    Job *job = &m->common;
    int64_t from = 0;
    int ret = mark_initial(m);

    while (ret == 0) {
        if (must_park(m))
            wait_idle(m);
        if (job_is_force_cancelled(job))
            return -ECANCELED;
        job_pause_point(job);
        job_drain_point(job);
        ret = mirror_step(m, &from, do_switch);
    }
    return ret;
}

static int mirror_run(Job *job, GError **errp)
{
    MirrorJob *m = (MirrorJob *)job;
    bool do_switch = false;
    int ret;

    m->low = UINT64_MAX;
    m->next_sample_ns = job_now_ns() + CONVERGE_SAMPLE_NS;
    /* Not exclusive, as backup's: threads only while copies run. */
    m->copiers = g_thread_pool_new(copy_run, m, m->max_copies, FALSE, NULL);
    add_notifiers(m);
    ret = mirror_loop(m, &do_switch);
    if (ret == -ECANCELED) {
        mirror_finish(m, false, false, NULL);
    } else if (ret < 0) {
        mirror_finish(m, false, false, NULL);
        /* As QEMU: the job's error is the errno's words. */
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED, "%s",
                    g_strerror(-ret));
    } else {
        ret = mirror_finish(m, true, do_switch, errp);
    }
    g_thread_pool_free(m->copiers, FALSE, TRUE);
    m->copiers = NULL;
    return ret;
}

/* Only a ready mirror can end without being forced off: without the
 * switch, the target a copy as of the cancel (QEMU's mirror_cancel). */
static bool mirror_cancel(Job *job, bool force)
{
    MirrorJob *m = (MirrorJob *)job;

    return force || !m->ready; /* called with the job lock */
}

static void mirror_complete(Job *job, GError **errp)
{
    MirrorJob *m = (MirrorJob *)job;

    job_lock();
    if (!m->ready) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                    "The active block job '%s' cannot be completed",
                    job->id);
    } else {
        m->should_complete = true;
        job_kick_locked(job);
    }
    job_unlock();
}

static void mirror_clean(Job *job)
{
    MirrorJob *m = (MirrorJob *)job;
    /* Our own reference keeps the target until it is read-only again: the
     * edge's may have been the last (its node was deleted meanwhile, or
     * the daemon is stopping: the QMP fuzzer's seed 453701862). */
    BlockNode *target = g_steal_pointer(&m->target);

    if (m->dirty)
        bdrv_release_dirty_bitmap(m->dirty);
    m->dirty = NULL;
    g_clear_pointer(&m->source_edge, bdrv_user_detach);
    g_clear_pointer(&m->target_edge, bdrv_user_detach);
    g_clear_pointer(&m->layer_edges, g_ptr_array_unref);
    if (target && m->target_was_read_only && !m->switched)
        bdrv_set_read_only(target);
    bdrv_unref(target);
    if (m->filter_inserted) { /* never ran */
        BdrvDrain *drain = bdrv_drained_begin(m->filter);
        unplug_filter(m);
        drop_filter(m);
        bdrv_drained_end(drain);
    }
    /* NBD requests hold their own reference on the node they entered. */
    g_clear_pointer(&m->filter, bdrv_unref);
    g_clear_pointer(&m->source, bdrv_unref);
    g_clear_pointer(&m->replaces, bdrv_unref);
    g_clear_pointer(&m->free_bufs, g_ptr_array_unref);
}

static void mirror_free(Job *job)
{
    MirrorJob *m = (MirrorJob *)job;

    g_list_free_full(m->ops, g_free);
    g_mutex_clear(&m->ops_lock);
    g_cond_clear(&m->ops_cond);
}

#define MIRROR_ENGINE                                                       \
    .instance_size = sizeof(MirrorJob),                                     \
    .block_job = true,                                                      \
    .drains_itself = true,                                                  \
    .run = mirror_run,                                                      \
    .cancel = mirror_cancel,                                                \
    .complete = mirror_complete,                                            \
    .clean = mirror_clean,                                                  \
    .free = mirror_free

static const JobDriver mirror_driver = {
    .type = "mirror",
    MIRROR_ENGINE,
};

/* An active commit is this job under another name (QEMU's
 * commit_active_start). */
static const JobDriver active_commit_driver = {
    .type = "commit",
    MIRROR_ENGINE,
};

bool mirror_job_info(Job *job, MirrorJobInfo *info)
{
    MirrorJob *m = (MirrorJob *)job;

    if (job->driver->run != mirror_run)
        return false;
    job_lock();
    info->auto_write_blocking = m->switched_alone;
    /* The asked mode holds from the start, before run() turns it on. */
    info->copy_mode = g_atomic_int_get(&m->active) || m->switched_alone
                          ? MIRROR_COPY_MODE_WRITE_BLOCKING
                          : m->initial_mode;
    /* Once ready, every write done since is in the target too, unless
     * the copy of one failed and waits in the bitmap. */
    info->actively_synced = m->ready && g_atomic_int_get(&m->active) &&
                            !g_atomic_int_get(&m->active_error);
    job_unlock();
    return true;
}

/* --- creation -------------------------------------------------------------- */

static bool check_granularity(int64_t g, GError **errp)
{
    if (g && (g < 512 || g > 64 * 1024 * 1024)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Parameter 'granularity' expects a value in range "
                    "[512B, 64MB]");
        return false;
    }
    if (g & (g - 1)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Parameter 'granularity' expects a power of 2");
        return false;
    }
    return true;
}

static bool check_options(const MirrorOptions *o, GError **errp)
{
    if (!check_granularity(o->granularity, errp))
        return false;
    if (o->speed < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Parameter 'speed' expects a non-negative value");
        return false;
    }
    if (o->buf_size < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Invalid parameter 'buf-size'");
        return false;
    }
    /* Before the job exists, so that a bad name makes no job events. */
    if (o->filter_node_name && !bdrv_id_wellformed(o->filter_node_name)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Invalid node-name: '%s'", o->filter_node_name);
        return false;
    }
    if (o->filter_node_name && bdrv_find_node(o->filter_node_name)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_EXISTS,
                    "Duplicate nodes with node-name='%s'",
                    o->filter_node_name);
        return false;
    }
    if (o->job_type && strcmp(o->job_type, "mirror") != 0 &&
        strcmp(o->job_type, "commit") != 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "No job type '%s' on the mirror engine", o->job_type);
        return false;
    }
    return true;
}

static bool check_nodes(BlockNode *source, BlockNode *target,
                        const MirrorOptions *o, GError **errp)
{
    g_autofree char *writer = bdrv_find_writer(target, NULL);

    if (source == target ||
        (!o->active_commit && bdrv_reaches(source, target, true)) ||
        bdrv_common_storage(source, target)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Can't mirror node into itself");
        return false;
    }
    if (writer) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_BUSY,
                    "Node '%s' is busy: written by %s; it cannot be a "
                    "mirror target", bdrv_node_name(target), writer);
        return false;
    }
    if (bdrv_getlength(source) != bdrv_getlength(target)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Source and target image have different sizes");
        return false;
    }
    if (o->replaces && bdrv_skip_filters(o->replaces) != source) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Cannot replace '%s' by a node mirrored from '%s', "
                    "because it cannot be guaranteed that doing so would "
                    "not lead to an abrupt change of visible data",
                    bdrv_node_name(o->replaces), bdrv_node_name(source));
        return false;
    }
    return true;
}

static bool attach_nodes(MirrorJob *m, BlockNode *source, BlockNode *target,
                         GError **errp)
{
    if (!job_attach_copy_nodes(&m->common, source, target,
                               &m->source_edge, &m->target_edge, errp))
        return false;
    /* Our own references: the switch moves the source edge to the target,
     * and the bitmap and notifiers stay on the source until clean; another
     * job's switch may move the target edge to another node, and this job
     * still writes to the target (the QMP fuzzer's seed 937865421: a
     * drive-mirror's target, freed so, was used at the job's clean). */
    bdrv_ref(source);
    bdrv_ref(target);
    m->source = source;
    m->target = target;
    return true;
}

static void set_options(MirrorJob *m, BlockNode *source, BlockNode *target,
                        const MirrorOptions *o)
{
    m->active_commit = o->active_commit;
    m->target_was_read_only = o->target_was_read_only;
    m->sync = o->sync;
    m->initial_mode = o->copy_mode;
    m->on_source_error = o->on_source_error;
    m->on_target_error = o->on_target_error;
    m->auto_write_blocking = !o->no_auto_write_blocking;
    m->granularity = o->granularity ? o->granularity : DEFAULT_GRANULARITY;
    m->lock_align = MAX(m->granularity,
                        (int64_t)bdrv_limits(source)->request_alignment);
    m->buf_size = MAX(o->buf_size ? o->buf_size : DEFAULT_BUF_SIZE,
                      m->granularity);
    /* As QEMU: copies of buf-size / 16 (at least 1 MiB, at most
     * buf-size), whole granules; as many in flight as buf-size holds. */
    m->op_max = MIN(MAX(m->buf_size / MAX_IN_FLIGHT, MAX_IO_BYTES),
                    m->buf_size);
    m->op_max = MAX(m->op_max - m->op_max % m->granularity, m->granularity);
    m->max_copies = (int)MIN(MAX(m->buf_size / m->op_max, 1), MAX_IN_FLIGHT);
    /* held: the monitor's lookup of "replaces" holds it for the command
     * only, and the switch or the filter's unplug needs it at the end */
    m->replaces = o->replaces ? o->replaces : source;
    bdrv_ref(m->replaces);
    /* Unmapping is only safe where a hole reads as zero. */
    m->zero_flags = !o->no_unmap && bdrv_has_zero_init(target)
                        ? BDRV_REQ_MAY_UNMAP
                        : 0;
    g_mutex_init(&m->ops_lock);
    g_cond_init(&m->ops_cond);
    job_lock();
    m->common.speed = o->speed;
    job_unlock();
}

/* One buffer now, so that a job that cannot have any fails at once. */
static bool alloc_first_buffer(MirrorJob *m, BlockNode *source)
{
    void *buf = bdrv_blockalign(source, m->op_max);

    m->free_bufs = g_ptr_array_new_with_free_func(free);
    if (buf)
        g_ptr_array_add(m->free_bufs, buf);
    return buf != NULL;
}

/* filter-node-name: a "mirror_top" node above replaces takes its users
 * (in a drained section), as QEMU's mirror_top_bs. */
static bool plug_filter(MirrorJob *m, const char *name, GError **errp)
{
    g_autoptr(GHashTable) o = g_hash_table_new_full(g_str_hash, g_str_equal,
                                                    g_free, g_free);
    BdrvDrain *drain;
    bool ok;

    g_hash_table_insert(o, g_strdup("driver"), g_strdup("mirror_top"));
    g_hash_table_insert(o, g_strdup("node-name"), g_strdup(name));
    g_hash_table_insert(o, g_strdup("file"),
                        g_strdup(bdrv_node_name(m->replaces)));
    g_hash_table_insert(o, g_strdup("discard"), g_strdup("unmap"));
    m->filter = bdrv_open(o, errp);
    if (!m->filter)
        return false;
    drain = bdrv_drained_begin(m->replaces);
    ok = bdrv_replace_node(m->replaces, m->filter, errp);
    bdrv_drained_end(drain);
    m->filter_inserted = m->filter_plugged = ok;
    return ok;
}

/* An active commit drops the layers between source and target, whose view
 * changes as the target takes source's data: as QEMU's, it holds them
 * against readers and resizes (jobs/chain.h). */
static bool hold_layers(MirrorJob *m, BlockNode *source, BlockNode *target,
                        GError **errp)
{
    if (!m->active_commit)
        return true;
    m->layer_edges = chain_hold_layers(&m->common, source, source, target,
                                       CHAIN_COMMIT_LAYERS_SHARED, errp);
    return m->layer_edges != NULL;
}

Job *mirror_job_create(const char *id, BlockNode *source, BlockNode *target,
                       const MirrorOptions *o, GError **errp)
{
    g_autofree char *name = NULL;
    MirrorJob *m;

    if (!check_options(o, errp) || !check_nodes(source, target, o, errp))
        return NULL;
    m = job_create(id,
                   o->active_commit ||
                           (o->job_type && strcmp(o->job_type, "commit") == 0)
                       ? &active_commit_driver
                       : &mirror_driver,
                   o->job_flags, errp);
    if (!m)
        return NULL;
    set_options(m, source, target, o);
    name = g_strdup_printf("#mirror-%s", id);
    if (!attach_nodes(m, source, target, errp) ||
        !hold_layers(m, source, target, errp) ||
        !(m->dirty = bdrv_create_job_dirty_bitmap(source, name,
                                                  m->granularity, errp)) ||
        !alloc_first_buffer(m, source) ||
        (o->filter_node_name &&
         !plug_filter(m, o->filter_node_name, errp))) {
        job_early_fail(&m->common);
        return NULL;
    }
    return &m->common;
}
