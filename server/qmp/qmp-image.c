/*
 * qmp-image.c - the commands that change or describe an image in place:
 * block_resize, block-set-write-threshold (and its BLOCK_WRITE_THRESHOLD
 * event), internal snapshots (blockdev-snapshot-internal-sync,
 * blockdev-snapshot-delete-internal-sync, also as transaction actions),
 * x-blockdev-amend, with QEMU 7.2's arguments, answers and error texts.
 *
 * Like QEMU, each takes what it needs on the node as an edge (resize
 * permission for block_resize) and works in a drained section of it, so
 * that no request of an export or a job runs while the metadata changes.
 */
#include "qmp-int.h"

#include "block/block.h"
#include "jobs/amend.h"
#include "server/qmp/qmp-types-gen.h"

#include <string.h>

/* QEMU's bdrv_lookup_bs: a device (qemu-storage-daemon has no named
 * devices, so neither has snapnbd: only @node_name can match), or a
 * node; DeviceNotFound-free GenericError as QEMU says it. */
static BlockNode *lookup_node(const char *device, const char *node_name,
                              GError **errp)
{
    BlockNode *bs = node_name ? qmp_find_node(node_name) : NULL;

    if (!bs)
        qmp_error(errp, "Cannot find device='%s' nor node-name='%s'",
                  device ? device : "", node_name ? node_name : "");
    return bs;
}

/* --- block_resize ----------------------------------------------------------
 */

static JsonNode *cmd_block_resize(const QmpBlockResizeArgs *a, GError **errp)
{
    int64_t size = a->size;
    GError *err = NULL;
    BlockNode *bs;
    BlockChild *user;
    BdrvDrain *drain;
    int ret;

    bs = lookup_node(a->device, a->node_name, errp);
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
                            BDRV_PERM_RESIZE, BDRV_PERM_ALL, NULL, NULL, &err);
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

/* --- block-set-write-threshold ----------------------------------------------
 */

static JsonNode *cmd_block_set_write_threshold(
    const QmpBlockSetWriteThresholdArgs *a, GError **errp)
{
    BlockNode *bs = qmp_find_node(a->node_name);

    if (!bs) {
        qmp_error(errp, "Device '%s' not found", a->node_name);
        return NULL;
    }
    bdrv_set_write_threshold(bs, a->write_threshold);
    return NULL;
}

/* On the thread of the write that crossed it (qmp_emit_event is thread
 * safe), before that write goes on, as in QEMU. */
static void emit_write_threshold(BlockNode *bs, uint64_t exceeded,
                                 uint64_t threshold)
{
    JsonObject *data = json_object_new();

    /* QEMU's member order (its QDict's) */
    json_object_set_string_member(data, "node-name", bdrv_node_name(bs));
    json_object_set_int_member(data, "write-threshold", (gint64)threshold);
    json_object_set_int_member(data, "amount-exceeded", (gint64)exceeded);
    qmp_emit_event("BLOCK_WRITE_THRESHOLD", data);
}

/* --- internal snapshots ------------------------------------------------------
 */

/* An internal snapshot taken by a command or a transaction action. */
typedef struct InternalSnapshot {
    BlockNode *node;       /* referenced */
    BdrvSnapshotInfo info; /* what was created */
} InternalSnapshot;

static void internal_snapshot_free(InternalSnapshot *snap)
{
    bdrv_unref(snap->node);
    bdrv_snapshot_info_clear(&snap->info);
    g_free(snap);
}

/* Is there a snapshot matching @id and @name (either may be NULL)? */
static bool snapshot_exists(BlockNode *bs, const char *id, const char *name,
                            GError **errp)
{
    g_autoptr(GArray) list = bdrv_snapshot_list(bs, errp);

    for (guint i = 0; list && i < list->len; i++) {
        BdrvSnapshotInfo *sn = &g_array_index(list, BdrvSnapshotInfo, i);
        if ((!id || !strcmp(sn->id, id)) && (!name || !strcmp(sn->name, name)))
            return true;
    }
    return false;
}

/* QEMU's internal_snapshot_prepare: the checks in its order, then the
 * snapshot, in a drained section of the node. */
static InternalSnapshot *take_internal_snapshot(
    const QmpBlockdevSnapshotInternal *a, GError **errp)
{
    const char *device = a->device, *name = a->name;
    GError *err = NULL;
    InternalSnapshot *snap;
    BdrvDrain *drain;
    BlockNode *bs;
    int ret;

    bs = lookup_node(device, device, errp);
    if (!bs)
        return NULL;
    if (bdrv_is_read_only(bs)) {
        qmp_error(errp, "Device '%s' is read only", device);
        return NULL;
    }
    if (!bdrv_can_snapshot(bs)) {
        qmp_error(errp,
                  "Block format '%s' used by device '%s' does not "
                  "support internal snapshots",
                  bdrv_driver_name(bs), device);
        return NULL;
    }
    if (!*name) {
        qmp_error(errp, "Name is empty");
        return NULL;
    }
    if (snapshot_exists(bs, NULL, name, &err) || err) {
        if (!err)
            qmp_error(errp,
                      "Snapshot with name '%s' already exists on "
                      "device '%s'",
                      name, device);
        else
            qmp_error(errp, "%s", err->message);
        g_clear_error(&err);
        return NULL;
    }
    snap = g_new0(InternalSnapshot, 1);
    drain = bdrv_drained_begin(bs);
    ret = bdrv_snapshot_create(bs, name, &snap->info, &err);
    bdrv_drained_end(drain);
    if (ret < 0) {
        qmp_error(errp, "Failed to create snapshot '%s' on device '%s': %s",
                  name, device, err->message);
        g_error_free(err);
        g_free(snap);
        return NULL;
    }
    bdrv_ref(bs);
    snap->node = bs;
    return snap;
}

static JsonNode *cmd_snapshot_internal(const QmpBlockdevSnapshotInternal *a,
                                       GError **errp)
{
    InternalSnapshot *snap = take_internal_snapshot(a, errp);

    if (snap)
        internal_snapshot_free(snap);
    return NULL;
}

/* QEMU's SnapshotInfo, in its member order. */
JsonObject *qmp_snapshot_info(const BdrvSnapshotInfo *sn)
{
    JsonObject *o = json_object_new();

    if (sn->icount != UINT64_MAX)
        json_object_set_int_member(o, "icount", sn->icount);
    json_object_set_int_member(o, "vm-clock-nsec",
                               sn->vm_clock_nsec % 1000000000);
    json_object_set_string_member(o, "name", sn->name);
    json_object_set_int_member(o, "date-sec", sn->date_sec);
    json_object_set_int_member(o, "date-nsec", sn->date_nsec);
    json_object_set_int_member(o, "vm-clock-sec",
                               sn->vm_clock_nsec / 1000000000);
    json_object_set_string_member(o, "id", sn->id);
    json_object_set_int_member(o, "vm-state-size", sn->vm_state_size);
    return o;
}

static JsonNode *snapshot_info_json(const BdrvSnapshotInfo *sn)
{
    JsonNode *n = json_node_new(JSON_NODE_OBJECT);

    json_node_take_object(n, qmp_snapshot_info(sn));
    return n;
}

static JsonNode *cmd_snapshot_delete_internal(
    const QmpBlockdevSnapshotDeleteInternalSyncArgs *a, GError **errp)
{
    const char *device = a->device, *id = a->id, *name = a->name;
    BdrvSnapshotInfo info = {0};
    GError *err = NULL;
    BdrvDrain *drain;
    BlockNode *bs;
    JsonNode *ret;

    bs = lookup_node(device, device, errp);
    if (!bs)
        return NULL;
    if (!id && !name) {
        qmp_error(errp, "Name or id must be provided");
        return NULL;
    }
    if (!snapshot_exists(bs, id, name, &err)) {
        if (err)
            qmp_error(errp, "%s", err->message);
        else
            qmp_error(errp,
                      "Snapshot with id '%s' and name '%s' does not "
                      "exist on device '%s'",
                      id ? id : "null", name ? name : "null", device);
        g_clear_error(&err);
        return NULL;
    }
    drain = bdrv_drained_begin(bs);
    if (bdrv_snapshot_delete(bs, id, name, &info, &err) < 0) {
        bdrv_drained_end(drain);
        qmp_error(errp, "%s", err->message);
        g_error_free(err);
        return NULL;
    }
    bdrv_drained_end(drain);
    ret = snapshot_info_json(&info);
    bdrv_snapshot_info_clear(&info);
    return ret;
}

/* As a transaction action: taken in prepare, deleted again in abort. */
static bool tx_internal_prepare(const QmpTransactionAction *t, void **state,
                                GError **errp)
{
    *state = take_internal_snapshot(
        t->u.blockdev_snapshot_internal_sync->data, errp);
    return *state != NULL;
}

static void tx_internal_commit(void *state) {}

static void tx_internal_abort(void *state)
{
    InternalSnapshot *snap = state;
    g_autoptr(GError) err = NULL;
    BdrvDrain *drain = bdrv_drained_begin(snap->node);

    if (bdrv_snapshot_delete(snap->node, snap->info.id, snap->info.name, NULL,
                             &err) < 0)
        g_warning("could not delete snapshot '%s' of node '%s' again: %s",
                  snap->info.name, bdrv_node_name(snap->node), err->message);
    bdrv_drained_end(drain);
}

static void tx_internal_clean(void *state)
{
    if (state)
        internal_snapshot_free(state);
}

static const QmpTransactionOps internal_snapshot_ops = {
    .prepare = tx_internal_prepare,
    .commit = tx_internal_commit,
    .abort = tx_internal_abort,
    .clean = tx_internal_clean,
};

/* --- x-blockdev-amend -------------------------------------------------------
 */

/* QEMU's BlockdevAmendOptionsQcow2 ("encrypt"), plus what qemu-img amend
 * changes, under the names of blockdev-create's qcow2 options; a LUKS
 * branch changes the encryption only. */
static bool amend_options(const QmpBlockdevAmendOptions *opts,
                          BdrvAmendOptions *o, GError **errp)
{
    const QmpBlockdevAmendOptionsQcow2 *q = opts->u.qcow2;

    *o = (BdrvAmendOptions){.lazy_refcounts = -1};
    if (opts->u.luks) {
        o->encrypt = true;
        return true;
    }
    if (!q)
        return true;
    o->encrypt = q->has_encrypt;
    if (q->has_version)
        o->version = q->version == QMP_BLOCKDEV_QCOW2_VERSION_V2 ? 2 : 3;
    if (q->has_lazy_refcounts)
        o->lazy_refcounts = q->lazy_refcounts;
    if (q->has_refcount_bits) {
        if (q->refcount_bits <= 0 || q->refcount_bits > 64) {
            qmp_error(errp, "Refcount width must be a power of two and may "
                            "not exceed 64 bits");
            return false;
        }
        o->refcount_bits = q->refcount_bits;
    }
    return true;
}

static JsonNode *cmd_x_blockdev_amend(const QmpXBlockdevAmendArgs *a,
                                      GError **errp)
{
    const char *driver = qmp_blockdev_driver_str[a->options->driver];
    GError *err = NULL;
    BdrvAmendOptions opts;
    BlockNode *bs;
    Job *job;

    if (!amend_options(a->options, &opts, errp))
        return NULL;
    bs = lookup_node(NULL, a->node_name, errp);
    if (!bs)
        return NULL;
    if (strcmp(driver, bdrv_driver_name(bs)) != 0) {
        qmp_error(errp, "x-blockdev-amend doesn't support changing the "
                        "block driver");
        return NULL;
    }
    if (strcmp(driver, "qcow2") != 0) {
        qmp_error(errp, "Driver does not support x-blockdev-amend");
        return NULL;
    }
    job = amend_job_create(a->job_id, bs, &opts, &err);
    if (!job) {
        qmp_error(errp, "%s", err->message);
        g_error_free(err);
        return NULL;
    }
    job_start(job);
    return NULL;
}

void qmp_register_image_commands(void)
{
    qmp_register_typed_x_blockdev_amend(cmd_x_blockdev_amend);
    qmp_register_typed_block_resize(cmd_block_resize);
    qmp_register_typed_block_set_write_threshold(
        cmd_block_set_write_threshold);
    bdrv_set_write_threshold_handler(emit_write_threshold);
    qmp_register_typed_blockdev_snapshot_internal_sync(cmd_snapshot_internal);
    qmp_register_typed_blockdev_snapshot_delete_internal_sync(
        cmd_snapshot_delete_internal);
    qmp_register_transaction_action("blockdev-snapshot-internal-sync",
                                    &internal_snapshot_ops);
}
