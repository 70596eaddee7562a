/*
 * commit.c - block-commit (see commit.h).
 *
 * Design notes.
 *
 * An intermediate commit needs no ordering with the users' writes: they go
 * to the active layer, above @top, and what the job writes into @base is
 * hidden by the layers it copies from until they are dropped.  So the copy
 * is a plain loop over the ranges whose allocation depth under @top lies
 * above @base.  Dropping happens at the end of run(), in a drained section
 * of @base (which holds every node above it): the overlay's header first,
 * then its backing link.  QEMU does the same in its job's prepare phase,
 * so with auto-finalize off the chain here changes before job-finalize.
 */
#include "jobs/commit.h"
#include "jobs/chain.h"
#include "jobs/mirror.h"

#include <errno.h>
#include <stdlib.h>

#define COMMIT_CHUNK (512 * 1024)

typedef struct CommitJob {
    Job common;
    BlockNode *overlay;       /* its backing link moves to base */
    BlockNode *top, *base;
    BlockChild *top_edge, *base_edge;
    GPtrArray *layer_edges;   /* "intermediate node" edges below top */
    ChainClaim claim;
    ChainWritable base_rw, overlay_rw;
    char *backing_file;
    bool mask_protocol;
    BlockdevOnError on_error;
    int base_depth;           /* of base under top */
    void *buf;
} CommitJob;

/* Copies [offset, offset + *n) into base if a layer above it holds it;
 * *n becomes how far the answer reaches. */
static int commit_chunk(CommitJob *c, int64_t offset, int64_t *n,
                        bool *is_read)
{
    int depth = bdrv_allocation_depth(c->top, offset, *n, n);
    int ret;

    *is_read = true;
    if (depth < 0)
        return depth;
    if (depth == 0 || depth >= c->base_depth)
        return 0;
    ret = bdrv_pread(c->top, offset, *n, c->buf);
    if (ret < 0)
        return ret;
    *is_read = false;
    /* Never MAY_UNMAP: a hole in base would show base's own backing. */
    if (buffer_is_zero(c->buf, *n))
        return bdrv_pwrite_zeroes(c->base, offset, *n, 0);
    return bdrv_pwrite(c->base, offset, *n, c->buf, 0);
}

static int drop_layers(CommitJob *c, GError **errp)
{
    BdrvDrain *drain = bdrv_drained_begin(c->base);
    bool ok = chain_set_backing(c->overlay, c->base, c->backing_file,
                                c->mask_protocol, errp);

    bdrv_drained_end(drain);
    return ok ? 0 : -EIO;
}

static int commit_copy_all(CommitJob *c, GError **errp)
{
    int64_t len = bdrv_getlength(c->top), offset = 0, n, delay;
    bool is_read;
    int ret;

    job_progress_set_total(&c->common, len);
    while (offset < len) {
        job_pause_point(&c->common);
        job_drain_point(&c->common);
        if (job_is_cancelled(&c->common))
            return -ECANCELED;
        n = MIN(COMMIT_CHUNK, len - offset);
        ret = commit_chunk(c, offset, &n, &is_read);
        if (ret < 0) {
            if (job_error_action(&c->common, c->on_error, is_read, -ret) ==
                BLOCK_ERROR_ACTION_REPORT) {
                g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                            "Commit of '%s' into '%s' failed %s: %s",
                            bdrv_node_name(c->top), bdrv_node_name(c->base),
                            is_read ? "reading" : "writing", g_strerror(-ret));
                return ret;
            }
            continue; /* ignore or stop: the same range again */
        }
        job_progress_update(&c->common, n);
        offset += n;
        if ((delay = job_ratelimit_delay_ns(&c->common, n)) > 0)
            job_sleep_ns(&c->common, delay);
    }
    return bdrv_flush(c->base);
}

static int commit_run(Job *job, GError **errp)
{
    CommitJob *c = (CommitJob *)job;
    int ret = commit_copy_all(c, errp);

    if (ret == -ECANCELED || (ret < 0 && errp && *errp))
        return ret;
    if (ret < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                    "Commit into '%s' failed to flush: %s",
                    bdrv_node_name(c->base), g_strerror(-ret));
        return ret;
    }
    return drop_layers(c, errp);
}

static void commit_clean(Job *job)
{
    CommitJob *c = (CommitJob *)job;

    g_clear_pointer(&c->top_edge, bdrv_user_detach);
    g_clear_pointer(&c->base_edge, bdrv_user_detach);
    g_clear_pointer(&c->layer_edges, g_ptr_array_unref);
    chain_restore_read_only(&c->base_rw, false);
    chain_restore_read_only(&c->overlay_rw, false);
    chain_release(&c->claim);
    if (c->overlay)
        bdrv_unref(c->overlay);
    c->overlay = NULL;
    g_clear_pointer(&c->backing_file, g_free);
    free(c->buf);
    c->buf = NULL;
}

static const JobDriver commit_driver = {
    .type = "commit",
    .instance_size = sizeof(CommitJob),
    .block_job = true,
    .drains_itself = true,
    .run = commit_run,
    .clean = commit_clean,
};

/* --- creation -------------------------------------------------------------- */

/* A base shorter than top grows to top's length first, as QEMU's
 * commit does, through an edge of its own that may resize it. */
static bool grow_base(BlockNode *top, BlockNode *base, GError **errp)
{
    int64_t top_len = bdrv_getlength(top);
    BlockChild *edge;
    BdrvDrain *drain;
    bool ok;

    if (bdrv_getlength(base) >= top_len)
        return true;
    edge = bdrv_user_attach(base, "block-commit", "resize",
                            BDRV_PERM_RESIZE | BDRV_PERM_WRITE,
                            BDRV_PERM_ALL, NULL, NULL, errp);
    if (!edge)
        return false;
    drain = bdrv_drained_begin(base);
    ok = bdrv_truncate(base, top_len, errp) == 0;
    bdrv_drained_end(drain);
    bdrv_user_detach(edge);
    return ok;
}

/* What the job holds: its nodes, their blockers, a writable base (and
 * overlay, for its header). */
static bool commit_attach(CommitJob *c, BlockNode *overlay, BlockNode *top,
                          BlockNode *base, GError **errp)
{
    /* QEMU's words, which management layers look for. */
    c->claim.reason = g_strdup("block device is in use by block job: commit");
    if (!chain_claim_node(&c->claim, overlay, false, errp) ||
        !chain_claim_range(&c->claim, top, base, errp) ||
        !chain_claim_node(&c->claim, base, true, errp))
        return false;
    bdrv_ref(overlay);
    c->overlay = overlay;
    c->top = top;
    c->base = base;
    if (!chain_make_writable(&c->base_rw, base, errp) ||
        !chain_make_writable(&c->overlay_rw, overlay, errp) ||
        !grow_base(top, base, errp) ||
        !job_attach_copy_nodes(&c->common, top, base, &c->top_edge,
                               &c->base_edge, errp))
        return false;
    /* the layers below top; top keeps its view (QEMU holds it too, through
     * a filter snapnbd does not insert) */
    c->layer_edges = chain_hold_layers(&c->common, overlay, top, base,
                                       CHAIN_COMMIT_LAYERS_SHARED, errp);
    return c->layer_edges != NULL;
}

static Job *intermediate_commit(const char *id, BlockNode *active,
                                BlockNode *top, BlockNode *base,
                                const ChainJobOptions *o, GError **errp)
{
    BlockNode *overlay = chain_overlay(active, top);
    CommitJob *c;

    if (!overlay) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "'%s' is not in this backing file chain",
                    bdrv_node_name(top));
        return NULL;
    }
    c = job_create(id, &commit_driver, o->job_flags, errp);
    if (!c)
        return NULL;
    c->on_error = o->on_error;
    c->backing_file = g_strdup(o->backing_file);
    c->mask_protocol = o->backing_mask_protocol;
    c->base_depth = bdrv_chain_depth(top, base);
    job_lock();
    c->common.speed = o->speed;
    job_unlock();
    if (!commit_attach(c, overlay, top, base, errp) ||
        !(c->buf = bdrv_blockalign(top, COMMIT_CHUNK))) {
        job_early_fail(&c->common);
        return NULL;
    }
    return &c->common;
}

static Job *active_commit(const char *id, BlockNode *top, BlockNode *base,
                          const ChainJobOptions *o, GError **errp)
{
    MirrorOptions mo = {
        .sync = MIRROR_SYNC_TOP,
        .speed = o->speed,
        .job_flags = o->job_flags,
        .active_commit = true,
        .target_was_read_only = bdrv_is_read_only(base),
    };
    Job *job;

    if (o->backing_file) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "'backing-file' specified, but 'top' is the active "
                    "layer");
        return NULL;
    }
    if (!bdrv_reopen_writable(base, errp))
        return NULL;
    job = grow_base(top, base, errp)
              ? mirror_job_create(id, top, base, &mo, errp)
              : NULL;
    if (!job && mo.target_was_read_only)
        bdrv_set_read_only(base);
    return job;
}

Job *commit_job_create(const char *id, BlockNode *active, BlockNode *top,
                       BlockNode *base, const ChainJobOptions *o,
                       GError **errp)
{
    g_autofree char *writer = NULL;

    if (bdrv_skip_filters(top) == bdrv_skip_filters(base)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "cannot commit an image into itself");
        return NULL;
    }
    if (o->speed < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Parameter 'speed' expects a non-negative value");
        return NULL;
    }
    if (bdrv_skip_filters(top) == bdrv_skip_filters(active))
        return active_commit(id, active, base, o, errp);
    writer = bdrv_find_writer(top, NULL);
    if (writer && o->backing_file) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "'backing-file' specified, but 'top' has a writer on it");
        return NULL;
    }
    if (writer) { /* QEMU would mirror it; its users sit mid-chain */
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Commit of '%s' refused: it is written by %s",
                    bdrv_node_name(top), writer);
        return NULL;
    }
    return intermediate_commit(id, active, top, base, o, errp);
}
