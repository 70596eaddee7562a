/*
 * qmp-debug.c - experimental commands for tests: blkdebug's breakpoints
 * (qemu-io's break, wait_break, resume and remove_break) over QMP.
 *
 *   x-blkdebug-break        {node, event, tag}
 *   x-blkdebug-wait-break   {node, tag, timeout}  (seconds, default 10)
 *   x-blkdebug-resume       {node, tag}
 *   x-blkdebug-remove-break {node, tag}
 *
 * @node is a blkdebug node or any node above one through "file" children
 * (a qcow2 node over blkdebug).  x-blkdebug-wait-break blocks the monitor
 * until a request is held at the tag, for at most its timeout; shutdown
 * releases every breakpoint (bdrv_debug_release_all), so it never waits
 * for a resume that cannot come.
 */
#include "qmp-int.h"

static BlockNode *node_arg(JsonObject *args, GError **errp)
{
    const char *name = qmp_arg_str(args, "node", true, errp);
    BlockNode *bs;

    if (!name)
        return NULL;
    bs = bdrv_find_node(name);
    if (!bs)
        qmp_error(errp, "Cannot find device='%s' nor node-name='%s'", name,
                  name);
    return bs;
}

/* The block layer's sentence (in *@err) as a QMP GenericError. */
static JsonNode *check(bool ok, GError **err, GError **errp)
{
    if (!ok) {
        qmp_error(errp, "%s", (*err)->message);
        g_clear_error(err);
    }
    return NULL;
}

static JsonNode *cmd_break(JsonObject *args, GError **errp)
{
    BlockNode *bs = node_arg(args, errp);
    const char *event = bs ? qmp_arg_str(args, "event", true, errp) : NULL;
    const char *tag = event ? qmp_arg_str(args, "tag", true, errp) : NULL;
    GError *err = NULL;

    if (!tag)
        return NULL;
    return check(bdrv_debug_breakpoint(bs, event, tag, &err), &err, errp);
}

static JsonNode *cmd_remove_break(JsonObject *args, GError **errp)
{
    BlockNode *bs = node_arg(args, errp);
    const char *tag = bs ? qmp_arg_str(args, "tag", true, errp) : NULL;
    GError *err = NULL;

    if (!tag)
        return NULL;
    return check(bdrv_debug_remove_breakpoint(bs, tag, &err), &err, errp);
}

static JsonNode *cmd_resume(JsonObject *args, GError **errp)
{
    BlockNode *bs = node_arg(args, errp);
    const char *tag = bs ? qmp_arg_str(args, "tag", true, errp) : NULL;
    GError *err = NULL;

    if (!tag)
        return NULL;
    return check(bdrv_debug_resume(bs, tag, &err), &err, errp);
}

static JsonNode *cmd_wait_break(JsonObject *args, GError **errp)
{
    BlockNode *bs = node_arg(args, errp);
    const char *tag = bs ? qmp_arg_str(args, "tag", true, errp) : NULL;
    GError *err = NULL;
    int64_t timeout;

    if (!tag || !qmp_arg_int(args, "timeout", 10, &timeout, errp))
        return NULL;
    if (timeout < 0 || timeout > 3600) {
        qmp_error(errp, "Parameter 'timeout' expects 0 to 3600 seconds");
        return NULL;
    }
    return check(bdrv_debug_wait_break(bs, tag, timeout * 1000, &err), &err,
                 errp);
}

void qmp_register_debug_commands(void)
{
    qmp_register_command_args("x-blkdebug-break", cmd_break,
                              "node,event,tag");
    qmp_register_command_args("x-blkdebug-remove-break", cmd_remove_break,
                              "node,tag");
    qmp_register_command_args("x-blkdebug-resume", cmd_resume, "node,tag");
    qmp_register_command_args("x-blkdebug-wait-break", cmd_wait_break,
                              "node,tag,timeout");
}
