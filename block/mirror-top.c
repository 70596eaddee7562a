/*
 * mirror-top.c - the filter a mirror job puts above the node it replaces
 * when given filter-node-name (QEMU's "mirror_top"): its users' requests
 * pass to its "file" child unchanged.  The job does its work with
 * notifiers on the source (jobs/mirror.c); this node only gives the graph
 * QEMU's shape while the job runs, and is where the users are moved from
 * at the end (to the target, or back).  Not for blockdev-add.
 *
 * Once its users moved away the job detaches it (in a drained section):
 * it lets go of its child at once, so that the graph below is free for
 * other changes, while the node itself lives a little longer for requests
 * that looked it up just before the move; those go where its users went
 * (replaced_by).
 */
#include "block-int.h"

#include <errno.h>

typedef struct MirrorTopState {
    BlockNode *file;   /* NULL once detached */
} MirrorTopState;

/* Where a request goes: the child, or after the detach the node that took
 * the filter's users. */
static BlockNode *below(BlockNode *bs)
{
    MirrorTopState *s = bs->opaque;
    BlockNode *file = __atomic_load_n(&s->file, __ATOMIC_ACQUIRE);

    return file ? file : __atomic_load_n(&bs->replaced_by, __ATOMIC_ACQUIRE);
}

void bdrv_mirror_top_detach(BlockNode *bs)
{
    MirrorTopState *s = bs->opaque;

    g_assert(bs->drv == &bdrv_mirror_top && bs->replaced_by);
    __atomic_store_n(&s->file, NULL, __ATOMIC_RELEASE);
    bdrv_children_detach_all(bs);
}

static int mirror_top_open(BlockNode *bs, GHashTable *options, GError **errp)
{
    MirrorTopState *s = bs->opaque;

    s->file = bdrv_open_child(bs, options, "file", errp);
    return s->file ? 0 : -EINVAL;
}

static void mirror_top_close(BlockNode *bs)
{
    (void)bs; /* the child goes with the node */
}

static int64_t mirror_top_get_length(BlockNode *bs)
{
    return bdrv_getlength(below(bs));
}

static void mirror_top_refresh_limits(BlockNode *bs, BlockLimits *limits)
{
    MirrorTopState *s = bs->opaque;
    *limits = *bdrv_limits(s->file);
}

static int mirror_top_pread(BlockNode *bs, int64_t offset, int64_t bytes,
                            void *buf)
{
    return bdrv_pread(below(bs), offset, bytes, buf);
}

static int mirror_top_pwrite(BlockNode *bs, int64_t offset, int64_t bytes,
                             const void *buf, int flags)
{
    return bdrv_pwrite(below(bs), offset, bytes, buf, flags);
}

static int mirror_top_pwrite_zeroes(BlockNode *bs, int64_t offset,
                                    int64_t bytes, int flags)
{
    return bdrv_pwrite_zeroes(below(bs), offset, bytes, flags);
}

static int mirror_top_pdiscard(BlockNode *bs, int64_t offset, int64_t bytes)
{
    return bdrv_pdiscard(below(bs), offset, bytes);
}

static int mirror_top_prefetch(BlockNode *bs, int64_t offset, int64_t bytes)
{
    return bdrv_prefetch(below(bs), offset, bytes);
}

/* A filter: block status looks through it (io.c), flushes reach the
 * child, permissions pass through. */
const BlockDriver bdrv_mirror_top = {
    .name = "mirror_top",
    .state_size = sizeof(MirrorTopState),
    .is_filter = true,
    .open = mirror_top_open,
    .close = mirror_top_close,
    .get_length = mirror_top_get_length,
    .refresh_limits = mirror_top_refresh_limits,
    .pread = mirror_top_pread,
    .pwrite = mirror_top_pwrite,
    .pwrite_zeroes = mirror_top_pwrite_zeroes,
    .pdiscard = mirror_top_pdiscard,
    .prefetch = mirror_top_prefetch,
    .child_perm = bdrv_child_perm_filtered,
    .supported_write_flags = BDRV_REQ_FUA | BDRV_REQ_SERIALISING,
    .supported_zero_flags = BDRV_REQ_MAY_UNMAP | BDRV_REQ_NO_FALLBACK |
                            BDRV_REQ_FUA,
    .can_fast_zero = true,
};
