/*
 * query.c - what the monitor reads of the graph: the request counters
 * io.c keeps per node (query-blockstats) and the edges with their
 * permissions (x-debug-query-block-graph).
 */
#include "block-int.h"

void bdrv_get_stats(BlockNode *bs, BdrvStats *out)
{
    const uint64_t *in = (const uint64_t *)&bs->stats;
    uint64_t *o = (uint64_t *)out;

    for (size_t i = 0; i < sizeof(*out) / sizeof(uint64_t); i++)
        o[i] = __atomic_load_n(&in[i], __ATOMIC_RELAXED);
}

void bdrv_foreach_edge_into(BlockNode *bs,
                            void (*fn)(const BdrvEdgeInfo *e, void *opaque),
                            void *opaque)
{
    bdrv_graph_lock();
    for (guint i = 0; i < bs->parents->len; i++) {
        BlockChild *c = g_ptr_array_index(bs->parents, i);
        BdrvEdgeInfo e = {
            .parent = c->parent,
            .holder = c->holder,
            .name = c->name,
            .child = bs,
            .perm = c->perm,
            .shared = c->shared,
        };
        fn(&e, opaque);
    }
    bdrv_graph_unlock();
}
