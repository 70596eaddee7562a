/*
 * perm.c - who may do what to a node: edges, permissions and their
 * conflicts (QEMU's BdrvChild permission model).
 *
 * Design notes.
 *
 * Every reference that uses a node is an edge (BlockChild): a child link
 * from a parent node ("file", "backing"), or a user outside the graph (an
 * export, a job, the nbdkit plugin).  An edge takes some permissions
 * (perm) and tolerates others taking some (shared).  Two edges into one
 * node conflict when one takes what the other does not share; attaching an
 * edge, or changing its permissions, is refused then, with QEMU's
 * sentence naming both holders.
 *
 * A node's own needs on its children follow from what its parents take
 * and share (the cumulative permissions), through the driver's child_perm:
 * a filter (raw) passes them through, a format (qcow2) adds write and
 * resize on its file when writable and shares neither (its metadata would
 * break), a backing link takes at most consistent read.  So one change at
 * the top is re-derived down the whole subgraph (refresh_node), and the
 * file driver turns its cumulative permissions into QEMU's OFD lock bytes,
 * so that nodes of one process conflict exactly as two processes would.
 *
 * A change is applied, then re-derived; when a node below refuses (a
 * conflict, a lock another process holds), the change is put back and
 * derived again, which gives back the state before it.  graph_lock guards
 * every node's parent list and the permissions of every edge; it is held
 * across a whole change, drivers' set_perm included (a few fcntl calls),
 * and never across I/O or a node's release.
 */
#include "block-int.h"

#include <string.h>

static GMutex graph_lock;
static uint64_t next_edge_id; /* guarded by graph_lock */

#define PERM_PASSTHROUGH (BDRV_PERM_CONSISTENT_READ | BDRV_PERM_WRITE | \
                          BDRV_PERM_WRITE_UNCHANGED | BDRV_PERM_RESIZE)
#define PERM_UNCHANGED (BDRV_PERM_ALL & ~PERM_PASSTHROUGH)

void bdrv_graph_lock(void) { g_mutex_lock(&graph_lock); }
void bdrv_graph_unlock(void) { g_mutex_unlock(&graph_lock); }

char *bdrv_perm_names(uint32_t perm)
{
    static const char *const names[] = {
        "consistent read", "write", "write unchanged", "resize", "graph mod",
    };
    GString *s = g_string_new(NULL);

    for (size_t i = 0; i < G_N_ELEMENTS(names); i++) {
        if (perm & (1u << i))
            g_string_append_printf(s, "%s%s", s->len ? ", " : "", names[i]);
    }
    return g_string_free(s, FALSE);
}

/* --- what a node needs from its children -------------------------------- */

void bdrv_child_perm_filtered(BlockNode *bs, const char *name, uint32_t perm,
                              uint32_t shared, uint32_t *nperm,
                              uint32_t *nshared)
{
    *nperm = perm & PERM_PASSTHROUGH;
    *nshared = (shared & PERM_PASSTHROUGH) | PERM_UNCHANGED;
}

void bdrv_child_perm_storage(BlockNode *bs, const char *name, uint32_t perm,
                             uint32_t shared, uint32_t *nperm,
                             uint32_t *nshared)
{
    bdrv_child_perm_filtered(bs, name, perm, shared, nperm, nshared);
    /* Metadata may change even when nobody writes guest data, and must
     * stay consistent: nobody else may write or resize the file. */
    if (!bs->read_only)
        *nperm |= BDRV_PERM_WRITE | BDRV_PERM_RESIZE;
    *nperm |= BDRV_PERM_CONSISTENT_READ;
    *nshared &= ~(BDRV_PERM_WRITE | BDRV_PERM_RESIZE);
}

void bdrv_child_perm_cow(BlockNode *bs, const char *name, uint32_t perm,
                         uint32_t shared, uint32_t *nperm, uint32_t *nshared)
{
    /* A backing file is only read; if the parents put up with changing
     * data (a fleecing overlay of a live disk), so may it change. */
    *nperm = perm & BDRV_PERM_CONSISTENT_READ;
    *nshared = (shared & BDRV_PERM_WRITE)
                   ? BDRV_PERM_WRITE | BDRV_PERM_RESIZE
                   : 0;
    *nshared |= BDRV_PERM_CONSISTENT_READ | BDRV_PERM_GRAPH_MOD |
                BDRV_PERM_WRITE_UNCHANGED;
}

static void child_perm(BlockNode *bs, BlockChild *c, uint32_t perm,
                       uint32_t shared, uint32_t *nperm, uint32_t *nshared)
{
    if (bs->drv->child_perm)
        bs->drv->child_perm(bs, c->name, perm, shared, nperm, nshared);
    else if (strcmp(c->name, "backing") == 0)
        bdrv_child_perm_cow(bs, c->name, perm, shared, nperm, nshared);
    else
        bdrv_child_perm_storage(bs, c->name, perm, shared, nperm, nshared);
    if (c->node->force_share)
        *nshared = BDRV_PERM_ALL;
}

/* --- conflicts ------------------------------------------------------------ */

static char *edge_user(BlockChild *c)
{
    if (c->parent)
        return g_strdup_printf("node '%s'", c->parent->node_name);
    return g_strdup(c->holder);
}

/* May @b take what it takes beside @a?  Else says why, as QEMU does. */
static bool a_allows_b(BlockChild *a, BlockChild *b, GError **errp)
{
    g_autofree char *a_user = NULL, *b_user = NULL, *perms = NULL;
    const char *node = b->node->node_name;

    if ((b->perm & a->shared) == b->perm)
        return true;
    if (a->chain && b->parent && strcmp(b->name, "backing") == 0 &&
        g_ptr_array_find(a->chain, b->parent, NULL))
        return true;
    a_user = edge_user(a);
    b_user = edge_user(b);
    perms = bdrv_perm_names(b->perm & ~a->shared);
    g_set_error(errp, BDRV_ERROR, BDRV_ERROR_BUSY,
                "Permission conflict on node '%s': permissions '%s' are both "
                "required by %s (uses node '%s' as '%s' child) and unshared "
                "by %s (uses node '%s' as '%s' child).",
                node, perms, b_user, node, b->name, a_user, node, a->name);
    return false;
}

static bool parents_agree(BlockNode *bs, uint32_t *perm, uint32_t *shared,
                          GError **errp)
{
    *perm = 0;
    *shared = BDRV_PERM_ALL;
    /* The newest edge first, so that a new user is named as the one that
     * does not share, as QEMU words it. */
    for (guint i = bs->parents->len; i-- > 0;) {
        BlockChild *a = g_ptr_array_index(bs->parents, i);
        for (guint j = 0; j < bs->parents->len; j++) {
            BlockChild *b = g_ptr_array_index(bs->parents, j);
            if (a != b && !a_allows_b(a, b, errp))
                return false;
        }
        *perm |= a->perm;
        *shared &= a->shared;
    }
    return true;
}

/* Derives @bs's permissions from its parents, checks them, and passes them
 * down to its children.  Under graph_lock. */
static bool refresh_node(BlockNode *bs, GError **errp)
{
    uint32_t perm, shared;

    if (!parents_agree(bs, &perm, &shared, errp))
        return false;
    if ((perm & BDRV_PERM_WRITE) && bs->read_only) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_READ_ONLY,
                    "Block node '%s' is read-only", bs->node_name);
        return false;
    }
    if (bs->drv->set_perm && !bs->drv->set_perm(bs, perm, shared, errp))
        return false;
    bs->cumulative_perm = perm;
    bs->cumulative_shared = shared;
    for (guint i = 0; i < bs->children->len; i++) {
        BlockChild *c = g_ptr_array_index(bs->children, i);
        uint32_t np, ns;
        child_perm(bs, c, perm, shared, &np, &ns);
        if (np == c->perm && ns == c->shared)
            continue;
        c->perm = np;
        c->shared = ns;
        if (!refresh_node(c->node, errp))
            return false;
    }
    return true;
}

/* After a failed change is undone: back to the state before it, which
 * held, so this cannot fail short of another process grabbing a lock in
 * between (then the old locks are simply not all retaken). */
static void refresh_undo(BlockNode *bs)
{
    g_autoptr(GError) ignored = NULL;

    refresh_node(bs, &ignored);
}

/* --- edges ------------------------------------------------------------- */

static BlockChild *edge_new(BlockNode *child, const char *name)
{
    BlockChild *c = g_new0(BlockChild, 1);

    c->name = g_strdup(name);
    c->node = child;
    c->shared = BDRV_PERM_ALL;
    return c;
}

static void edge_free(BlockChild *c)
{
    if (c->chain)
        g_ptr_array_unref(c->chain);
    g_free(c->name);
    g_free(c->holder);
    g_free(c);
}

/* Adds @c to its node's parents with permissions @perm/@shared. */
static bool edge_link(BlockChild *c, uint32_t perm, uint32_t shared,
                      GError **errp)
{
    bool ok;

    bdrv_graph_lock();
    c->perm = perm;
    c->shared = shared;
    c->id = ++next_edge_id;
    g_ptr_array_add(c->node->parents, c);
    ok = refresh_node(c->node, errp);
    if (!ok) {
        g_ptr_array_remove(c->node->parents, c);
        refresh_undo(c->node);
    }
    if (ok)
        bdrv_drain_user_linked_locked(c);
    bdrv_graph_unlock();
    return ok;
}

static void edge_unlink(BlockChild *c)
{
    bdrv_graph_lock();
    bdrv_drain_user_unlinked_locked(c);
    g_ptr_array_remove(c->node->parents, c);
    refresh_undo(c->node);
    bdrv_graph_unlock();
}

bool bdrv_child_attach(BlockNode *parent, BlockNode *child, const char *name,
                       GError **errp)
{
    BlockChild *c = edge_new(child, name);
    uint32_t perm, shared;

    c->parent = parent;
    bdrv_graph_lock();
    child_perm(parent, c, parent->cumulative_perm, parent->cumulative_shared,
               &perm, &shared);
    bdrv_graph_unlock();
    if (!edge_link(c, perm, shared, errp)) {
        edge_free(c);
        return false;
    }
    g_ptr_array_add(parent->children, c);
    return true;
}

void bdrv_children_detach_all(BlockNode *bs)
{
    for (guint i = 0; i < bs->children->len; i++) {
        BlockChild *c = g_ptr_array_index(bs->children, i);
        edge_unlink(c);
        bdrv_unref(c->node);
        edge_free(c);
    }
    g_ptr_array_set_size(bs->children, 0);
}

BlockChild *bdrv_user_attach(BlockNode *bs, const char *holder,
                             const char *role, uint32_t perm, uint32_t shared,
                             const BdrvUserOps *ops, void *opaque,
                             GError **errp)
{
    BlockChild *c = edge_new(bs, role);

    c->holder = g_strdup(holder);
    c->ops = ops;
    c->opaque = opaque;
    if (!edge_link(c, perm, shared, errp)) {
        edge_free(c);
        return NULL;
    }
    bdrv_ref(bs);
    return c;
}

BlockChild *bdrv_user_attach_layer(BlockNode *bs, const char *holder,
                                   uint32_t shared, GPtrArray *chain,
                                   GError **errp)
{
    BlockChild *c = edge_new(bs, "intermediate node");

    c->holder = g_strdup(holder);
    c->chain = g_ptr_array_ref(chain);
    if (!edge_link(c, 0, shared, errp)) {
        edge_free(c);
        return NULL;
    }
    bdrv_ref(bs);
    return c;
}

void bdrv_user_detach(BlockChild *c)
{
    BlockNode *bs;

    if (!c)
        return;
    bs = c->node;
    edge_unlink(c);
    edge_free(c);
    bdrv_unref(bs);
}

bool bdrv_user_set_perm(BlockChild *c, uint32_t perm, uint32_t shared,
                        GError **errp)
{
    uint32_t old_perm, old_shared;
    bool ok;

    bdrv_graph_lock();
    old_perm = c->perm;
    old_shared = c->shared;
    c->perm = perm;
    c->shared = shared;
    ok = refresh_node(c->node, errp);
    if (!ok) {
        c->perm = old_perm;
        c->shared = old_shared;
        refresh_undo(c->node);
    }
    bdrv_graph_unlock();
    return ok;
}

BlockNode *bdrv_user_node(BlockChild *c)
{
    /* bdrv_replace_node moves users while their requests are drained. */
    return __atomic_load_n(&c->node, __ATOMIC_ACQUIRE);
}

/* Threads between reading an edge's node and referencing it: a node's
 * memory is freed only once none is (bdrv_wait_node_readers), so the
 * reference is taken on live memory, or fails and the edge, which has
 * moved on by then, is read again. */
static gint node_readers;

BlockNode *bdrv_user_node_ref(BlockChild *c)
{
    BlockNode *bs;

    g_atomic_int_inc(&node_readers);
    do
        bs = __atomic_load_n(&c->node, __ATOMIC_ACQUIRE);
    while (!bdrv_ref_if_alive(bs));
    g_atomic_int_add(&node_readers, -1);
    return bs;
}

void bdrv_wait_node_readers(void)
{
    while (g_atomic_int_get(&node_readers) > 0)
        g_thread_yield();
}

/* --- questions about the graph ------------------------------------------- */

char *bdrv_find_writer(BlockNode *bs, BlockChild *except)
{
    char *who = NULL;

    bdrv_graph_lock();
    for (guint i = 0; i < bs->parents->len && !who; i++) {
        BlockChild *c = g_ptr_array_index(bs->parents, i);
        if (c != except && (c->perm & BDRV_PERM_WRITE))
            who = edge_user(c);
    }
    bdrv_graph_unlock();
    return who;
}

char *bdrv_find_user(BlockNode *bs, const char *role)
{
    char *who = NULL;

    bdrv_graph_lock();
    for (guint i = 0; i < bs->parents->len && !who; i++) {
        BlockChild *c = g_ptr_array_index(bs->parents, i);
        if (!c->parent && (!role || strcmp(c->name, role) == 0))
            who = g_strdup(c->holder);
    }
    bdrv_graph_unlock();
    return who;
}

char *bdrv_find_parent_by_link(BlockNode *bs, const char *link)
{
    char *parent = NULL;

    bdrv_graph_lock();
    for (guint i = 0; i < bs->parents->len && !parent; i++) {
        BlockChild *c = g_ptr_array_index(bs->parents, i);
        if (c->parent && strcmp(c->name, link) == 0)
            parent = g_strdup(c->parent->node_name);
    }
    bdrv_graph_unlock();
    return parent;
}

bool bdrv_reaches(BlockNode *from, BlockNode *to, bool through_backing)
{
    if (from == to)
        return true;
    for (guint i = 0; i < from->children->len; i++) {
        BlockChild *c = g_ptr_array_index(from->children, i);
        if (!through_backing && strcmp(c->name, "backing") == 0)
            continue;
        if (bdrv_reaches(c->node, to, through_backing))
            return true;
    }
    return false;
}

/* A node both reach through data links (not backing), or NULL. */
BlockNode *bdrv_common_storage(BlockNode *a, BlockNode *b)
{
    if (bdrv_reaches(b, a, false))
        return a;
    for (guint i = 0; i < a->children->len; i++) {
        BlockChild *c = g_ptr_array_index(a->children, i);
        BlockNode *common;
        if (strcmp(c->name, "backing") == 0)
            continue;
        if ((common = bdrv_common_storage(c->node, b)))
            return common;
    }
    return NULL;
}

/* --- graph changes ---------------------------------------------------- */

/* A new "backing" link from @bs to @backing, published to the driver;
 * refused if it would make a loop. */
static bool attach_backing(BlockNode *bs, BlockNode *backing, GError **errp)
{
    if (bdrv_reaches(backing, bs, true)) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "Making '%s' a backing file of '%s' would create a loop",
                    backing->node_name, bs->node_name);
        return false;
    }
    bdrv_ref(backing);
    if (!bdrv_child_attach(bs, backing, "backing", errp)) {
        bdrv_unref(backing);
        return false;
    }
    bs->drv->set_backing(bs, backing);
    return true;
}

bool bdrv_set_backing(BlockNode *bs, BlockNode *backing, GError **errp)
{
    if (!bs->drv->set_backing) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_NOT_SUPPORTED,
                    "The overlay does not support backing images");
        return false;
    }
    if (bdrv_child(bs, "backing")) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_INVALID_ARGUMENT,
                    "The overlay already has a backing image");
        return false;
    }
    return attach_backing(bs, backing, errp);
}

/* The index of @bs's backing link in its children, or -1. */
static int backing_index(BlockNode *bs)
{
    for (guint i = 0; i < bs->children->len; i++) {
        BlockChild *c = g_ptr_array_index(bs->children, i);
        if (strcmp(c->name, "backing") == 0)
            return (int)i;
    }
    return -1;
}

static void drop_child_at(BlockNode *bs, guint index)
{
    BlockChild *c = g_ptr_array_index(bs->children, index);

    g_ptr_array_remove_index(bs->children, index);
    edge_unlink(c);
    bdrv_unref(c->node);
    edge_free(c);
}

bool bdrv_replace_backing(BlockNode *bs, BlockNode *backing, GError **errp)
{
    int old = backing_index(bs);

    if (old < 0)
        return !backing || bdrv_set_backing(bs, backing, errp);
    if (!backing) {
        bdrv_clear_backing(bs);
        return true;
    }
    /* The new link first: reads never find the node without a backing. */
    if (!attach_backing(bs, backing, errp))
        return false;
    drop_child_at(bs, (guint)old);
    return true;
}

bool bdrv_clear_backing(BlockNode *bs)
{
    int index = backing_index(bs);

    if (index < 0)
        return false;
    bs->drv->set_backing(bs, NULL);
    drop_child_at(bs, (guint)index);
    return true;
}

/* Moves the user edges of @from to @to (or back): under graph_lock. */
static void move_users_locked(BlockNode *from, BlockNode *to, GPtrArray *moved)
{
    for (guint i = 0; i < from->parents->len;) {
        BlockChild *c = g_ptr_array_index(from->parents, i);
        if (c->parent) {
            i++;
            continue;
        }
        g_ptr_array_remove_index(from->parents, i);
        g_ptr_array_add(to->parents, c);
        __atomic_store_n(&c->node, to, __ATOMIC_RELEASE);
        g_ptr_array_add(moved, c);
    }
}

static BlockChild *node_parent_except(BlockNode *from, BlockNode *to)
{
    for (guint i = 0; i < from->parents->len; i++) {
        BlockChild *c = g_ptr_array_index(from->parents, i);
        if (c->parent && c->parent != to)
            return c;
    }
    return NULL;
}

/* replaced_by is read and written under replace_lock, a leaf lock: a
 * node being freed is cleared from every replaced_by that names it before
 * its memory goes, so a reader either finds NULL or a node it can try to
 * reference. */
static GMutex replace_lock;

/* Where @bs's users went, referenced, or NULL (none, or that node is
 * being freed). */
BlockNode *bdrv_ref_replacement(BlockNode *bs)
{
    BlockNode *to;

    g_mutex_lock(&replace_lock);
    to = bs->replaced_by;
    if (to && !bdrv_ref_if_alive(to))
        to = NULL;
    g_mutex_unlock(&replace_lock);
    return to;
}

static void forget_one(BlockNode *bs, void *dying)
{
    g_mutex_lock(&replace_lock);
    if (bs->replaced_by == dying)
        __atomic_store_n(&bs->replaced_by, NULL, __ATOMIC_RELEASE);
    g_mutex_unlock(&replace_lock);
}

void bdrv_forget_replacement(BlockNode *dying)
{
    bdrv_foreach_node(forget_one, dying);
}

bool bdrv_replace_node(BlockNode *from, BlockNode *to, GError **errp)
{
    g_autoptr(GPtrArray) moved = g_ptr_array_new();
    BlockChild *held;
    bool ok;

    bdrv_graph_lock();
    held = node_parent_except(from, to);
    if (held) {
        g_set_error(errp, BDRV_ERROR, BDRV_ERROR_BUSY,
                    "Cannot replace node '%s': node '%s' uses it as its "
                    "'%s' child", from->node_name, held->parent->node_name,
                    held->name);
        bdrv_graph_unlock();
        return false;
    }
    move_users_locked(from, to, moved);
    ok = refresh_node(to, errp);
    if (ok) {
        refresh_undo(from); /* it lost users: it can only take less */
        g_mutex_lock(&replace_lock);
        __atomic_store_n(&from->replaced_by, to, __ATOMIC_RELEASE);
        g_mutex_unlock(&replace_lock);
        __atomic_add_fetch(&from->replace_gen, 1, __ATOMIC_RELEASE);
    } else {
        for (guint i = 0; i < moved->len; i++) {
            BlockChild *c = g_ptr_array_index(moved, i);
            g_ptr_array_remove(to->parents, c);
            g_ptr_array_add(from->parents, c);
            __atomic_store_n(&c->node, from, __ATOMIC_RELEASE);
        }
        refresh_undo(to);
        refresh_undo(from);
        g_ptr_array_set_size(moved, 0);
    }
    bdrv_graph_unlock();
    /* Each moved user holds a reference on its new node, not the old. */
    for (guint i = 0; i < moved->len; i++) {
        bdrv_ref(to);
        bdrv_unref(from);
    }
    return ok;
}

void bdrv_set_read_only(BlockNode *bs)
{
    bdrv_graph_lock();
    bs->read_only = true;
    refresh_undo(bs); /* a writable format gives back write on its file */
    bdrv_graph_unlock();
}

/* Bottom up: a format can only start writing on a writable file. */
bool bdrv_reopen_writable(BlockNode *bs, GError **errp)
{
    bool ok;

    if (!bs->read_only)
        return true;
    for (guint i = 0; i < bs->children->len; i++) {
        BlockChild *c = g_ptr_array_index(bs->children, i);
        if (strcmp(c->name, "backing") != 0 &&
            !bdrv_reopen_writable(c->node, errp))
            return false;
    }
    if (bs->drv->reopen_writable && bs->drv->reopen_writable(bs, errp) < 0)
        return false;
    bdrv_graph_lock();
    bs->read_only = false;
    ok = refresh_node(bs, errp);
    if (!ok) {
        bs->read_only = true;
        refresh_undo(bs);
    }
    bdrv_graph_unlock();
    return ok;
}
