/*
 * reopen.c - new options for an open node (QEMU's blockdev-reopen).
 *
 * As in QEMU, the options given replace all of the node's options: one
 * left out takes its default (read-only off, discard ignore,
 * detect-zeroes off).  What can change is read-only (a read-only node
 * becomes writable through its driver, bdrv_reopen_writable), discard,
 * detect-zeroes, the backing link and what the driver's reopen_prepare
 * takes (qcow2's runtime options); every other option must name what
 * the node already has ("file" its file child), else "Cannot change the
 * option" (QEMU can swap the file child; snapnbd cannot yet).  A node
 * with a backing must name it ("backing is missing" otherwise, as QEMU).
 * Everything is checked before anything changes, and the change
 * happens in a drained section of the node.
 */
#include "block-int.h"

#include <string.h>

typedef struct ReopenPlan {
    bool read_only;
    bool unmap;
    BdrvDetectZeroes detect_zeroes;
    bool change_backing;
    BlockNode *backing;       /* NULL: none */
    void *driver_plan;        /* the driver's reopen_prepare, or NULL */
} ReopenPlan;

static bool cannot_change(const char *option, GError **errp)
{
    g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                "Cannot change the option '%s'", option);
    return false;
}

static bool same_child(BlockNode *bs, const char *link, const char *ref)
{
    BlockNode *child = bdrv_child(bs, link);

    return child && strcmp(bdrv_node_name(child), ref) == 0;
}

static bool plan_backing(BlockNode *bs, GHashTable *opts, ReopenPlan *p,
                         GError **errp)
{
    g_autofree char *ref = opt_take(opts, "backing");

    if (!ref)
        return true; /* kept */
    p->change_backing = true;
    if (!*ref || !strcmp(ref, "null"))
        return true;
    p->backing = bdrv_find_node(ref);
    if (!p->backing) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_FOUND,
                    "Cannot find device='' nor node-name='%s'", ref);
        return false;
    }
    if (!bs->drv->set_backing) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Driver '%s' of node '%s' does not support backing files",
                    bs->drv->name, bs->node_name);
        return false;
    }
    return true;
}

static bool plan(BlockNode *bs, GHashTable *opts, ReopenPlan *p,
                 GError **errp)
{
    g_autofree char *driver = opt_take(opts, "driver");
    g_autofree char *file = opt_take(opts, "file");
    GError *err = NULL;
    GHashTableIter it;
    gpointer key;

    /* QEMU's order: a node with a backing must say what it wants. */
    if (bdrv_child(bs, "backing") && !g_hash_table_contains(opts, "backing")) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "backing is missing for '%s'", bs->node_name);
        return false;
    }
    if (driver && strcmp(driver, bs->drv->name) != 0)
        return cannot_change("driver", errp);
    if (file && !same_child(bs, "file", file))
        return cannot_change("file", errp);
    p->read_only = opt_take_bool(opts, "read-only", false, &err);
    if (err) {
        g_propagate_error(errp, err);
        return false;
    }
    if (!bdrv_parse_discard_options(opts, &p->unmap, &p->detect_zeroes,
                                    errp) ||
        !plan_backing(bs, opts, p, errp))
        return false;
    if (bs->drv->reopen_prepare &&
        !(p->driver_plan = bs->drv->reopen_prepare(bs, opts, errp)))
        return false;
    g_hash_table_iter_init(&it, opts);
    if (g_hash_table_iter_next(&it, &key, NULL))
        return cannot_change(key, errp);
    return true;
}

static bool make_read_only(BlockNode *bs, GError **errp)
{
    g_autofree char *writer = bdrv_find_writer(bs, NULL);

    if (writer) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_BUSY,
                    "Read-only block node '%s' cannot support read-write "
                    "users", bs->node_name);
        return false;
    }
    if (bdrv_flush(bs) < 0) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_FAILED,
                    "Cannot make node '%s' read-only: flushing it failed",
                    bs->node_name);
        return false;
    }
    bdrv_set_read_only(bs);
    return true;
}

static bool apply(BlockNode *bs, const ReopenPlan *p, GError **errp)
{
    if (bs->read_only && !p->read_only && !bdrv_reopen_writable(bs, errp))
        return false;
    if (!bs->read_only && p->read_only && !make_read_only(bs, errp))
        return false;
    if (p->change_backing && !bdrv_replace_backing(bs, p->backing, errp))
        return false;
    bs->unmap = p->unmap;
    bs->detect_zeroes = p->detect_zeroes;
    if (p->driver_plan)
        bs->drv->reopen_commit(bs, p->driver_plan);
    return true;
}

bool bdrv_reopen(BlockNode *bs, GHashTable *opts, GError **errp)
{
    ReopenPlan p = { 0 };
    BdrvDrain *drain;
    bool ok;

    if (!plan(bs, opts, &p, errp)) {
        g_free(p.driver_plan);
        return false;
    }
    drain = bdrv_drained_begin(bs);
    ok = apply(bs, &p, errp);
    bdrv_drained_end(drain);
    g_free(p.driver_plan);
    return ok;
}
