/*
 * chain.c - what commit and stream share: walking a backing chain,
 * blocking the operations that would break the nodes they drop, and
 * making a read-only node writable for the time of a job.
 */
#include "jobs/chain.h"

#include <errno.h>
#include <string.h>

BlockNode *chain_backing(BlockNode *bs)
{
    return bdrv_skip_filters(bdrv_child(bdrv_skip_filters(bs), "backing"));
}

BlockNode *chain_overlay(BlockNode *active, BlockNode *node)
{
    for (BlockNode *n = bdrv_skip_filters(active); n; n = chain_backing(n))
        if (chain_backing(n) == node)
            return n;
    return NULL;
}

BlockNode *chain_find_file(BlockNode *top, const char *filename)
{
    for (BlockNode *n = bdrv_skip_filters(top); n; n = chain_backing(n))
        if (strcmp(bdrv_filename(n), filename) == 0)
            return n;
    return NULL;
}

BlockNode *chain_bottom(BlockNode *top)
{
    BlockNode *n = bdrv_skip_filters(top);

    while (chain_backing(n))
        n = chain_backing(n);
    return n;
}

bool chain_claim_node(ChainClaim *claim, BlockNode *bs, bool dropped,
                      GError **errp)
{
    if (bdrv_op_is_blocked(bs, BDRV_OP_CHAIN_JOB, errp))
        return false;
    if (!claim->nodes)
        claim->nodes = g_ptr_array_new_with_free_func(
            (GDestroyNotify)bdrv_unref);
    bdrv_ref(bs);
    g_ptr_array_add(claim->nodes, bs);
    for (int op = 0; op < BDRV_OP__MAX; op++) {
        if (op == BDRV_OP_EXPORT_WRITABLE && claim->writers_by_perm)
            continue;
        if (dropped || op == BDRV_OP_CHAIN_JOB || op == BDRV_OP_DELETE)
            bdrv_op_block(bs, op, claim, claim->reason);
    }
    return true;
}

bool chain_claim_range(ChainClaim *claim, BlockNode *top, BlockNode *base,
                       GError **errp)
{
    for (BlockNode *n = bdrv_skip_filters(top); n && n != base;
         n = chain_backing(n))
        if (!chain_claim_node(claim, n, true, errp))
            return false;
    return true;
}

void chain_release(ChainClaim *claim)
{
    if (claim->nodes) {
        for (guint i = 0; i < claim->nodes->len; i++)
            bdrv_op_unblock_all(g_ptr_array_index(claim->nodes, i), claim);
        g_clear_pointer(&claim->nodes, g_ptr_array_unref);
    }
    g_clear_pointer(&claim->reason, g_free);
}

GPtrArray *chain_hold_layers(Job *job, BlockNode *overlay, BlockNode *top,
                             BlockNode *base, uint32_t shared,
                             GError **errp)
{
    g_autofree char *holder = g_strdup_printf("%s job '%s'",
                                              job->driver->type, job->id);
    g_autoptr(GPtrArray) chain = g_ptr_array_new();
    GPtrArray *edges = g_ptr_array_new_with_free_func(
        (GDestroyNotify)bdrv_user_detach);

    for (BlockNode *n = bdrv_skip_filters(overlay); n && n != base;
         n = chain_backing(n))
        g_ptr_array_add(chain, n);
    for (BlockNode *n = chain_backing(top); n && n != base;
         n = chain_backing(n)) {
        BlockChild *edge = bdrv_user_attach_layer(n, holder, shared, chain,
                                                  errp);
        if (!edge) {
            g_ptr_array_unref(edges);
            return NULL;
        }
        g_ptr_array_add(edges, edge);
    }
    return edges;
}

bool chain_make_writable(ChainWritable *w, BlockNode *bs, GError **errp)
{
    w->node = bs;
    w->was_read_only = bdrv_is_read_only(bs);
    if (w->was_read_only && !bdrv_reopen_writable(bs, errp)) {
        w->node = NULL;
        return false;
    }
    bdrv_ref(bs);
    return true;
}

void chain_restore_read_only(ChainWritable *w, bool keep_writable)
{
    if (!w->node)
        return;
    if (w->was_read_only && !keep_writable)
        bdrv_set_read_only(w->node);
    bdrv_unref(w->node);
    w->node = NULL;
}

bool chain_set_backing(BlockNode *bs, BlockNode *base,
                       const char *backing_file, bool mask_protocol,
                       GError **errp)
{
    BlockNode *data = base ? bdrv_skip_filters(base) : NULL;
    const char *name = backing_file;
    const char *format = NULL;

    if (base && !name)
        name = bdrv_filename(base);
    if (data)
        format = mask_protocol && bdrv_is_protocol(data)
                     ? "raw"
                     : bdrv_driver_name(data);
    return bdrv_change_backing_file(bs, base ? name : NULL, format, errp) &&
           bdrv_replace_backing(bs, base, errp);
}
