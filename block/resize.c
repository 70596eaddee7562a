/*
 * resize.c - changing a node's length (QEMU's bdrv_co_truncate).
 *
 * Design notes.
 *
 * The caller holds an edge with BDRV_PERM_RESIZE on the node (so nobody
 * who relies on the size, an export or a job, is using it) and a drained
 * section on it: no request of any user runs while the driver changes its
 * metadata, so a driver may swap tables that readers use without locks
 * (the qcow2 L1 table).
 *
 * The driver resizes its own children as it needs (a format its image
 * file); a filter without a callback passes the request to its "file"
 * child.  Afterwards the cached length of the node and of every node above
 * it is read again from the drivers, as QEMU's bdrv_parent_cb_resize, and
 * the node's dirty bitmaps follow the new length.
 */
#include "block-int.h"

#include <errno.h>

/* Rereads the length of @bs and of the nodes above it. */
static void refresh_lengths(BlockNode *bs)
{
    g_autoptr(GPtrArray) parents = g_ptr_array_new();
    int64_t len = bs->drv->get_length(bs);

    if (len >= 0)
        __atomic_store_n(&bs->total_bytes, len, __ATOMIC_RELAXED);
    /* The protocol's cached data extent may lie past a shrunk end. */
    g_mutex_lock(&bs->status_cache_lock);
    bs->status_cache_gen++;
    bs->status_cache_end = bs->status_cache_start;
    g_mutex_unlock(&bs->status_cache_lock);
    bdrv_dirty_bitmap_truncate(bs, bdrv_getlength(bs));

    bdrv_graph_lock();
    for (guint i = 0; i < bs->parents->len; i++) {
        BlockChild *c = g_ptr_array_index(bs->parents, i);
        if (c->parent)
            g_ptr_array_add(parents, c->parent);
    }
    bdrv_graph_unlock();
    for (guint i = 0; i < parents->len; i++)
        refresh_lengths(g_ptr_array_index(parents, i));
}

int bdrv_truncate(BlockNode *bs, int64_t size, GError **errp)
{
    int ret;

    if (size < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Image size cannot be negative");
        return -EINVAL;
    }
    if (size > BDRV_MAX_LENGTH) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Required too big image size, it must be not greater "
                    "than %" G_GINT64_FORMAT, (int64_t)BDRV_MAX_LENGTH);
        return -EFBIG;
    }
    if (bs->read_only) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_READ_ONLY,
                    "Image is read-only");
        return -EACCES;
    }
    if (bs->drv->truncate) {
        ret = bs->drv->truncate(bs, size, errp);
    } else if (bs->drv->is_filter && bdrv_child(bs, "file")) {
        ret = bdrv_truncate(bdrv_child(bs, "file"), size, errp);
    } else {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "Image format driver does not support resize");
        return -ENOTSUP;
    }
    refresh_lengths(bs);
    return ret;
}
