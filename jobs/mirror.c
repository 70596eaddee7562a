/*
 * mirror.c - the mirror job (see mirror.h).
 *
 * Design notes.
 *
 * What is left to copy is a dirty bitmap of the source (hidden: its name
 * starts with '#'): the initial pass marks what the sync mode copies, and
 * every write of the source's users marks what it touched once it is done
 * (block/io.c sets dirty bits after the write).  The job takes the first
 * dirty range, clears its bits, reads the source and writes the target.
 * A write that lands meanwhile sets the bits again, after its data is in
 * the source, so the range is copied once more with it: nothing written is
 * ever left out, whatever the order.
 *
 * The switch needs the source still: job-complete makes the job open a
 * drained section of the source (its own thread is the drainer, so its own
 * I/O goes on), copy what is still dirty (nothing new can come), flush the
 * target and move the source's users to it (bdrv_replace_node), all before
 * the section ends.  Requests held at the section's entry then go to the
 * target.
 *
 * One copy at a time, of at most buf-size bytes: the guest comes first.
 */
#include "jobs/mirror.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_GRANULARITY (64 * 1024)
#define DEFAULT_BUF_SIZE (1024 * 1024)
/* While ready and idle, the job looks for new dirty ranges this often. */
#define READY_POLL_NS (20 * 1000 * 1000)

typedef struct MirrorJob {
    Job common;
    BlockNode *source;
    BlockNode *target;
    BlockNode *replaces;
    BlockChild *source_edge;
    BlockChild *target_edge;
    MirrorSync sync;
    int64_t granularity;
    int64_t buf_size;
    BdrvDirtyBitmap *dirty;
    void *buf;
    int zero_flags;
    bool active_commit;
    bool target_was_read_only;
    bool switched;

    /* Guarded by the job lock. */
    bool should_complete;     /* job-complete: switch */
    bool ready;
} MirrorJob;

static const char *const sync_names[] = { "full", "top", "none" };

bool mirror_sync_parse(const char *name, MirrorSync *out, GError **errp)
{
    for (size_t i = 0; i < G_N_ELEMENTS(sync_names); i++) {
        if (strcmp(name, sync_names[i]) == 0) {
            *out = (MirrorSync)i;
            return true;
        }
    }
    g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                "Parameter 'sync' does not accept value '%s'", name);
    return false;
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

/* Copies the first dirty range at or after @from (wrapping around); 1 if
 * one was copied (*@from moves past it), 0 if nothing is dirty. */
static int copy_next(MirrorJob *m, int64_t *from)
{
    int64_t len = bdrv_getlength(m->source), off, n;
    bool dirty;
    int ret;

    off = bdrv_dirty_bitmap_next_dirty(m->dirty, *from);
    if (off < 0 && *from > 0)
        off = bdrv_dirty_bitmap_next_dirty(m->dirty, 0);
    if (off < 0)
        return 0;
    if (!bdrv_dirty_bitmap_next_extent(m->dirty, off, MIN(len, off +
                                       m->buf_size), &dirty, &n))
        return 0;
    bdrv_dirty_bitmap_set(m->dirty, off, n, false);
    ret = bdrv_pread(m->source, off, n, m->buf);
    if (ret == 0 && buffer_is_zero(m->buf, n))
        ret = bdrv_pwrite_zeroes(m->target, off, n, m->zero_flags);
    else if (ret == 0)
        ret = bdrv_pwrite(m->target, off, n, m->buf, 0);
    if (ret < 0) {
        bdrv_dirty_bitmap_set(m->dirty, off, n, true); /* still to do */
        return ret;
    }
    job_progress_update(&m->common, n);
    *from = off + n >= len ? 0 : off + n;
    return 1;
}

/* Until nothing is dirty (in a drained section: nothing new comes). */
static int copy_all(MirrorJob *m)
{
    int64_t from = 0;
    int ret;

    while ((ret = copy_next(m, &from)) > 0)
        ;
    return ret;
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
    if (!bdrv_replace_node(m->replaces, m->target, errp))
        return -EBUSY;
    m->switched = true;
    return 0;
}

/* The end of a run that was not force-cancelled: the last copy in a
 * drained section, then the switch if job-complete asked for it. */
static int mirror_finish(MirrorJob *m, bool do_switch, GError **errp)
{
    BdrvDrain *drain = bdrv_drained_begin(m->source);
    int ret = copy_all(m);

    if (ret == 0)
        ret = bdrv_flush(m->target);
    if (ret < 0)
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                    "Mirror of '%s' failed to finish: %s",
                    bdrv_node_name(m->source), g_strerror(-ret));
    else if (do_switch)
        ret = switch_to_target(m, errp);
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

static int mirror_run(Job *job, GError **errp)
{
    MirrorJob *m = (MirrorJob *)job;
    int64_t from = 0, delay;
    bool do_switch = false;
    int ret = mark_initial(m);

    while (ret >= 0) {
        if (job_is_force_cancelled(job))
            return -ECANCELED;
        job_pause_point(job);
        job_drain_point(job);
        ret = copy_next(m, &from);
        if (ret == 0) {
            become_ready(m);
            if (wants_end(m, &do_switch))
                break;
            job_sleep_ns(job, READY_POLL_NS);
        } else if (ret > 0 &&
                   (delay = job_ratelimit_delay_ns(job, m->buf_size)) > 0) {
            job_sleep_ns(job, delay);
        }
    }
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                    "Mirror of '%s' to '%s' failed: %s",
                    bdrv_node_name(m->source), bdrv_node_name(m->target),
                    g_strerror(-ret));
        return ret;
    }
    return mirror_finish(m, do_switch, errp);
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

    if (m->dirty)
        bdrv_release_dirty_bitmap(m->dirty);
    m->dirty = NULL;
    g_clear_pointer(&m->source_edge, bdrv_user_detach);
    g_clear_pointer(&m->target_edge, bdrv_user_detach);
    if (m->target_was_read_only && !m->switched)
        bdrv_set_read_only(m->target);
    free(m->buf);
    m->buf = NULL;
}

static const JobDriver mirror_driver = {
    .type = "mirror",
    .instance_size = sizeof(MirrorJob),
    .block_job = true,
    .drains_itself = true,
    .run = mirror_run,
    .cancel = mirror_cancel,
    .complete = mirror_complete,
    .clean = mirror_clean,
};

/* QEMU's active commit is a mirror job of type "commit". */
static const JobDriver commit_active_driver = {
    .type = "commit",
    .instance_size = sizeof(MirrorJob),
    .block_job = true,
    .drains_itself = true,
    .run = mirror_run,
    .cancel = mirror_cancel,
    .complete = mirror_complete,
    .clean = mirror_clean,
};

/* --- creation -------------------------------------------------------------- */

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
                    "Node '%s' is not the source '%s' or a filter above it",
                    bdrv_node_name(o->replaces), bdrv_node_name(source));
        return false;
    }
    if (o->granularity && (o->granularity < 512 ||
                           o->granularity > 64 * 1024 * 1024 ||
                           (o->granularity & (o->granularity - 1)))) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Invalid parameter 'granularity': must be a power of 2 "
                    "between 512 and 64M");
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
    m->source = source;
    m->target = target;
    return true;
}

Job *mirror_job_create(const char *id, BlockNode *source, BlockNode *target,
                       const MirrorOptions *o, GError **errp)
{
    g_autofree char *name = NULL;
    MirrorJob *m;

    if (o->speed < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Invalid parameter 'speed'");
        return NULL;
    }
    if (!check_nodes(source, target, o, errp))
        return NULL;
    m = job_create(id, o->active_commit ? &commit_active_driver
                                        : &mirror_driver,
                   o->job_flags, errp);
    if (!m)
        return NULL;
    m->active_commit = o->active_commit;
    m->target_was_read_only = o->target_was_read_only;
    m->sync = o->sync;
    m->granularity = o->granularity ? o->granularity : DEFAULT_GRANULARITY;
    m->buf_size = MAX(o->buf_size ? o->buf_size : DEFAULT_BUF_SIZE,
                      m->granularity);
    m->replaces = o->replaces ? o->replaces : source;
    /* Unmapping is only safe where a hole reads as zero. */
    m->zero_flags = bdrv_has_zero_init(target) ? BDRV_REQ_MAY_UNMAP : 0;
    job_lock();
    m->common.speed = o->speed;
    job_unlock();
    name = g_strdup_printf("#mirror-%s", id);
    if (!attach_nodes(m, source, target, errp) ||
        !(m->dirty = bdrv_create_dirty_bitmap(source, name, m->granularity,
                                              errp)) ||
        !(m->buf = bdrv_blockalign(source, m->buf_size))) {
        job_cancel_created(&m->common);
        return NULL;
    }
    return &m->common;
}
