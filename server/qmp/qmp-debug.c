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
#include "server/qmp/qmp-types-gen.h"

static BlockNode *find_node(const char *name, GError **errp)
{
    BlockNode *bs = qmp_find_node(name);

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

static JsonNode *cmd_break(const QmpXBlkdebugBreakArgs *a, GError **errp)
{
    BlockNode *bs = find_node(a->node, errp);
    GError *err = NULL;

    if (!bs)
        return NULL;
    return check(bdrv_debug_breakpoint(bs, a->event, a->tag, &err), &err,
                 errp);
}

static JsonNode *cmd_remove_break(const QmpXBlkdebugRemoveBreakArgs *a,
                                  GError **errp)
{
    BlockNode *bs = find_node(a->node, errp);
    GError *err = NULL;

    if (!bs)
        return NULL;
    return check(bdrv_debug_remove_breakpoint(bs, a->tag, &err), &err, errp);
}

static JsonNode *cmd_resume(const QmpXBlkdebugResumeArgs *a, GError **errp)
{
    BlockNode *bs = find_node(a->node, errp);
    GError *err = NULL;

    if (!bs)
        return NULL;
    return check(bdrv_debug_resume(bs, a->tag, &err), &err, errp);
}

static JsonNode *cmd_wait_break(const QmpXBlkdebugWaitBreakArgs *a,
                                GError **errp)
{
    BlockNode *bs = find_node(a->node, errp);
    int64_t timeout = a->has_timeout ? a->timeout : 10;
    GError *err = NULL;

    if (!bs)
        return NULL;
    if (timeout < 0 || timeout > 3600) {
        qmp_error(errp, "Parameter 'timeout' expects 0 to 3600 seconds");
        return NULL;
    }
    return check(bdrv_debug_wait_break(bs, a->tag, timeout * 1000, &err), &err,
                 errp);
}

void qmp_register_debug_commands(void)
{
    qmp_register_typed_x_blkdebug_break(cmd_break);
    qmp_register_typed_x_blkdebug_remove_break(cmd_remove_break);
    qmp_register_typed_x_blkdebug_resume(cmd_resume);
    qmp_register_typed_x_blkdebug_wait_break(cmd_wait_break);
}
