/*
 * qmp-snapshot.c - live external snapshots: blockdev-snapshot (the overlay
 * added with blockdev-add) and blockdev-snapshot-sync (the overlay created
 * here), as QEMU does them.
 *
 * In one drained section of the node (no request of any user in flight,
 * none starting), the overlay gets the node as its backing, every user of
 * the node (exports, the plugin) moves to the overlay, and the node becomes
 * read-only: writes from then on land in the overlay, and the old image is
 * the disk as it was at that instant.
 */
#include "qmp-int.h"

#include "block/block.h"

#include <string.h>

static bool take_snapshot(BlockNode *node, BlockNode *overlay, GError **errp)
{
    g_autofree char *user = bdrv_find_user(overlay, NULL);
    g_autofree char *over_backing = bdrv_find_parent_by_link(overlay,
                                                             "backing");
    g_autofree char *over_file = bdrv_find_parent_by_link(overlay, "file");
    g_autofree char *node_backing = bdrv_find_parent_by_link(node, "backing");
    g_autofree char *node_file = bdrv_find_parent_by_link(node, "file");
    BdrvDrain *drain;
    bool ok;

    if (node == overlay) {
        qmp_error(errp, "The overlay cannot be the node itself");
        return false;
    }
    if (user || over_backing || over_file) {
        qmp_error(errp, "The overlay is already in use");
        return false;
    }
    /* Its users move to the overlay; a node above it could not. */
    if (node_backing || node_file) {
        qmp_error(errp, "Cannot snapshot node '%s': node '%s' uses it",
                  bdrv_node_name(node),
                  node_backing ? node_backing : node_file);
        return false;
    }
    if (bdrv_is_read_only(overlay)) {
        qmp_error(errp, "The overlay '%s' is read-only",
                  bdrv_node_name(overlay));
        return false;
    }
    if (bdrv_getlength(overlay) < bdrv_getlength(node)) {
        qmp_error(errp, "The overlay is smaller than '%s'",
                  bdrv_node_name(node));
        return false;
    }
    drain = bdrv_drained_begin(node);
    ok = bdrv_set_backing(overlay, node, errp) &&
         bdrv_replace_node(node, overlay, errp);
    if (ok)
        bdrv_set_read_only(node);
    bdrv_drained_end(drain);
    return ok;
}

static BlockNode *find(const char *name, GError **errp)
{
    BlockNode *bs = bdrv_find_node(name);

    if (!bs)
        qmp_error(errp, "Cannot find device='%s' nor node-name='%s'", name,
                  name);
    return bs;
}

static JsonNode *cmd_blockdev_snapshot(JsonObject *args, GError **errp)
{
    const char *node = qmp_arg_str(args, "node", true, errp);
    const char *overlay = node ? qmp_arg_str(args, "overlay", true, errp)
                               : NULL;
    BlockNode *bs, *ov;

    if (overlay && (bs = find(node, errp)) && (ov = find(overlay, errp)))
        take_snapshot(bs, ov, errp);
    return NULL;
}

/* The overlay image of blockdev-snapshot-sync: a new qcow2 (mode
 * absolute-paths, the default) naming the node's image as its backing, or
 * an existing one (mode existing); opened without its backing, which
 * take_snapshot attaches. */
static BlockNode *open_overlay(BlockNode *bs, const char *file,
                               const char *node_name, bool existing,
                               GError **errp)
{
    g_autoptr(GHashTable) o =
        g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);

    if (!existing) {
        g_hash_table_insert(o, g_strdup("backing_file"),
                            g_strdup(bdrv_filename(bs)));
        g_hash_table_insert(o, g_strdup("backing_fmt"),
                            g_strdup(bdrv_driver_name(bs)));
        if (bdrv_create("qcow2", file, bdrv_getlength(bs), o, errp) < 0)
            return NULL;
        g_hash_table_remove_all(o);
    }
    g_hash_table_insert(o, g_strdup("driver"), g_strdup("qcow2"));
    if (node_name)
        g_hash_table_insert(o, g_strdup("node-name"), g_strdup(node_name));
    g_hash_table_insert(o, g_strdup("file.driver"), g_strdup("file"));
    g_hash_table_insert(o, g_strdup("file.filename"), g_strdup(file));
    g_hash_table_insert(o, g_strdup("backing"), g_strdup("null"));
    return bdrv_open(o, errp);
}

static JsonNode *cmd_blockdev_snapshot_sync(JsonObject *args, GError **errp)
{
    GError *err = NULL;
    const char *device = qmp_arg_str(args, "device", false, &err);
    const char *node = err ? NULL : qmp_arg_str(args, "node-name", false, &err);
    const char *file = err ? NULL
                           : qmp_arg_str(args, "snapshot-file", true, &err);
    const char *name = err ? NULL : qmp_arg_str(args, "snapshot-node-name",
                                                false, &err);
    const char *format = err ? NULL : qmp_arg_str(args, "format", false, &err);
    const char *mode = err ? NULL : qmp_arg_str(args, "mode", false, &err);
    BlockNode *bs, *overlay;

    if (err) {
        g_propagate_error(errp, err);
        return NULL;
    }
    if (!device && !node) {
        qmp_error(errp, "Cannot find device= nor node-name=");
        return NULL;
    }
    if (format && strcmp(format, "qcow2") != 0) {
        qmp_error(errp, "Snapshot format '%s' is not supported (qcow2)",
                  format);
        return NULL;
    }
    if (mode && strcmp(mode, "existing") && strcmp(mode, "absolute-paths")) {
        qmp_error(errp, "Parameter 'mode' does not accept value '%s'", mode);
        return NULL;
    }
    if (name && bdrv_find_node(name)) {
        qmp_error(errp, "Duplicate nodes with node-name='%s'", name);
        return NULL;
    }
    bs = find(node ? node : device, errp);
    if (!bs)
        return NULL;
    overlay = open_overlay(bs, file, name, mode && !strcmp(mode, "existing"),
                           errp);
    if (!overlay)
        return NULL;
    take_snapshot(bs, overlay, errp);
    bdrv_unref(overlay); /* its users hold it now, or it goes */
    return NULL;
}

void qmp_register_snapshot_commands(void)
{
    qmp_register_command_args("blockdev-snapshot", cmd_blockdev_snapshot,
                              "node,overlay");
    qmp_register_command_args("blockdev-snapshot-sync",
                              cmd_blockdev_snapshot_sync,
                              "device,node-name,snapshot-file,"
                              "snapshot-node-name,format,mode");
}
