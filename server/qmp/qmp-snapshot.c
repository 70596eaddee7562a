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
#include "block/image-opts.h"

#include "block/block.h"
#include "server/qmp/qmp-types-gen.h"

#include <string.h>

/* May @overlay take @node's place?  Says why not, in QEMU's words. */
static bool check_snapshot(BlockNode *node, BlockNode *overlay,
                           GError **errp)
{
    g_autofree char *user = bdrv_find_user(overlay, NULL);
    g_autofree char *over_backing = bdrv_find_parent_by_link(overlay,
                                                             "backing");
    g_autofree char *over_file = bdrv_find_parent_by_link(overlay, "file");
    g_autofree char *node_backing = bdrv_find_parent_by_link(node, "backing");
    g_autofree char *node_file = bdrv_find_parent_by_link(node, "file");

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
    return true;
}

/* The switch, in one drained section; undone by undo_snapshot.  The old
 * node becomes read-only at commit (finish_snapshot). */
static bool take_snapshot(BlockNode *node, BlockNode *overlay, GError **errp)
{
    BdrvDrain *drain;
    bool ok;

    if (!check_snapshot(node, overlay, errp))
        return false;
    drain = bdrv_drained_begin(node);
    ok = bdrv_set_backing(overlay, node, errp);
    if (ok && !bdrv_replace_node(node, overlay, errp)) {
        bdrv_clear_backing(overlay);
        ok = false;
    }
    bdrv_drained_end(drain);
    return ok;
}

static void undo_snapshot(BlockNode *node, BlockNode *overlay)
{
    BdrvDrain *drain = bdrv_drained_begin(overlay);
    g_autoptr(GError) err = NULL;

    if (!bdrv_replace_node(overlay, node, &err))
        g_warning("cannot undo the snapshot of '%s': %s",
                  bdrv_node_name(node), err->message);
    bdrv_clear_backing(overlay);
    bdrv_drained_end(drain);
}

static void finish_snapshot(BlockNode *node)
{
    bdrv_set_read_only(node);
}

static BlockNode *find(const char *name, GError **errp)
{
    BlockNode *bs = qmp_find_node(name);

    if (!bs)
        qmp_error(errp, "Cannot find device='%s' nor node-name='%s'", name,
                  name);
    return bs;
}

/* A snapshot prepared: what its commit or abort needs. */
typedef struct Snapshot {
    BlockNode *node;
    BlockNode *overlay;
    bool opened;          /* the overlay is ours (snapshot-sync) */
} Snapshot;

static void snapshot_free(Snapshot *snap)
{
    if (snap->opened)
        bdrv_unref(snap->overlay); /* its users hold it now, or it goes */
    g_free(snap);
}

static Snapshot *prepare_snapshot(const QmpBlockdevSnapshot *a,
                                  GError **errp)
{
    Snapshot snap = { 0 };

    if (!(snap.node = find(a->node, errp)) ||
        !(snap.overlay = find(a->overlay, errp)) ||
        !take_snapshot(snap.node, snap.overlay, errp))
        return NULL;
    return g_memdup2(&snap, sizeof(snap));
}

static BlockNode *open_image(const ImageSpec *spec, GError **errp)
{
    g_autoptr(GHashTable) o = image_opts_build(spec, errp);

    return o ? bdrv_open(o, errp) : NULL;
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
    if (node_name)
        g_hash_table_insert(o, g_strdup("node-name"), g_strdup(node_name));
    g_hash_table_insert(o, g_strdup("backing"), g_strdup("null"));
    return open_image(&(ImageSpec){ .filename = file, .format = "qcow2",
                                    .options = o }, errp);
}

static bool check_sync_args(const QmpBlockdevSnapshotSync *a, GError **errp)
{
    const char *format = a->format, *name = a->snapshot_node_name;

    if (!a->device && !a->node_name) {
        qmp_error(errp, "Cannot find device= nor node-name=");
        return false;
    }
    if (format && strcmp(format, "qcow2") != 0) {
        qmp_error(errp, "Snapshot format '%s' is not supported (qcow2)",
                  format);
        return false;
    }
    if (name && bdrv_find_node(name)) {
        qmp_error(errp, "Duplicate nodes with node-name='%s'", name);
        return false;
    }
    return true;
}

static Snapshot *prepare_snapshot_sync(const QmpBlockdevSnapshotSync *a,
                                       GError **errp)
{
    bool existing = a->has_mode && a->mode == QMP_NEW_IMAGE_MODE_EXISTING;
    Snapshot *snap;

    if (!check_sync_args(a, errp))
        return NULL;
    snap = g_new0(Snapshot, 1);
    snap->opened = true;
    if (!(snap->node = find(a->node_name ? a->node_name : a->device, errp)) ||
        !(snap->overlay = open_overlay(snap->node, a->snapshot_file,
                                       a->snapshot_node_name, existing,
                                       errp)) ||
        !take_snapshot(snap->node, snap->overlay, errp)) {
        snap->opened = snap->overlay != NULL;
        snapshot_free(snap);
        return NULL;
    }
    return snap;
}

static JsonNode *run_now(Snapshot *snap)
{
    if (snap) {
        finish_snapshot(snap->node);
        snapshot_free(snap);
    }
    return NULL;
}

static JsonNode *cmd_blockdev_snapshot(const QmpBlockdevSnapshot *a,
                                       GError **errp)
{
    return run_now(prepare_snapshot(a, errp));
}

static JsonNode *cmd_blockdev_snapshot_sync(const QmpBlockdevSnapshotSync *a,
                                            GError **errp)
{
    return run_now(prepare_snapshot_sync(a, errp));
}

/* --- as transaction actions: the switch in prepare (the point in time),
 * the old image read-only in commit, the switch undone in abort. ---------- */

static bool tx_snapshot_prepare(const QmpTransactionAction *t, void **state,
                                GError **errp)
{
    *state = prepare_snapshot(t->u.blockdev_snapshot->data, errp);
    return *state != NULL;
}

static bool tx_snapshot_sync_prepare(const QmpTransactionAction *t,
                                     void **state, GError **errp)
{
    *state = prepare_snapshot_sync(t->u.blockdev_snapshot_sync->data, errp);
    return *state != NULL;
}

static void tx_snapshot_commit(void *state)
{
    finish_snapshot(((Snapshot *)state)->node);
}

static void tx_snapshot_abort(void *state)
{
    Snapshot *snap = state;

    undo_snapshot(snap->node, snap->overlay);
}

static void tx_snapshot_clean(void *state)
{
    if (state)
        snapshot_free(state);
}

static const QmpTransactionOps snapshot_ops = {
    .prepare = tx_snapshot_prepare,
    .commit = tx_snapshot_commit,
    .abort = tx_snapshot_abort,
    .clean = tx_snapshot_clean,
};

static const QmpTransactionOps snapshot_sync_ops = {
    .prepare = tx_snapshot_sync_prepare,
    .commit = tx_snapshot_commit,
    .abort = tx_snapshot_abort,
    .clean = tx_snapshot_clean,
};

void qmp_register_snapshot_commands(void)
{
    qmp_register_typed_blockdev_snapshot(cmd_blockdev_snapshot);
    qmp_register_typed_blockdev_snapshot_sync(cmd_blockdev_snapshot_sync);
    qmp_register_transaction_action("blockdev-snapshot", &snapshot_ops);
    qmp_register_transaction_action("blockdev-snapshot-sync",
                                    &snapshot_sync_ops);
}
