/*
 * qmp-chain.c - block-commit and block-stream, with QEMU 7.2's arguments,
 * lookups and messages (blockdev.c): the monitor side of jobs/commit.h.
 */
#include "qmp-int.h"

#include "jobs/chain.h"
#include "jobs/commit.h"

#include <string.h>

static const char *const on_error_values[] = { "report", "ignore", "enospc",
                                               "stop", NULL };

#define COMMIT_MEMBERS \
    "job-id,device,base-node,base,top-node,top,backing-file," \
    "backing-mask-protocol,speed,on-error,filter-node-name," \
    "auto-finalize,auto-dismiss"
#define STREAM_MEMBERS \
    "job-id,device,base,base-node,backing-file,backing-mask-protocol," \
    "bottom,speed,on-error,filter-node-name,auto-finalize,auto-dismiss"

/* The options both jobs take, checked before any lookup as QEMU's
 * generated visitor does. */
static bool parse_common(JsonObject *args, ChainJobOptions *o, GError **errp)
{
    GError *err = NULL;
    const char *on_error;
    bool fin = true, dis = true, mask = false;

    *o = (ChainJobOptions){ .on_error = BLOCKDEV_ON_ERROR_REPORT };
    on_error = qmp_arg_str(args, "on-error", false, &err);
    if (!err)
        qmp_check_enum("on-error", on_error, on_error_values, &err);
    if (!err && on_error)
        blockdev_on_error_parse(on_error, &o->on_error);
    if (!err)
        o->backing_file = qmp_arg_str(args, "backing-file", false, &err);
    if (!err)
        o->filter_node_name = qmp_arg_str(args, "filter-node-name", false,
                                          &err);
    if (!err)
        qmp_arg_int(args, "speed", 0, &o->speed, &err);
    if (!err)
        qmp_arg_bool(args, "auto-finalize", true, &fin, &err);
    if (!err)
        qmp_arg_bool(args, "auto-dismiss", true, &dis, &err);
    if (!err)
        qmp_arg_bool(args, "backing-mask-protocol", false, &mask, &err);
    if (err) {
        g_propagate_error(errp, err);
        return false;
    }
    o->backing_mask_protocol = mask;
    o->job_flags = (fin ? 0 : JOB_MANUAL_FINALIZE) |
                   (dis ? 0 : JOB_MANUAL_DISMISS);
    return true;
}

static BlockNode *find_node(const char *name, GError **errp)
{
    BlockNode *bs = bdrv_find_node(name);

    if (!bs)
        qmp_error(errp, "Cannot find device='' nor node-name='%s'", name);
    return bs;
}

/* QEMU's qmp_get_root_bs: "device" names a node no other node uses. */
static BlockNode *find_root(const char *device, GError **errp)
{
    BlockNode *bs = bdrv_find_node(device);
    g_autofree char *backing = NULL, *file = NULL;

    if (!bs) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_DEVICE_NOT_FOUND,
                    "Device '%s' not found", device);
        return NULL;
    }
    backing = bdrv_find_parent_by_link(bs, "backing");
    file = bdrv_find_parent_by_link(bs, "file");
    if (backing || file) {
        qmp_error(errp, "Need a root block node");
        return NULL;
    }
    return bs;
}

/* A node given by node name (@node_key) or by image file name (@file_key),
 * in the chain under @from; @def when neither is given. */
static bool find_in_chain(JsonObject *args, BlockNode *from,
                          const char *node_key, const char *file_key,
                          BlockNode *def, BlockNode **out, GError **errp)
{
    GError *err = NULL;
    const char *node = qmp_arg_str(args, node_key, false, &err);
    const char *file = err ? NULL : qmp_arg_str(args, file_key, false, &err);

    *out = def;
    if (err) {
        g_propagate_error(errp, err);
        return false;
    }
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

static JsonNode *cmd_block_commit(JsonObject *args, GError **errp)
{
    GError *err = NULL;
    const char *device = qmp_arg_str(args, "device", true, &err);
    const char *job_id = err ? NULL : qmp_arg_str(args, "job-id", false, &err);
    BlockNode *active, *top, *base;
    ChainJobOptions o;
    Job *job;

    if (err || !parse_common(args, &o, &err)) {
        g_propagate_error(errp, err);
        return NULL;
    }
    if (!(active = find_root(device, errp)) ||
        !find_in_chain(args, active, "top-node", "top", active, &top,
                       errp) ||
        !find_in_chain(args, top, "base-node", "base", NULL, &base, errp))
        return NULL;
    if (!base && !(base = chain_bottom(top))) {
        qmp_error(errp, "There is no backimg image");
        return NULL;
    }
    job = commit_job_create(job_id ? job_id : device, active, top, base, &o,
                            errp);
    if (job)
        job_start(job);
    return NULL;
}

/* QEMU's order and words for the exclusive pairs of block-stream. */
static bool refuse_pairs(JsonObject *args, GError **errp)
{
    static const char *const pairs[][2] = {
        { "base", "base-node" }, { "base", "bottom" },
        { "bottom", "base-node" },
    };

    for (size_t i = 0; i < G_N_ELEMENTS(pairs); i++) {
        if (json_object_has_member(args, pairs[i][0]) &&
            json_object_has_member(args, pairs[i][1])) {
            qmp_error(errp, "'%s' and '%s' cannot be specified at the same "
                      "time", pairs[i][0], pairs[i][1]);
            return false;
        }
    }
    return true;
}

/* "base" (a file name) or "base-node", below @top. */
static bool find_stream_base(JsonObject *args, BlockNode *top,
                             const char *device, BlockNode **base,
                             GError **errp)
{
    GError *err = NULL;
    const char *file = qmp_arg_str(args, "base", false, &err);
    const char *node = err ? NULL : qmp_arg_str(args, "base-node", false,
                                                &err);

    *base = NULL;
    if (err) {
        g_propagate_error(errp, err);
        return false;
    }
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

static JsonNode *cmd_block_stream(JsonObject *args, GError **errp)
{
    GError *err = NULL;
    const char *device = qmp_arg_str(args, "device", true, &err);
    const char *job_id = err ? NULL : qmp_arg_str(args, "job-id", false, &err);
    const char *bottom = err ? NULL : qmp_arg_str(args, "bottom", false, &err);
    BlockNode *top, *base = NULL, *bottom_bs;
    ChainJobOptions o;
    Job *job;

    if (err || !parse_common(args, &o, &err)) {
        g_propagate_error(errp, err);
        return NULL;
    }
    if (!refuse_pairs(args, errp))
        return NULL;
    if (!(top = bdrv_find_node(device))) {
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
    } else if (!find_stream_base(args, top, device, &base, errp)) {
        return NULL;
    }
    job = stream_job_create(job_id ? job_id : device, top, base, &o, errp);
    if (job)
        job_start(job);
    return NULL;
}

void qmp_register_chain_commands(void)
{
    qmp_register_command_args("block-commit", cmd_block_commit,
                              COMMIT_MEMBERS);
    qmp_register_command_args("block-stream", cmd_block_stream,
                              STREAM_MEMBERS);
}
