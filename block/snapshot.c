/*
 * snapshot.c - internal snapshots of a node (QEMU's block/snapshot.c),
 * amending an image and the image information the monitor reports: the
 * calls the monitor makes,
 * passed to the driver that knows (qcow2, rbd).  The caller holds a
 * drained section of the node for create and delete.
 *
 * A node whose driver has no snapshots passes them to its only child
 * "file", as QEMU's bdrv_snapshot_fallback: a raw node over an rbd node
 * snapshots the RBD image.
 */
#include "block-int.h"

#include <errno.h>

void bdrv_snapshot_info_clear(BdrvSnapshotInfo *info)
{
    g_clear_pointer(&info->id, g_free);
    g_clear_pointer(&info->name, g_free);
}

static void info_clear(gpointer p)
{
    bdrv_snapshot_info_clear(p);
}

/* The node whose driver takes @bs's snapshots, or NULL. */
static BlockNode *snapshot_node(BlockNode *bs)
{
    while (bs && !bs->drv->snapshot_create) {
        bs = bs->children->len == 1 ? bdrv_child(bs, "file") : NULL;
    }
    return bs;
}

bool bdrv_can_snapshot(BlockNode *bs)
{
    return snapshot_node(bs) != NULL;
}

static bool check_driver(BlockNode *bs, GError **errp)
{
    if (bdrv_can_snapshot(bs))
        return true;
    g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                "Block format '%s' used by node '%s' does not support "
                "internal snapshots", bs->drv->name, bdrv_node_name(bs));
    return false;
}

GArray *bdrv_snapshot_list(BlockNode *bs, GError **errp)
{
    GArray *list;

    if (!check_driver(bs, errp))
        return NULL;
    bs = snapshot_node(bs);
    list = bs->drv->snapshot_list(bs, errp);
    if (list)
        g_array_set_clear_func(list, info_clear);
    return list;
}

int bdrv_snapshot_create(BlockNode *bs, const char *name,
                         BdrvSnapshotInfo *info, GError **errp)
{
    if (!check_driver(bs, errp))
        return -ENOTSUP;
    bs = snapshot_node(bs);
    return bs->drv->snapshot_create(bs, name, info, errp);
}

int bdrv_snapshot_delete(BlockNode *bs, const char *id, const char *name,
                         BdrvSnapshotInfo *info, GError **errp)
{
    if (!check_driver(bs, errp))
        return -ENOTSUP;
    bs = snapshot_node(bs);
    return bs->drv->snapshot_delete(bs, id, name, info, errp);
}

void bdrv_get_image_info(BlockNode *bs, BdrvImageInfo *info)
{
    *info = (BdrvImageInfo){ 0 };
    if (bs->drv->get_image_info)
        bs->drv->get_image_info(bs, info);
}

void bdrv_image_info_clear(BdrvImageInfo *info)
{
    for (guint i = 0; info->bitmaps && i < info->bitmaps->len; i++)
        g_free(g_array_index(info->bitmaps, BdrvBitmapInfo, i).name);
    g_clear_pointer(&info->bitmaps, g_array_unref);
}

int bdrv_amend(BlockNode *bs, const BdrvAmendOptions *opts, GError **errp)
{
    BdrvDrain *drain;
    int ret;

    if (!bs->drv->amend) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "Driver does not support x-blockdev-amend");
        return -ENOTSUP;
    }
    drain = bdrv_drained_begin(bs);
    ret = bs->drv->amend(bs, opts, errp);
    bdrv_drained_end(drain);
    return ret;
}
