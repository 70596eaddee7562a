/*
 * drain.c - drained sections: a node (or the whole graph) held still while
 * a transaction, a graph change or a job's completion runs.
 *
 * Design notes.
 *
 * Requests come from two kinds of users.  Exports, the nbdkit plugin and
 * the monitor call bdrv_* on whatever thread serves them; each such
 * outermost call is counted in its node's in_flight and, while the node is
 * quiesced, waits at the entry before it starts.  Calls nested inside a
 * request (a format reading its file, a copy-before-write notifier copying
 * to the target) are never held back: they belong to a request already
 * counted, which must finish for the section to begin.
 *
 * Jobs are the other kind: once a background copy has claimed a chunk, a
 * guest write may wait for that chunk, so the copy's own reads and writes
 * must never wait at an entry (that would deadlock the drain).  Their
 * threads are exempt (bdrv_set_thread_drain_exempt), and the job stops
 * itself instead: a job is a user edge with BdrvUserOps, whose
 * drained_begin asks it to park between copies and whose drained_poll says
 * whether it still runs I/O.
 *
 * Beginning a section on a node quiesces the node, every node above it
 * (whose requests reach it) and, for a job using any of those, the job's
 * other nodes too (its copy-before-write writes the target when the
 * source is written).  Then it waits until none of those nodes has a
 * counted request in flight and no job there is busy.  The thread that
 * opened a section is exempt while it holds one: it may do I/O on the
 * nodes it holds still.
 *
 * Two jobs that share a node may finish at once: each would wait in its
 * section for the other to park.  So a job thread takes job_sections_lock
 * for its outermost section, and one waiting for that lock counts as
 * parked (it issues no I/O while it waits).
 *
 * Lock order: job_sections_lock, then graph_lock, then whatever a job's
 * ops take (the job lock); drain_lock is a leaf.
 *
 * Why this cannot deadlock: the drainer waits only for requests already
 * past the entry and for jobs to reach a park point.  A request in flight
 * waits only for earlier tracked requests, copy-before-writes and the
 * copies they wait for (see docs/architecture.md); none of those waits at
 * an entry (nested or exempt), so all finish.  A job parks between copies,
 * after the ones in flight finish, and holds no chunk while parked.
 */
#include "block-int.h"

struct BdrvDrain {
    GPtrArray *nodes;     /* quiesced, referenced */
    GArray *user_ids;     /* edges whose drained_begin was called */
};

static GMutex drain_lock;
static GCond drain_cond;       /* a counted request left a quiesced node,
                                * or a section ended */
static GPtrArray *drain_users; /* user edges with ops; graph_lock */

/* One job thread at a time opens drained sections: two jobs that share a
 * node and finish together would otherwise each wait for the other to
 * park, and neither parks while it waits.  A job thread waiting for this
 * lock issues no I/O, so it counts as parked (bdrv_thread_waits_to_drain). */
static GMutex job_sections_lock;
static GHashTable *job_sections_waiters; /* GThread *; under drain_lock */
static __thread bool holds_job_sections;

static __thread int io_depth;        /* nested bdrv_* calls */
static __thread int drain_sections;  /* sections this thread holds */
static __thread bool drain_exempt;   /* a job's thread */
/* The node an outermost request followed a move to, referenced until the
 * request leaves it. */
static __thread BlockNode *followed;

void bdrv_set_thread_drain_exempt(bool exempt)
{
    drain_exempt = exempt;
}

bool bdrv_io_outermost(void)
{
    return io_depth == 0;
}

static void wake_drainers(void)
{
    g_mutex_lock(&drain_lock);
    g_cond_broadcast(&drain_cond);
    g_mutex_unlock(&drain_lock);
}

static void leave_counted(BlockNode *bs)
{
    if (g_atomic_int_dec_and_test(&bs->in_flight) &&
        g_atomic_int_get(&bs->quiesce_counter) > 0)
        wake_drainers();
}

bool bdrv_io_enter(BlockNode **pbs)
{
    BlockNode *bs = *pbs;

    if (io_depth++ > 0 || drain_sections > 0 || drain_exempt)
        return false;
    for (;;) {
        unsigned gen;
        /* Counted first, then checked: a drainer quiesces first, then
         * reads in_flight, so one of the two sees the other. */
        g_atomic_int_inc(&bs->in_flight);
        if (g_atomic_int_get(&bs->quiesce_counter) == 0)
            return true;
        leave_counted(bs);
        gen = __atomic_load_n(&bs->replace_gen, __ATOMIC_ACQUIRE);
        g_mutex_lock(&drain_lock);
        while (g_atomic_int_get(&bs->quiesce_counter) > 0)
            g_cond_wait(&drain_cond, &drain_lock);
        g_mutex_unlock(&drain_lock);
        /* The section moved the node's users elsewhere (a live snapshot):
         * a request held back meanwhile goes where its user went. */
        if (__atomic_load_n(&bs->replace_gen, __ATOMIC_ACQUIRE) != gen) {
            BlockNode *to = bdrv_ref_replacement(bs);
            if (to) { /* else the users came back here */
                bdrv_unref(followed);
                followed = to;
                *pbs = bs = to;
            }
        }
    }
}

void bdrv_io_leave(BlockNode *bs, bool counted)
{
    io_depth--;
    if (counted)
        leave_counted(bs);
    if (io_depth == 0 && followed)
        g_clear_pointer(&followed, bdrv_unref);
}

/* --- users that drain themselves (jobs) ---------------------------------- */

void bdrv_drain_user_linked_locked(BlockChild *c)
{
    if (!c->ops)
        return;
    if (!drain_users)
        drain_users = g_ptr_array_new();
    g_ptr_array_add(drain_users, c);
}

/* A user going away in a section: it is released from the section now. */
void bdrv_drain_user_unlinked_locked(BlockChild *c)
{
    if (!c->ops)
        return;
    for (; c->drained > 0; c->drained--)
        if (c->ops->drained_end)
            c->ops->drained_end(c->opaque);
    g_ptr_array_remove(drain_users, c);
}

/* --- which nodes a section holds still ------------------------------------ */

static void collect(BlockNode *bs, GPtrArray *nodes);

/* A job's other nodes: its copy-before-write reaches its target. */
static void collect_user_siblings(BlockChild *user, GPtrArray *nodes)
{
    for (guint i = 0; drain_users && i < drain_users->len; i++) {
        BlockChild *c = g_ptr_array_index(drain_users, i);
        if (c->opaque == user->opaque)
            collect(c->node, nodes);
    }
}

/* Takes a reference unless @bs is already on its way out (its last one is
 * gone while it still sits in a table or a parent list). */

static void collect(BlockNode *bs, GPtrArray *nodes)
{
    if (g_ptr_array_find(nodes, bs, NULL) || !bdrv_ref_if_alive(bs))
        return;
    g_ptr_array_add(nodes, bs);
    for (guint i = 0; i < bs->parents->len; i++) {
        BlockChild *p = g_ptr_array_index(bs->parents, i);
        if (p->parent)
            collect(p->parent, nodes);
        else if (p->ops)
            collect_user_siblings(p, nodes);
    }
}

static void add_node(BlockNode *bs, void *opaque)
{
    if (bdrv_ref_if_alive(bs))
        g_ptr_array_add(opaque, bs);
}

static bool in_set(BdrvDrain *d, BlockNode *bs)
{
    return g_ptr_array_find(d->nodes, bs, NULL);
}

/* Under graph_lock: quiesce the nodes, tell their self-draining users. */
static void quiesce_locked(BdrvDrain *d)
{
    for (guint i = 0; i < d->nodes->len; i++) {
        BlockNode *bs = g_ptr_array_index(d->nodes, i);
        g_atomic_int_inc(&bs->quiesce_counter);
    }
    for (guint i = 0; drain_users && i < drain_users->len; i++) {
        BlockChild *c = g_ptr_array_index(drain_users, i);
        if (!in_set(d, c->node))
            continue;
        c->drained++;
        g_array_append_val(d->user_ids, c->id);
        if (c->ops->drained_begin)
            c->ops->drained_begin(c->opaque);
    }
}

static bool busy(BdrvDrain *d)
{
    bool b = false;

    for (guint i = 0; i < d->nodes->len && !b; i++) {
        BlockNode *bs = g_ptr_array_index(d->nodes, i);
        b = g_atomic_int_get(&bs->in_flight) > 0;
    }
    bdrv_graph_lock();
    for (guint i = 0; drain_users && i < drain_users->len && !b; i++) {
        BlockChild *c = g_ptr_array_index(drain_users, i);
        b = c->drained > 0 && in_set(d, c->node) && c->ops->drained_poll &&
            c->ops->drained_poll(c->opaque);
    }
    bdrv_graph_unlock();
    return b;
}

static void set_waiting(bool waiting)
{
    g_mutex_lock(&drain_lock);
    if (!job_sections_waiters)
        job_sections_waiters = g_hash_table_new(NULL, NULL);
    if (waiting)
        g_hash_table_add(job_sections_waiters, g_thread_self());
    else
        g_hash_table_remove(job_sections_waiters, g_thread_self());
    g_mutex_unlock(&drain_lock);
}

/* Before graph_lock: a job thread's outermost section takes its turn. */
static void job_sections_enter(void)
{
    if (!drain_exempt || holds_job_sections)
        return;
    set_waiting(true);
    g_mutex_lock(&job_sections_lock);
    set_waiting(false);
    holds_job_sections = true;
}

static void job_sections_leave(void)
{
    if (holds_job_sections && drain_sections == 0) {
        holds_job_sections = false;
        g_mutex_unlock(&job_sections_lock);
    }
}

bool bdrv_thread_waits_to_drain(GThread *thread)
{
    bool waits;

    g_mutex_lock(&drain_lock);
    waits = job_sections_waiters &&
            g_hash_table_contains(job_sections_waiters, thread);
    g_mutex_unlock(&drain_lock);
    return waits;
}

static BdrvDrain *begin(BdrvDrain *d)
{
    quiesce_locked(d);
    bdrv_graph_unlock();
    drain_sections++;
    /* A wake-up missed between the look and the wait costs 1 ms at most:
     * busy() takes graph_lock, which must not nest inside drain_lock. */
    while (busy(d)) {
        g_mutex_lock(&drain_lock);
        g_cond_wait_until(&drain_cond, &drain_lock,
                          g_get_monotonic_time() + 1000);
        g_mutex_unlock(&drain_lock);
    }
    return d;
}

static BdrvDrain *drain_new(void)
{
    BdrvDrain *d = g_new0(BdrvDrain, 1);

    d->nodes = g_ptr_array_new();
    d->user_ids = g_array_new(FALSE, FALSE, sizeof(uint64_t));
    return d;
}

BdrvDrain *bdrv_drained_begin(BlockNode *bs)
{
    BdrvDrain *d = drain_new();

    job_sections_enter();
    bdrv_graph_lock();
    collect(bs, d->nodes);
    return begin(d);
}

BdrvDrain *bdrv_drain_all_begin(void)
{
    BdrvDrain *d = drain_new();

    job_sections_enter();
    bdrv_foreach_node(add_node, d->nodes);
    bdrv_graph_lock();
    return begin(d);
}

static bool ended_user(BdrvDrain *d, uint64_t id)
{
    for (guint i = 0; i < d->user_ids->len; i++) {
        if (g_array_index(d->user_ids, uint64_t, i) == id) {
            g_array_remove_index_fast(d->user_ids, i);
            return true;
        }
    }
    return false;
}

void bdrv_drained_end(BdrvDrain *d)
{
    bdrv_graph_lock();
    for (guint i = 0; drain_users && i < drain_users->len; i++) {
        BlockChild *c = g_ptr_array_index(drain_users, i);
        while (c->drained > 0 && ended_user(d, c->id)) {
            c->drained--;
            if (c->ops->drained_end)
                c->ops->drained_end(c->opaque);
        }
    }
    for (guint i = 0; i < d->nodes->len; i++) {
        BlockNode *bs = g_ptr_array_index(d->nodes, i);
        g_atomic_int_add(&bs->quiesce_counter, -1);
    }
    bdrv_graph_unlock();
    drain_sections--;
    job_sections_leave();
    wake_drainers();
    for (guint i = 0; i < d->nodes->len; i++)
        bdrv_unref(g_ptr_array_index(d->nodes, i));
    g_ptr_array_free(d->nodes, TRUE);
    g_array_free(d->user_ids, TRUE);
    g_free(d);
}
