/*
 * qmp-chain.c - block-commit, block-stream and change-backing-file, with
 * QEMU 7.2's arguments,
 * lookups and messages (blockdev.c): the monitor side of jobs/commit.h.
 */
#include "qmp-int.h"

#include "jobs/chain.h"
#include "jobs/commit.h"
#include "server/qmp/qmp-types-gen.h"

#include <string.h>

/* The options both jobs take (the same members in both argument
 * structs), checked before any lookup as QEMU's generated visitor does. */
#define CHAIN_JOB_OPTIONS(a, o, errp) \
    chain_job_options((a)->has_on_error, (a)->on_error, (a)->backing_file, \
                      (a)->filter_node_name, (a)->speed, \
                      !(a)->has_auto_finalize || (a)->auto_finalize, \
                      !(a)->has_auto_dismiss || (a)->auto_dismiss, \
                      (a)->backing_mask_protocol, (o), (errp))

static bool chain_job_options(bool has_on_error, QmpBlockdevOnError on_error,
                              const char *backing_file,
                              const char *filter_node_name, int64_t speed,
                              bool finalize, bool dismiss, bool mask_protocol,
                              ChainJobOptions *o, GError **errp)
{
    *o = (ChainJobOptions){ .on_error = BLOCKDEV_ON_ERROR_REPORT };
    if (has_on_error) {
        /* the schema's BlockdevOnError has "auto", which these jobs do
         * not take */
        const char *name = qmp_blockdev_on_error_str[on_error];
        if (!blockdev_on_error_parse(name, &o->on_error) ||
            on_error == QMP_BLOCKDEV_ON_ERROR_AUTO) {
            qmp_error(errp, "Parameter 'on-error' does not accept value "
                      "'%s'", name);
            return false;
        }
    }
    o->backing_file = backing_file;
    o->filter_node_name = filter_node_name;
    o->speed = speed;
    o->backing_mask_protocol = mask_protocol;
    o->job_flags = (finalize ? 0 : JOB_MANUAL_FINALIZE) |
                   (dismiss ? 0 : JOB_MANUAL_DISMISS);
    return true;
}

static BlockNode *find_node(const char *name, GError **errp)
{
    BlockNode *bs = qmp_find_node(name);

    if (!bs)
        qmp_error(errp, "Cannot find device='' nor node-name='%s'", name);
    return bs;
}

/* A node no other node uses (QEMU's bdrv_is_root_node); @bs or NULL. */
static BlockNode *root_only(BlockNode *bs, GError **errp)
{
    g_autofree char *backing = bdrv_find_parent_by_link(bs, "backing");
    g_autofree char *file = bdrv_find_parent_by_link(bs, "file");

    if (backing || file) {
        qmp_error(errp, "Need a root block node");
        return NULL;
    }
    return bs;
}

/* "device" of the chain jobs: a root node, DeviceNotFound if none. */
static BlockNode *find_root(const char *device, GError **errp)
{
    BlockNode *bs = qmp_find_node(device);

    if (!bs) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_DEVICE_NOT_FOUND,
                    "Device '%s' not found", device);
        return NULL;
    }
    return root_only(bs, errp);
}

/* A node given by node name (@node, member @node_key) or by image file
 * name (@file, member @file_key), in the chain under @from; @def when
 * neither is given. */
static bool find_in_chain(const char *node, const char *file, BlockNode *from,
                          const char *node_key, const char *file_key,
                          BlockNode *def, BlockNode **out, GError **errp)
{
    *out = def;
    if (node && file) {
        qmp_error(errp, "'%s' and '%s' are mutually exclusive", node_key,
                  file_key);
        return false;
    }
    if (node) {
        if (!(*out = find_node(node, errp)))
            return false;
        if (!bdrv_chain_depth(from, *out)) {
            qmp_error(errp, "'%s' is not in this backing file chain", node);
            return false;
        }
    } else if (file) {
        *out = chain_find_file(from, file);
        if (!*out) {
            qmp_error(errp, "Can't find '%s' in the backing chain", file);
            return false;
        }
    }
    return true;
}

static JsonNode *cmd_block_commit(const QmpBlockCommitArgs *a, GError **errp)
{
    BlockNode *active, *top, *base;
    ChainJobOptions o;
    Job *job;

    if (!CHAIN_JOB_OPTIONS(a, &o, errp))
        return NULL;
    if (!(active = find_root(a->device, errp)) ||
        !find_in_chain(a->top_node, a->top, active, "top-node", "top", active,
                       &top, errp) ||
        !find_in_chain(a->base_node, a->base, top, "base-node", "base", NULL,
                       &base, errp))
        return NULL;
    if (!base && !(base = chain_bottom(top))) {
        qmp_error(errp, "There is no backimg image");
        return NULL;
    }
    job = commit_job_create(a->job_id ? a->job_id : a->device, active, top,
                            base, &o, errp);
    if (job)
        job_start(job);
    return NULL;
}

/* QEMU's order and words for the exclusive pairs of block-stream. */
static bool refuse_pairs(const QmpBlockStreamArgs *a, GError **errp)
{
    const struct {
        bool both;
        const char *first, *second;
    } pairs[] = {
        { a->has_base && a->has_base_node, "base", "base-node" },
        { a->has_base && a->has_bottom, "base", "bottom" },
        { a->has_bottom && a->has_base_node, "bottom", "base-node" },
    };

    for (size_t i = 0; i < G_N_ELEMENTS(pairs); i++) {
        if (pairs[i].both) {
            qmp_error(errp, "'%s' and '%s' cannot be specified at the same "
                      "time", pairs[i].first, pairs[i].second);
            return false;
        }
    }
    return true;
}

/* "base" (a file name) or "base-node", below @top. */
static bool find_stream_base(const char *file, const char *node,
                             BlockNode *top, const char *device,
                             BlockNode **base, GError **errp)
{
    *base = NULL;
    if (file && !(*base = chain_find_file(top, file))) {
        qmp_error(errp, "Can't find '%s' in the backing chain", file);
        return false;
    }
    if (node) {
        if (!(*base = find_node(node, errp)))
            return false;
        if (bdrv_chain_depth(top, *base) < 2) {
            qmp_error(errp, "Node '%s' is not a backing image of '%s'",
                      node, device);
            return false;
        }
    }
    return true;
}

static JsonNode *cmd_block_stream(const QmpBlockStreamArgs *a, GError **errp)
{
    const char *device = a->device, *bottom = a->bottom;
    BlockNode *top, *base = NULL, *bottom_bs;
    ChainJobOptions o;
    Job *job;

    if (!CHAIN_JOB_OPTIONS(a, &o, errp) || !refuse_pairs(a, errp))
        return NULL;
    if (!(top = qmp_find_node(device))) {
        qmp_error(errp, "Cannot find device='%s' nor node-name='%s'", device,
                  device);
        return NULL;
    }
    if (bottom) {
        if (!(bottom_bs = find_node(bottom, errp)))
            return NULL;
        if (!bdrv_chain_depth(top, bottom_bs)) {
            qmp_error(errp, "Node '%s' is not in a chain starting from '%s'",
                      bottom, device);
            return NULL;
        }
        base = chain_backing(bottom_bs);
    } else if (!find_stream_base(a->base, a->base_node, top, device, &base,
                                 errp)) {
        return NULL;
    }
    job = stream_job_create(a->job_id ? a->job_id : device, top, base, &o,
                            errp);
    if (job)
        job_start(job);
    return NULL;
}

/* --- change-backing-file ---------------------------------------------------
 */

/* QEMU's qmp_change_backing_file: the backing file name in the image
 * metadata of @image_node_name, a node of @device's chain that has a
 * backing; a read-only image is made writable for the write and read-only
 * again.  The format written is the image's own driver, as QEMU writes
 * it.  The attached backing node does not change. */
static JsonNode *cmd_change_backing_file(const QmpChangeBackingFileArgs *a,
                                         GError **errp)
{
    BlockNode *root = qmp_find_node(a->device);
    BlockNode *image;
    ChainWritable w;
    GError *err = NULL;
    int ret;

    if (!root) {
        qmp_error(errp, "Cannot find device='%s' nor node-name='%s'",
                  a->device, a->device);
        return NULL;
    }
    if (!root_only(root, errp) || !(image = find_node(a->image_node_name,
                                                      errp)))
        return NULL;
    if (!chain_backing(image)) {
        qmp_error(errp, "not allowing backing file change on an image "
                  "without a backing file");
        return NULL;
    }
    if (bdrv_op_is_blocked(root, BDRV_OP_CHAIN_JOB, &err) ||
        !bdrv_chain_depth(root, image)) {
        if (!err)
            qmp_error(errp, "'%s' and image file are not in the same chain",
                      a->device);
        else
            qmp_error(errp, "%s", err->message);
        g_clear_error(&err);
        return NULL;
    }
    if (!chain_make_writable(&w, image, &err)) {
        qmp_error(errp, "%s", err->message);
        g_error_free(err);
        return NULL;
    }
    ret = bdrv_write_backing_file(image, a->backing_file,
                                  bdrv_driver_name(image));
    if (ret < 0)
        qmp_error(errp, "Could not change backing file to '%s': %s",
                  a->backing_file, g_strerror(-ret));
    chain_restore_read_only(&w, false);
    return NULL;
}

void qmp_register_chain_commands(void)
{
    qmp_register_typed_block_commit(cmd_block_commit);
    qmp_register_typed_block_stream(cmd_block_stream);
    qmp_register_typed_change_backing_file(cmd_change_backing_file);
}
