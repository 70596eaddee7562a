/*
 * qcow2-cache.c - a small LRU cache of L2 tables, shared by all threads.
 *
 * Design notes.
 *
 * Lookups are a hash table (host offset -> table) and the LRU order a
 * queue, both O(1), so a cache of thousands of tiny (512-byte) tables stays
 * cheap.  One mutex guards both; it is never held across I/O: on a miss the
 * table is read unlocked, then inserted unless another thread won the race
 * (its copy is used, ours dropped).
 *
 * Tables are reference counted.  The cache holds one reference, every user
 * one more, so eviction never frees a table another thread is scanning.
 * Tables are read-only for now (no write path), so there is nothing to
 * flush; the write session will add dirty tracking here.
 */
#include "qcow2.h"

#include <errno.h>
#include <stdlib.h>

struct Qcow2Cache {
    BlockNode *file;      /* where tables are read from */
    uint32_t table_size;  /* bytes per table (the cluster size) */
    size_t max_tables;    /* capacity, at least 1 */
    GMutex lock;          /* guards map and lru */
    GHashTable *map;      /* uint64_t * offset -> Qcow2Table *, owns ref */
    GQueue lru;           /* of Qcow2Table, most recent at the head */
};

Qcow2Cache *qcow2_cache_new(BlockNode *file, uint32_t table_size,
                            size_t max_tables)
{
    Qcow2Cache *c = g_new0(Qcow2Cache, 1);

    c->file = file;
    c->table_size = table_size;
    c->max_tables = MAX(max_tables, 1);
    g_mutex_init(&c->lock);
    c->map = g_hash_table_new(g_int64_hash, g_int64_equal);
    g_queue_init(&c->lru);
    return c;
}

void qcow2_table_put(Qcow2Table *t)
{
    if (t && g_atomic_int_dec_and_test(&t->refs)) {
        free(t->entries);
        g_free(t);
    }
}

void qcow2_cache_free(Qcow2Cache *c)
{
    GList *l;

    if (!c)
        return;
    while ((l = g_queue_pop_head_link(&c->lru)))
        qcow2_table_put(l->data);
    g_hash_table_destroy(c->map);
    g_mutex_clear(&c->lock);
    g_free(c);
}

/* Called locked: the table, referenced and moved to the LRU head. */
static Qcow2Table *lookup_locked(Qcow2Cache *c, uint64_t offset)
{
    Qcow2Table *t = g_hash_table_lookup(c->map, &offset);

    if (t) {
        g_atomic_int_inc(&t->refs);
        g_queue_unlink(&c->lru, &t->lru_link);
        g_queue_push_head_link(&c->lru, &t->lru_link);
    }
    return t;
}

/* Called locked: drops least recently used tables to make room for one. */
static void evict_locked(Qcow2Cache *c)
{
    while (c->lru.length >= c->max_tables) {
        GList *l = g_queue_pop_tail_link(&c->lru);
        Qcow2Table *t = l->data;
        g_hash_table_remove(c->map, &t->offset);
        qcow2_table_put(t);
    }
}

static int read_table(Qcow2Cache *c, uint64_t offset, Qcow2Table **out)
{
    Qcow2Table *t = g_new0(Qcow2Table, 1);
    int ret;

    /* Aligned for the file node, so O_DIRECT reads need no bounce. */
    t->entries = bdrv_blockalign(c->file, c->table_size);
    if (!t->entries) {
        g_free(t);
        return -ENOMEM;
    }
    t->refs = 1;
    t->offset = offset;
    t->lru_link = (GList){ .data = t };
    ret = bdrv_pread(c->file, offset, c->table_size, t->entries);
    if (ret < 0) {
        qcow2_table_put(t);
        return ret;
    }
    *out = t;
    return 0;
}

int qcow2_cache_get(Qcow2Cache *c, uint64_t offset, Qcow2Table **out)
{
    Qcow2Table *t, *raced;
    int ret;

    g_mutex_lock(&c->lock);
    t = lookup_locked(c, offset);
    g_mutex_unlock(&c->lock);
    if (t) {
        *out = t;
        return 0;
    }
    ret = read_table(c, offset, &t);
    if (ret < 0)
        return ret;
    g_mutex_lock(&c->lock);
    raced = lookup_locked(c, offset);
    if (!raced) {
        evict_locked(c);
        g_atomic_int_inc(&t->refs); /* the cache's reference */
        g_hash_table_insert(c->map, &t->offset, t);
        g_queue_push_head_link(&c->lru, &t->lru_link);
    }
    g_mutex_unlock(&c->lock);
    if (raced) {
        qcow2_table_put(t);
        t = raced;
    }
    *out = t;
    return 0;
}
