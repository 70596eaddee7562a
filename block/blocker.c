/*
 * blocker.c - op blockers: which operations are refused on a node while a
 * job uses it, and why.
 *
 * The blockers live in a table of their own, keyed by node, rather than in
 * BlockNode: only nodes that take part in an operation have any, and the
 * graph core need not know about them.  An owner removes its blockers before
 * it drops its reference on the node, so a key never outlives its node.
 * blockers_lock guards the table; it is a leaf lock.
 */
#include "block-int.h"

typedef struct Blocker {
    BdrvOpType op;
    const void *owner;
    char *reason;
} Blocker;

static GMutex blockers_lock;
static GHashTable *blockers; /* BlockNode * -> GList of Blocker * */

static void blocker_free(gpointer p)
{
    Blocker *b = p;

    g_free(b->reason);
    g_free(b);
}

void bdrv_op_block(BlockNode *bs, BdrvOpType op, const void *owner,
                   const char *reason)
{
    Blocker *b = g_new0(Blocker, 1);
    GList *list;

    b->op = op;
    b->owner = owner;
    b->reason = g_strdup(reason);
    g_mutex_lock(&blockers_lock);
    if (!blockers)
        blockers = g_hash_table_new(g_direct_hash, g_direct_equal);
    list = g_hash_table_lookup(blockers, bs);
    g_hash_table_insert(blockers, bs, g_list_append(list, b));
    g_mutex_unlock(&blockers_lock);
}

void bdrv_op_unblock_all(BlockNode *bs, const void *owner)
{
    GList *list, *l, *next;

    g_mutex_lock(&blockers_lock);
    list = blockers ? g_hash_table_lookup(blockers, bs) : NULL;
    for (l = list; l; l = next) {
        Blocker *b = l->data;
        next = l->next;
        if (b->owner == owner) {
            blocker_free(b);
            list = g_list_delete_link(list, l);
        }
    }
    if (list)
        g_hash_table_insert(blockers, bs, list);
    else if (blockers)
        g_hash_table_remove(blockers, bs);
    g_mutex_unlock(&blockers_lock);
}

bool bdrv_op_is_blocked(BlockNode *bs, BdrvOpType op, GError **errp)
{
    g_autofree char *reason = NULL;

    g_mutex_lock(&blockers_lock);
    for (GList *l = blockers ? g_hash_table_lookup(blockers, bs) : NULL;
         l && !reason; l = l->next) {
        Blocker *b = l->data;
        if (b->op == op)
            reason = g_strdup(b->reason);
    }
    g_mutex_unlock(&blockers_lock);
    if (reason)
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_BUSY, "Node '%s' is busy: %s",
                    bdrv_node_name(bs), reason);
    return reason != NULL;
}
