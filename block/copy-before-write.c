/*
 * copy-before-write.c - the "copy-before-write" filter: keeps the point in
 * time of its "file" child (the source) by copying old data to its
 * "target" child before it is overwritten (QEMU's block/copy-before-write.c).
 *
 * Design notes.
 *
 * The copy hooks the source node itself, as a before-write notifier, not
 * only the writes that pass through this filter: a live disk usually has
 * parents of its own (an NBD export added before the filter), and QEMU's
 * recipe of adding the filter with blockdev-add must keep the point in
 * time whichever way the guest's writes reach the source.  The notifier
 * runs before the source tracks the write, so copying the old data never
 * waits behind the write it protects (see block/io.c).
 *
 * The copying itself is block-copy's: chunks done at most once, by the
 * first thread to need them; the backup job's background copy uses the same
 * engine through bdrv_cbw_copy_state, so there is one copy-before-write in
 * the project.  Reads and writes through the filter go to the source
 * unchanged.
 *
 * Options (QEMU's): file, target, on-cbw-error (break-guest-write, the
 * default, or break-snapshot), cbw-timeout (seconds: how long a guest
 * write waits for its copies, for copies in flight, for chunks a reader
 * holds and for room in the store; the copies then go on, on copier
 * threads, and the write fails or breaks the snapshot as on-cbw-error
 * says, as in QEMU), bitmap (refused: not supported yet).
 *
 * snapnbd's: x-max-store-bytes, a limit on the bytes the target keeps
 * (copied and not discarded through snapshot-access), and x-on-store-full,
 * what a guest write does at the limit: break-snapshot (the default; the
 * write goes on, the point in time is lost, whatever on-cbw-error says) or
 * wait (until a snapshot-access reader discards what it has read; a
 * timeout then counts as a failed copy, for on-cbw-error to handle).
 */
#include "block/copy-before-write.h"
#include "block-int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

typedef struct CbwState {
    BlockNode *source;
    BlockNode *target;
    BlockCopyState *bcs;
    BlockNotifier *notifier;
    CbwConfig cfg;
    gint broken;          /* atomic: the point in time is lost */
    int break_error;      /* set once, before broken */
    int64_t source_written; /* atomic: see bdrv_cbw_source_written */
} CbwState;

/* bdrv_cbw_append's set-up for the open it runs on this thread: the node
 * must be configured before its notifier goes in (the point in time). */
static __thread const CbwConfig *pending_config;

static void cbw_break(CbwState *s, int error, bool is_read, int64_t offset)
{
    if (g_atomic_int_get(&s->broken))
        return;
    s->break_error = error;
    g_atomic_int_set(&s->broken, 1);
    /* Writes waiting for room need not any more. */
    block_copy_stop_waiting(s->bcs);
    if (error == -EDQUOT) /* not a failure: the limit set for it */
        fprintf(stderr, "snapnbd: copy-before-write of '%s' at offset %"
                G_GINT64_FORMAT ": the fleecing store '%s' is full "
                "(x-max-store-bytes %" G_GINT64_FORMAT "); the point in "
                "time is lost\n", bdrv_node_name(s->source), offset,
                bdrv_node_name(s->target), s->cfg.max_store_bytes);
    else if (bdrv_verbose)
        fprintf(stderr, "snapnbd: copy-before-write of '%s' failed %s at "
                "offset %" G_GINT64_FORMAT ": %s; the point in time is "
                "lost\n", bdrv_node_name(s->source),
                is_read ? "reading" : "writing", offset, g_strerror(-error));
    if (s->cfg.broken)
        s->cfg.broken(s->cfg.opaque, error, is_read, offset);
}

/* Every write to the source passes here, from all the users' threads: the
 * time is stored only when it moved on by CBW_WRITE_STAMP_US, so that its
 * line is mostly read, not bounced between cores on each write. */
static void note_source_write(CbwState *s)
{
    int64_t now = g_get_monotonic_time();

    if (now - __atomic_load_n(&s->source_written, __ATOMIC_RELAXED) >=
        CBW_WRITE_STAMP_US)
        __atomic_store_n(&s->source_written, now, __ATOMIC_RELAXED);
}

static int cbw_before_write(BlockNode *bs, BdrvWriteKind kind,
                            int64_t offset, int64_t bytes, void *opaque)
{
    CbwState *s = opaque;
    BlockCopyError err;
    int ret;

    if (kind == BDRV_DISCARD && !bdrv_discard_unmaps(bs))
        return 0; /* the discard will change nothing */
    if (g_atomic_int_get(&s->broken))
        return 0;
    note_source_write(s);
    if (block_copy_all_done(s->bcs, offset, bytes))
        return 0;
    if (s->cfg.before_copy)
        s->cfg.before_copy(s->cfg.opaque);
    ret = block_copy(s->bcs, offset, bytes, &err);
    if (s->cfg.after_copy)
        s->cfg.after_copy(s->cfg.opaque);
    if (ret < 0 && !s->cfg.break_snapshot && !err.store_full)
        return ret; /* break-guest-write: the snapshot holds */
    if (ret < 0)
        cbw_break(s, ret, err.is_read, offset);
    return 0;
}

/* x-max-store-bytes, x-on-store-full and cbw-timeout. */
static bool parse_store_options(CbwState *s, GHashTable *options,
                                GError **errp)
{
    g_autofree char *on_full = opt_take(options, "x-on-store-full");
    uint64_t max = 0, timeout = 0;

    if (!opt_take_size(options, "x-max-store-bytes", &max, errp) ||
        !opt_take_size(options, "cbw-timeout", &timeout, errp))
        return false;
    if (max > INT64_MAX || timeout > UINT32_MAX) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "copy-before-write: '%s' is out of range",
                    max > INT64_MAX ? "x-max-store-bytes" : "cbw-timeout");
        return false;
    }
    s->cfg.max_store_bytes = (int64_t)max;
    s->cfg.timeout_ns = (int64_t)timeout * 1000000000;
    if (!on_full || !strcmp(on_full, "break-snapshot")) {
        s->cfg.store_full_wait = false;
    } else if (!strcmp(on_full, "wait")) {
        s->cfg.store_full_wait = true;
    } else {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Parameter 'x-on-store-full' does not accept value "
                    "'%s'", on_full);
        return false;
    }
    return true;
}

static bool parse_options(CbwState *s, GHashTable *options, GError **errp)
{
    g_autofree char *on_error = opt_take(options, "on-cbw-error");

    if (opt_has_prefix(options, "bitmap")) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "copy-before-write: the 'bitmap' option is not "
                    "supported yet");
        return false;
    }
    if (!parse_store_options(s, options, errp))
        return false;
    if (!on_error || !strcmp(on_error, "break-guest-write")) {
        s->cfg.break_snapshot = false;
    } else if (!strcmp(on_error, "break-snapshot")) {
        s->cfg.break_snapshot = true;
    } else {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Parameter 'on-cbw-error' does not accept value '%s'",
                    on_error);
        return false;
    }
    return true;
}

static int cbw_open(BlockNode *bs, GHashTable *options, GError **errp)
{
    CbwState *s = bs->opaque;
    const CbwConfig *cfg = pending_config;

    pending_config = NULL;
    if (cfg)
        s->cfg = *cfg;
    else if (!parse_options(s, options, errp))
        return -EINVAL;
    s->source = bdrv_open_child(bs, options, "file", errp);
    if (!s->source)
        return -EINVAL;
    s->target = bdrv_open_child(bs, options, "target", errp);
    if (!s->target)
        return -EINVAL;
    if (bdrv_getlength(s->source) != bdrv_getlength(s->target)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Source and target image have different sizes");
        return -EINVAL;
    }
    s->bcs = block_copy_state_new(s->source, s->target,
                                  s->cfg.skip_unallocated, errp);
    if (!s->bcs)
        return -EINVAL;
    if (s->cfg.progress)
        block_copy_set_progress(s->bcs, s->cfg.progress, s->cfg.opaque);
    block_copy_set_store_limit(s->bcs, s->cfg.max_store_bytes,
                               s->cfg.store_full_wait
                                   ? BLOCK_COPY_STORE_FULL_WAIT
                                   : BLOCK_COPY_STORE_FULL_BREAK,
                               s->cfg.timeout_ns);
    /* From here on the target receives the point in time. */
    s->notifier = bdrv_add_before_write_notifier(s->source, cbw_before_write,
                                                 s);
    return 0;
}

static void cbw_close(BlockNode *bs)
{
    CbwState *s = bs->opaque;

    /* Waits for copy-before-writes in progress: none runs after this.
     * Those waiting for room give up first (nobody reads any more). */
    if (s->bcs)
        block_copy_stop_waiting(s->bcs);
    if (s->notifier)
        bdrv_remove_before_write_notifier(s->source, s->notifier);
    block_copy_state_free(s->bcs);
}

static int64_t cbw_get_length(BlockNode *bs)
{
    CbwState *s = bs->opaque;

    return s->source ? bdrv_getlength(s->source) : -EINVAL;
}

static int cbw_pread(BlockNode *bs, int64_t offset, int64_t bytes, void *buf)
{
    CbwState *s = bs->opaque;

    return bdrv_pread(s->source, offset, bytes, buf);
}

static int cbw_pwrite(BlockNode *bs, int64_t offset, int64_t bytes,
                      const void *buf, int flags)
{
    CbwState *s = bs->opaque;

    return bdrv_pwrite(s->source, offset, bytes, buf, flags);
}

static int cbw_pwrite_zeroes(BlockNode *bs, int64_t offset, int64_t bytes,
                             int flags)
{
    CbwState *s = bs->opaque;

    return bdrv_pwrite_zeroes(s->source, offset, bytes, flags);
}

static int cbw_pdiscard(BlockNode *bs, int64_t offset, int64_t bytes)
{
    CbwState *s = bs->opaque;

    return bdrv_pdiscard(s->source, offset, bytes);
}

/* The source as its parents use it, plus consistent reads for the copies;
 * the target is written, by this node only as far as it knows, and
 * neither may be resized (the sizes were checked once). */
static void cbw_child_perm(BlockNode *bs, const char *name, uint32_t perm,
                           uint32_t shared, uint32_t *nperm,
                           uint32_t *nshared)
{
    if (strcmp(name, "target") == 0) {
        *nperm = BDRV_PERM_WRITE;
        *nshared = BDRV_PERM_ALL & ~BDRV_PERM_RESIZE;
        return;
    }
    bdrv_child_perm_filtered(bs, name, perm, shared, nperm, nshared);
    *nperm |= BDRV_PERM_CONSISTENT_READ;
    *nshared &= ~BDRV_PERM_RESIZE;
}

static char *cbw_describe(BlockNode *bs)
{
    CbwState *s = bs->opaque;

    return g_strdup_printf("target=%s on-cbw-error=%s%s%s",
                           bdrv_node_name(s->target),
                           s->cfg.break_snapshot ? "break-snapshot"
                                                 : "break-guest-write",
                           s->cfg.store_full_wait ? " x-on-store-full=wait"
                                                  : "",
                           g_atomic_int_get(&s->broken) ? " (broken)" : "");
}

const BlockDriver bdrv_copy_before_write = {
    .name = "copy-before-write",
    .state_size = sizeof(CbwState),
    .is_filter = true,
    .open = cbw_open,
    .close = cbw_close,
    .get_length = cbw_get_length,
    .describe = cbw_describe,
    .pread = cbw_pread,
    .pwrite = cbw_pwrite,
    .pwrite_zeroes = cbw_pwrite_zeroes,
    .pdiscard = cbw_pdiscard,
    .child_perm = cbw_child_perm,
    .supported_write_flags = BDRV_REQ_FUA,
    .supported_zero_flags = BDRV_REQ_MAY_UNMAP | BDRV_REQ_NO_FALLBACK,
};

BlockNode *bdrv_cbw_append(BlockNode *source, BlockNode *target,
                           const char *node_name, const CbwConfig *cfg,
                           GError **errp)
{
    g_autoptr(GHashTable) o = opt_new();
    BlockNode *bs;

    g_hash_table_insert(o, g_strdup("driver"),
                        g_strdup("copy-before-write"));
    if (node_name)
        g_hash_table_insert(o, g_strdup("node-name"), g_strdup(node_name));
    g_hash_table_insert(o, g_strdup("file"),
                        g_strdup(bdrv_node_name(source)));
    g_hash_table_insert(o, g_strdup("target"),
                        g_strdup(bdrv_node_name(target)));
    pending_config = cfg;
    bs = bdrv_open(o, errp);
    pending_config = NULL;
    return bs;
}

void bdrv_cbw_deactivate(BlockNode *cbw)
{
    CbwState *s = cbw->opaque;

    if (cbw->drv != &bdrv_copy_before_write || !s->notifier)
        return;
    block_copy_stop_waiting(s->bcs);
    /* Waits for copy-before-writes in progress: none runs after this. */
    bdrv_remove_before_write_notifier(s->source, s->notifier);
    s->notifier = NULL;
    memset(&s->cfg, 0, sizeof(s->cfg));
}

BlockCopyState *bdrv_cbw_copy_state(BlockNode *cbw)
{
    if (cbw->drv != &bdrv_copy_before_write)
        return NULL;
    return ((CbwState *)cbw->opaque)->bcs;
}

bool bdrv_cbw_broken(BlockNode *cbw, int *error)
{
    CbwState *s = cbw->opaque;

    if (cbw->drv != &bdrv_copy_before_write || !g_atomic_int_get(&s->broken))
        return false;
    *error = s->break_error;
    return true;
}

/* The copy-before-write node that has @bs as its "target", or NULL.
 * Under graph_lock. */
static BlockNode *cbw_of_target_locked(BlockNode *bs)
{
    for (guint i = 0; i < bs->parents->len; i++) {
        const BlockChild *c = g_ptr_array_index(bs->parents, i);

        if (c->parent && c->parent->drv == &bdrv_copy_before_write &&
            strcmp(c->name, "target") == 0)
            return c->parent;
    }
    return NULL;
}

bool bdrv_is_point_in_time(BlockNode *bs)
{
    bool pit = bs->drv == &bdrv_snapshot_access;

    bdrv_graph_lock();
    pit = pit || cbw_of_target_locked(bs);
    bdrv_graph_unlock();
    return pit;
}

int64_t bdrv_cbw_source_written(BlockNode *cbw)
{
    CbwState *s = cbw->opaque;

    if (cbw->drv != &bdrv_copy_before_write)
        return 0;
    return __atomic_load_n(&s->source_written, __ATOMIC_RELAXED);
}

/* The copy-before-write node @bs is the point in time of: its "file"
 * (snapshot-access) or its parent through "target"; referenced. */
static BlockNode *pit_cbw_ref(BlockNode *bs)
{
    BlockNode *cbw = NULL;

    bdrv_graph_lock();
    if (bs->drv == &bdrv_snapshot_access) {
        for (guint i = 0; !cbw && i < bs->children->len; i++) {
            const BlockChild *c = g_ptr_array_index(bs->children, i);
            if (c->node && c->node->drv == &bdrv_copy_before_write)
                cbw = c->node;
        }
    }
    if (!cbw)
        cbw = cbw_of_target_locked(bs);
    if (cbw && !bdrv_ref_if_alive(cbw))
        cbw = NULL;
    bdrv_graph_unlock();
    return cbw;
}

bool bdrv_point_in_time_source_busy(BlockNode *bs, int64_t us)
{
    BlockNode *cbw = pit_cbw_ref(bs);
    int64_t written;

    if (!cbw)
        return false;
    written = bdrv_cbw_source_written(cbw);
    bdrv_unref(cbw);
    return written && g_get_monotonic_time() - written < us;
}

bool bdrv_cbw_stats(BlockNode *cbw, BdrvCbwStats *st)
{
    CbwState *s = cbw->opaque;

    if (cbw->drv != &bdrv_copy_before_write || !s->bcs)
        return false;
    memset(st, 0, sizeof(*st));
    block_copy_get_stats(s->bcs, &st->copy);
    st->broken = g_atomic_int_get(&s->broken);
    if (st->broken)
        st->break_error = s->break_error;
    return true;
}

static void release_node(BlockNode *bs, void *opaque)
{
    CbwState *s = bs->opaque;

    if (bs->drv == &bdrv_copy_before_write && s->bcs)
        block_copy_stop_waiting(s->bcs);
}

void bdrv_cbw_release_all(void)
{
    bdrv_foreach_node(release_node, NULL);
}
