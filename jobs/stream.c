/*
 * stream.c - block-stream (see commit.h).
 *
 * Design notes.
 *
 * Copying data up into a layer the users write is only right if no write
 * lands in the range between the job's read below and its write above.
 * As QEMU 7.2 does, the job puts a copy-on-read filter above @top for its
 * lifetime (every user edge of @top moves to it, in a drained section) and
 * copies through the filter's prefetch: the filter locks each range for a
 * copy or a write, so the two never interleave, and it copies only runs
 * that @top does not hold.  At the end of run() the header of @top names
 * @base and its backing link follows, in a drained section; clean puts the
 * users back on @top and drops the filter, whether the job succeeded,
 * failed or was cancelled.
 *
 * The job reads each range of the layers below @top once and trusts it
 * not to change, so, as in QEMU, it holds an "intermediate node" edge on
 * each of them that shares consistent read and write-unchanged only: a
 * writer there (a writable export of the base, say) is refused, now or
 * later, with QEMU's permission conflict.
 */
#include "jobs/commit.h"
#include "jobs/chain.h"

#include <errno.h>

#define STREAM_CHUNK (512 * 1024)

typedef struct StreamJob {
    Job common;
    BlockNode *top, *base;    /* base may be NULL: the whole chain */
    BlockNode *cor;           /* the copy-on-read filter above top */
    BlockChild *cor_edge;     /* the job's, for drained sections */
    GPtrArray *layer_edges;   /* "intermediate node" edges below top */
    ChainClaim claim;
    ChainWritable top_rw;
    char *backing_file;
    bool mask_protocol;
    BlockdevOnError on_error;
    int base_depth;           /* of base under top; 0 without base */
} StreamJob;

static bool below_top(StreamJob *s, int depth)
{
    return depth >= 2 && (s->base_depth == 0 || depth < s->base_depth);
}

static int stream_chunk(StreamJob *s, int64_t offset, int64_t *n)
{
    int depth = bdrv_allocation_depth(s->top, offset, *n, n);

    if (depth < 0)
        return depth;
    return below_top(s, depth) ? bdrv_prefetch(s->cor, offset, *n) : 0;
}

static int stream_copy_all(StreamJob *s, GError **errp)
{
    int64_t len = bdrv_getlength(s->top), offset = 0, n, delay;
    int ret;

    job_progress_set_total(&s->common, len);
    while (offset < len) {
        job_pause_point(&s->common);
        job_drain_point(&s->common);
        if (job_is_cancelled(&s->common))
            return -ECANCELED;
        n = MIN(STREAM_CHUNK, len - offset);
        ret = stream_chunk(s, offset, &n);
        if (ret < 0) {
            if (job_error_action(&s->common, s->on_error, true, -ret) ==
                BLOCK_ERROR_ACTION_REPORT) {
                g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                            "Stream into '%s' failed: %s",
                            bdrv_node_name(s->top), g_strerror(-ret));
                return ret;
            }
            continue;
        }
        job_progress_update(&s->common, n);
        offset += n;
        if ((delay = job_ratelimit_delay_ns(&s->common, n)) > 0)
            job_sleep_ns(&s->common, delay);
    }
    return 0;
}

static int stream_run(Job *job, GError **errp)
{
    StreamJob *s = (StreamJob *)job;
    BdrvDrain *drain;
    int ret = stream_copy_all(s, errp);
    bool ok;

    if (ret < 0)
        return ret;
    drain = bdrv_drained_begin(s->top);
    ok = chain_set_backing(s->top, s->base, s->backing_file,
                           s->mask_protocol, errp);
    bdrv_drained_end(drain);
    return ok ? 0 : -EIO;
}

/* The users go back to top; the filter goes away with its last user. */
static void remove_filter(StreamJob *s)
{
    g_autoptr(GError) err = NULL;
    BdrvDrain *drain;

    if (!s->cor)
        return;
    drain = bdrv_drained_begin(s->top);
    if (!bdrv_replace_node(s->cor, s->top, &err))
        g_warning("block-stream: the users of '%s' stay on its filter: %s",
                  bdrv_node_name(s->top), err->message);
    bdrv_drained_end(drain);
    bdrv_unref(s->cor);
    s->cor = NULL;
}

static void stream_clean(Job *job)
{
    StreamJob *s = (StreamJob *)job;

    g_clear_pointer(&s->cor_edge, bdrv_user_detach);
    g_clear_pointer(&s->layer_edges, g_ptr_array_unref);
    remove_filter(s);
    chain_restore_read_only(&s->top_rw, false);
    chain_release(&s->claim);
    g_clear_pointer(&s->backing_file, g_free);
}

static const JobDriver stream_driver = {
    .type = "stream",
    .instance_size = sizeof(StreamJob),
    .block_job = true,
    .drains_itself = true,
    .run = stream_run,
    .clean = stream_clean,
};

/* --- creation -------------------------------------------------------------- */

/* The filter, with QEMU's "bottom": the lowest layer copied from. */
static BlockNode *open_filter(StreamJob *s, const char *node_name,
                              GError **errp)
{
    g_autoptr(GHashTable) o = g_hash_table_new_full(g_str_hash, g_str_equal,
                                                    g_free, g_free);
    BlockNode *bottom = s->base ? chain_overlay(s->top, s->base) : NULL;

    g_hash_table_insert(o, g_strdup("driver"), g_strdup("copy-on-read"));
    g_hash_table_insert(o, g_strdup("file"),
                        g_strdup(bdrv_node_name(s->top)));
    if (node_name)
        g_hash_table_insert(o, g_strdup("node-name"), g_strdup(node_name));
    if (bottom)
        g_hash_table_insert(o, g_strdup("bottom"),
                            g_strdup(bdrv_node_name(bottom)));
    return bdrv_open(o, errp);
}

static bool insert_filter(StreamJob *s, const char *node_name, GError **errp)
{
    BdrvDrain *drain;
    bool ok;

    s->cor = open_filter(s, node_name, errp);
    if (!s->cor)
        return false;
    drain = bdrv_drained_begin(s->top);
    ok = bdrv_replace_node(s->top, s->cor, errp);
    bdrv_drained_end(drain);
    if (!ok) {
        bdrv_unref(s->cor);
        s->cor = NULL;
    }
    return ok;
}

static bool stream_attach(StreamJob *s, const char *filter_node_name,
                          GError **errp)
{
    g_autofree char *holder = g_strdup_printf("stream job '%s'",
                                              s->common.id);

    s->claim.reason = g_strdup("block device is in use by block job: "
                               "stream");
    s->claim.writers_by_perm = true;
    if (!chain_claim_node(&s->claim, s->top, false, errp) ||
        !chain_claim_range(&s->claim, chain_backing(s->top), s->base, errp))
        return false;
    if (s->base && !chain_claim_node(&s->claim, s->base, false, errp))
        return false;
    if (!chain_make_writable(&s->top_rw, s->top, errp) ||
        !insert_filter(s, filter_node_name, errp))
        return false;
    s->cor_edge = bdrv_user_attach(s->cor, holder, "source",
                                   BDRV_PERM_CONSISTENT_READ,
                                   BDRV_PERM_ALL & ~BDRV_PERM_RESIZE,
                                   &job_user_ops, &s->common, errp);
    if (!s->cor_edge)
        return false;
    /* the layers the job reads: no one else may write or resize them */
    s->layer_edges = chain_hold_layers(
        &s->common, s->top, s->top, s->base,
        BDRV_PERM_CONSISTENT_READ | BDRV_PERM_WRITE_UNCHANGED, errp);
    return s->layer_edges != NULL;
}

Job *stream_job_create(const char *id, BlockNode *top, BlockNode *base,
                       const ChainJobOptions *o, GError **errp)
{
    StreamJob *s;

    if (!base && o->backing_file) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "backing file specified, but streaming the entire chain");
        return NULL;
    }
    if (o->speed < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Parameter 'speed' expects a non-negative value");
        return NULL;
    }
    s = job_create(id, &stream_driver, o->job_flags, errp);
    if (!s)
        return NULL;
    s->top = bdrv_skip_filters(top);
    s->base = base;
    s->on_error = o->on_error;
    s->backing_file = g_strdup(o->backing_file);
    s->mask_protocol = o->backing_mask_protocol;
    s->base_depth = base ? bdrv_chain_depth(s->top, base) : 0;
    job_lock();
    s->common.speed = o->speed;
    job_unlock();
    if (!stream_attach(s, o->filter_node_name, errp)) {
        job_early_fail(&s->common);
        return NULL;
    }
    return &s->common;
}
